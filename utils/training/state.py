"""A training run's state between two optimizer steps, and what its files hold.

The position of a run is (epoch, step): `epoch` epochs done, `step` optimizer steps into the next. With
it go the run's record (the history rows, the best evaluated accuracy, the seconds), the objects a
checkpoint holds (model, optimizer, scheduler, gradient scaler, every random stream, the dynamics
recorder, the dynamic sampler), and metrics.json's dict. The files themselves are written by the write
protocol's side (utils/protocol/epoch_end.py): at an epoch end in one call, on the background writer.
"""
import math
import time

import torch

from utils import dist
from utils.errors import OtherRank, exit_status
from utils.protocol.epoch_end import commit_epoch, record_completed, save_metrics
from utils.training.background import BackgroundWriter, HostCopy
from utils.training.data import FolderImages
from utils.training.rng import AUGMENT, ORDER, rng_state, set_rng_state, stream_seed
from utils.training.setup import make_scaler

PLOT_EVERY = 30.0   # seconds: curve.png is redrawn after an epoch at most this often, and after the last one


class RunState:
    """Everything `fit` carries from step to step. `schedule` = (iters_per_epoch, total_steps, n_epochs)
    (the first two None where epochs vary in length: InfoBatch)."""

    def __init__(self, args, model, optimizer, scheduler, device, schedule, *, run_info, fingerprint, log,
                 recorder=None, sampler=None, stop_epoch=None):
        self.wall_start = time.perf_counter()
        self.args, self.model, self.optimizer, self.scheduler = args, model, optimizer, scheduler
        self.run_info, self.fingerprint, self.log = run_info, fingerprint, log
        self.recorder, self.sampler = recorder, sampler
        self.iters_per_epoch, self.total_steps, self.n_epochs = schedule
        self.stop_at = min(self.n_epochs, stop_epoch or self.n_epochs)
        self.order_gen = torch.Generator().manual_seed(stream_seed(args.manualSeed, ORDER))           # data order
        self.aug_gen = torch.Generator(device=device).manual_seed(
            stream_seed(args.manualSeed, AUGMENT, dist.rank()))                                        # crops/flips
        self.scaler = make_scaler(args, device)                                # float16 only
        self.writer = recorder.writer if recorder is not None else BackgroundWriter()   # epoch ends, in order
        self.st = {"epoch": 0, "step": 0, "best_acc": 0.0, "history": [], "train_seconds": 0.0, "seconds": 0.0}
        self.last_plot = -math.inf   # when curve.png was drawn: ~0.3 s a plot, more than a short run's epoch
        self.signals = None          # the run's StopSignals, while it trains
        from utils.training.curve import plot_curves
        self.plot = plot_curves

    def restore(self, ck, data, resume_from):
        """Continue from the checkpoint dict `ck` (read from `resume_from`)."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"], self.order_gen, self.aug_gen, per_batch=not isinstance(data.train, FolderImages))
        if self.recorder is not None:
            self.recorder.load_state_dict(ck["recorder"])
        if self.sampler is not None:
            self.sampler.load_state_dict(ck["sampler"])
        st = self.st = {k: ck.get(k, v) for k, v in self.st.items()}   # checkpoints before (epoch, step) have no step
        at = f"epoch {st['epoch']}" + (f", step {st['step']}" if st["step"] else "")
        self.log(f"resumed from {resume_from} at {at} (best {st['best_acc']:.2f}%)")
        if dist.is_main_process():
            record_completed(self.args.save_path, st["epoch"])

    # ---------------------------------------------------------------------------------- where the run is
    def global_step(self):
        """Optimizer steps taken so far."""
        if self.iters_per_epoch:
            return self.st["epoch"] * self.iters_per_epoch + self.st["step"]
        return sum(row["steps"] for row in self.st["history"]) + self.st["step"]

    def evaluates(self, epoch):
        """Whether epoch `epoch` (0-based) is evaluated: every --eval_every-th epoch, and the last."""
        return (epoch + 1) % self.args.eval_every == 0 or epoch + 1 == self.n_epochs

    def metrics(self, done):
        """metrics.json's dict now; final_acc is the latest evaluated epoch's test accuracy."""
        st = self.st
        tested = [row for row in st["history"] if "test_acc" in row]
        return {**self.run_info, "best_acc": st["best_acc"], "final_acc": tested[-1]["test_acc"] if tested else None,
                "epochs": self.n_epochs, "steps": self.total_steps or self.global_step(),
                "completed_epochs": st["epoch"], "finished": done,
                "stopped": not done and st["epoch"] == self.stop_at, "train_seconds": st["train_seconds"],
                "seconds": st["seconds"] + time.perf_counter() - self.wall_start, "history": st["history"]}

    def checkpoint(self, epoch_start=None, sums=None):
        """The checkpoint's dict at (epoch, step), on rank 0 (None on the others; a collective: every rank
        calls it). In the middle of an epoch, `epoch_start` (rng_state's) and `sums`, this rank's
        statistics of the epoch so far."""
        st = self.st
        rng = rng_state(self.order_gen, self.aug_gen, epoch_start)
        partial = None if sums is None else dist.all_gather_objects(
            {k: v.cpu() if torch.is_tensor(v) else v for k, v in sums.items()})
        rec = self.recorder.state_dict(mid_epoch=sums is not None) if self.recorder is not None else {}
        samp = {"sampler": self.sampler.state_dict()} if self.sampler is not None else {}
        if not dist.is_main_process():
            return None
        return {**st, **samp, "history": list(st["history"]), "global_step": self.global_step(),
                "partial": partial, "seconds": st["seconds"] + time.perf_counter() - self.wall_start,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": rng, "recorder": rec, "run_info": self.run_info, "args": dict(vars(self.args)),
                "arch": self.args.arch, "fingerprint": self.fingerprint}

    # ---------------------------------------------------------------------------------- an epoch's end
    def end_epoch(self, epoch, row, ev):
        """Record epoch `epoch`: its `row` (training statistics) and `ev` (the test set's, or None when the
        epoch is not evaluated); log it; commit its files in the background (a collective)."""
        st = self.st
        row.update(ev if ev is not None else {"evaluated": False})
        st["history"].append(row)
        st["train_seconds"] += row["train_seconds"]
        is_best = ev is not None and ev["test_acc"] > st["best_acc"]
        if ev is not None:
            st["best_acc"] = max(st["best_acc"], ev["test_acc"])
        st["epoch"], st["step"] = epoch + 1, 0
        if dist.is_main_process():
            test = (f"test loss {ev['test_loss']:.4f} acc {ev['test_acc']:6.2f} (best {st['best_acc']:.2f})"
                    if ev is not None else f"not evaluated (--eval_every {self.args.eval_every})")
            self.log(f"epoch {epoch:3d}/{self.n_epochs} train loss {row['train_loss']:.4f} acc "
                     f"{row['train_acc']:6.2f} | {test} | {row['samples'] / row['train_seconds']:.0f} img/s")
        self.writes_done()                               # an earlier epoch's failed write ends the run
        state = self.checkpoint()
        draw = epoch + 1 == self.stop_at or time.perf_counter() - self.last_plot >= PLOT_EVERY
        if draw:
            self.last_plot = time.perf_counter()
        if state is not None:
            m = {**self.metrics(False), "history": list(st["history"])}
            info = self.run_info
            title = f"{info.get('dataset')} {self.args.arch} ({info.get('num_train_samples')} samples)"
            self.writer.submit(commit_epoch, self.args.save_path, HostCopy(state).get, m,   # best, plot:
                               {"epoch": epoch + 1, "arch": self.args.arch} if is_best else None,
                               (self.plot, title) if draw else None)

    def writes_done(self, wait=False):
        """Raise on every rank if rank 0's background writes failed (rank 0 raises the write's own error,
        e.g. the full disk's). `wait`: wait for them first. A collective where several processes run."""
        error = None
        if dist.is_main_process():
            try:
                self.writer.wait() if wait else self.writer.check()
            except Exception as e:
                error = e
        status = dist.broadcast_object(exit_status(error))   # rank 0's, so that every rank ends with it
        if status and error is None:
            raise OtherRank(status)   # process 0 says why, in one line; this one ends with its status, silently
        if error is not None:
            raise error

    def finish(self):
        """The run's last word: metrics.json (and folder.json's completed_epochs) once every epoch end's
        files are on disk, and the log's closing line. Returns the metrics."""
        st, log = self.st, self.log
        done = st["epoch"] >= self.n_epochs
        self.writes_done(wait=True)
        final = self.metrics(done)
        if dist.is_main_process():
            save_metrics(self.args.save_path, final)
            acc = "no epoch evaluated" if final["final_acc"] is None else f"{final['final_acc']:.2f}%"
            if not st["history"]:
                log(f"nothing to do: the run is at epoch {st['epoch']} of {self.n_epochs}")
            elif done:
                log(f"done: final {acc} best {final['best_acc']:.2f}% | train {final['train_seconds']:.1f} s, "
                    f"total {final['seconds']:.1f} s | {self.args.save_path}/metrics.json, curve.png")
            else:
                log(f"stopped after epoch {st['epoch'] - 1} ({st['epoch']} of {self.n_epochs} epochs, --stop_epoch): "
                    f"test {acc} | resume without --stop_epoch to finish the run")
        return final
