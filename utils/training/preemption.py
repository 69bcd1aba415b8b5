"""Preemption: SIGTERM and SIGUSR1 end a training run at the next optimizer step, with a checkpoint.

A cluster warns a job before it kills it (SLURM: SIGTERM, then SIGKILL after its KillWait; or the
signal a job asks for with --signal). The handler only records the signal; the training loop asks
`agreed()` after every optimizer step, writes a checkpoint of exactly that step and exits with
EXIT_STATUS (docs/PREEMPTION.md). Under torchrun a signal may reach one rank only (a user's kill of
one process, a launcher that signals one rank), so the ranks agree on it with an all-reduce of the
signal number: all stop at the same step, or none does. That all-reduce runs over gloo in the
background while the next step computes, so it costs no step any time; the price is that the run
stops one step later than it could.
"""
import signal
import threading

import torch
import torch.distributed as tdist

from utils import dist

# 128 + the signal number: what a shell reports for a process that a signal ended, so an executor
# (scripts/slurm_array.sh) reads "stopped by SIGUSR1/SIGTERM" whether or not the run was far enough
# to catch it; the checkpoint tells it that nothing but the current step's remainder was lost.
EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGUSR1: 138}


class StopSignals:
    """Catches SIGTERM and SIGUSR1 from construction until close()."""

    def __init__(self):
        self.received = 0
        self._previous = {}
        if threading.current_thread() is threading.main_thread():   # signal.signal works there only
            for sig in EXIT_STATUS:
                self._previous[sig] = signal.signal(sig, self._catch)
        # the flag travels over its own gloo group, on the CPU: on NCCL an all-reduce would make every
        # step wait for the GPU, and on gloo it stays apart from DDP's gradient all-reduces
        self._group = tdist.new_group(backend="gloo") if dist.is_distributed() else None
        self._pending = None   # (work, flag) of the all-reduce started after the previous step

    def _catch(self, signum, frame):
        self.received = self.received or signum   # the first signal decides the exit status

    def agreed(self, now=False):
        """The signal that any rank received (0 if none). A collective: every rank calls it at the same
        points. After a step (now=False) the answer is the one started after the step before, whose
        all-reduce ran while this step computed; now=True also waits for the state of this moment."""
        if not dist.is_distributed():
            return self.received
        result = self._finish_pending()
        flag = torch.tensor([self.received], dtype=torch.int64)
        work = tdist.all_reduce(flag, op=tdist.ReduceOp.MAX, group=self._group, async_op=True)
        if now:
            work.wait()
            return max(result, int(flag.item()))
        self._pending = (work, flag)
        return result

    def _finish_pending(self):
        if self._pending is None:
            return 0
        work, flag = self._pending
        self._pending = None
        work.wait()
        return int(flag.item())

    def finish(self):
        """Complete the background all-reduce (before the process group is destroyed). The handlers stay:
        a run that stops on a signal ignores further ones (torchrun's SIGTERM to the ranks that have not
        exited yet) and exits with its own status."""
        self._finish_pending()

    def close(self):
        self._finish_pending()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
