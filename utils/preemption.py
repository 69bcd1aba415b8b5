"""Preemption: SIGTERM and SIGUSR1 end a training run at the next optimizer step, with a checkpoint.

A cluster warns a job before it kills it (SLURM: SIGTERM, then SIGKILL after its KillWait; or the
signal a job asks for with --signal). The handler only records the signal; the training loop asks
`agreed()` after every optimizer step, writes a checkpoint of exactly that step and exits with
EXIT_STATUS (docs/PREEMPTION.md). Under torchrun a signal may reach one rank only (a user's kill,
the OOM killer's warning), so the ranks agree on it with an all-reduce of the signal number after
every step: all stop at the same step, or none does.
"""
import signal
import threading

import torch
import torch.distributed as tdist

from . import dist

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
        # the flag is agreed over gloo on the CPU: an all-reduce on the GPU would make every step
        # wait for the GPU (.item()), which costs more than the tiny TCP message does
        self._group = None
        if dist.is_distributed() and tdist.get_backend() != "gloo":
            self._group = tdist.new_group(backend="gloo")

    def _catch(self, signum, frame):
        self.received = self.received or signum   # the first signal decides the exit status

    def agreed(self):
        """The signal that any rank received (0 if none). A collective: call it on every rank after
        the same step."""
        if not dist.is_distributed():
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
