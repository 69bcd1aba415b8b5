"""The training loop shared by train.py and train_subset.py.

`fit` runs epochs of `train_one_epoch` (+ `evaluate` every --eval_every epochs and after the last) over
a set of training indices (all of them, or a pruned subset), with exact resume at any optimizer step,
signals (SIGTERM/SIGUSR1) and torchrun's DistributedDataParallel. What it carries from step to step
and checkpoints is utils/training/state.py's RunState; the files it writes go through the write
protocol (utils/protocol/epoch_end.py). train_one_epoch, evaluate and fit return plain dicts of metrics.
"""
import functools
import json
import math
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils import dist
from utils.errors import Preempted, UserError
from utils.protocol import epoch_end
from utils.protocol.outputs import CHECKPOINT, load_checkpoint
from utils.training.background import BackgroundWriter
from utils.training.data import FolderImages, make_batches
from utils.training.preemption import EXIT_STATUS, StopSignals
from utils.training.setup import amp_dtype, autocast, cuda_note
from utils.training.state import RunState

EVAL_BATCH = 500


# --------------------------------------------------------------------------------------------------
# One epoch of training, one evaluation
# --------------------------------------------------------------------------------------------------
def train_one_epoch(model, data, batches, optimizer, scheduler, aug_gen, *, amp=False, recorder=None,
                    weights=None, log=None, epoch=0, print_freq=200, start=0, sums=None, after_step=None,
                    distill=None, sample_weights=None, observe=None, scaler=None):
    """One pass over this rank's `batches` (lists of dataset indices). `weights` (N,) scales each
    batch's mean loss by sum(u[batch]) / batch_size (the published score weighting); `sample_weights`
    (N,) makes the loss the mean of w_i * loss_i (dynamic pruning), and observe(idx, losses) receives
    each batch's unweighted per-sample losses.
    A resumed epoch trains batches[start:], `sums` being the statistics of batches[:start]
    (epoch_sums). after_step(steps_done, sums) runs after every optimizer step (fit's checkpoints
    and signals; it raises to end the run there). `scaler`: float16's GradScaler. A loss that is not
    finite ends the run (NonFiniteLoss) at the next point where the host waits anyway. Returns a dict."""
    model.train()
    device = next(model.parameters()).device
    sums = {**epoch_sums(device), **(sums or {})}
    bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=not (dist.is_main_process() and sys.stderr.isatty()))
    t0 = time.perf_counter() - sums["seconds"]
    for step, (x, y, idx) in enumerate(data.train.batches(batches[start:], aug_gen), start):
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()                                    # (B, C)
        losses = F.cross_entropy(logits, y, reduction="none")      # (B,) per-sample, for the dynamics
        per = losses if sample_weights is None else losses * sample_weights[idx]
        loss = per.mean() if distill is None else distill.loss(x, logits, per)   # utils/training/distill.py
        if weights is not None:
            loss = loss * weights[idx].sum() / len(idx)
        optimizer.zero_grad(set_to_none=True)
        backward_step(loss, optimizer, scaler)
        note_nonfinite(sums, loss, step)
        scheduler.step()                                           # cosine annealing per iteration
        if recorder is not None:
            recorder.record(idx, logits, losses)
        if observe is not None:
            observe(idx, losses)
        sums["loss"] += losses.detach().sum()
        sums["correct"] += (logits.argmax(1) == y).sum()
        sums["seen"] += len(y)
        bar.update()
        if (step + 1) % print_freq == 0:
            check_loss_finite(sums, epoch)
        if (step + 1) % print_freq == 0 and log is not None:
            log(f"  epoch {epoch} [{step + 1}/{len(batches)}] loss {sums['loss'].item() / sums['seen']:.4f} "
                f"acc {100 * sums['correct'].item() / sums['seen']:.2f} lr {scheduler.get_last_lr()[0]:.5f}",
                echo=False)
        if after_step is not None:
            sums["seconds"] = time.perf_counter() - t0
            after_step(step + 1, sums)
    check_loss_finite(sums, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bar.close()
    totals = dist.all_reduce_sum(torch.stack([sums["loss"].double(), sums["correct"].double(),
                                              torch.tensor(float(sums["seen"]), device=device, dtype=torch.float64)]))
    return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (100 * totals[1] / totals[2]).item(),
            "train_seconds": seconds, "samples": int(totals[2].item()),
            **({"teacher_seconds": distill.seconds()} if distill is not None else {})}


def epoch_sums(device):
    """This rank's running statistics of an epoch: summed loss, correct predictions, samples, seconds,
    and the first step whose loss was not finite (-1: none)."""
    return {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device, dtype=torch.int64),
            "seen": 0, "seconds": 0.0, "nonfinite": torch.full((), -1, device=device, dtype=torch.int64)}


def backward_step(loss, optimizer, scaler=None):
    """loss.backward() and the optimizer step; with float16's GradScaler, scaled (a step whose gradients
    overflow is skipped and the scale lowered, by design)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite: the run ends in one line, marked failed."""


def note_nonfinite(sums, loss, step):
    """Remember, on the device (no waiting), the first step of the epoch whose loss is NaN or inf."""
    first = sums["nonfinite"]
    sums["nonfinite"] = torch.where((first < 0) & ~torch.isfinite(loss.detach()), step, first)


def check_loss_finite(sums, epoch):
    """Raise NonFiniteLoss if a step of this epoch had a NaN/inf loss on any rank (a collective)."""
    first = dist.all_reduce_max(sums["nonfinite"].clone())
    if first.item() >= 0:
        raise NonFiniteLoss(
            f"the training loss became NaN or infinite at epoch {epoch}, step {first.item() + 1}: the run stopped "
            f"and is marked failed; its last checkpoint, written before that step, is kept. Start again with a "
            f"lower --learning_rate, or --amp_dtype bfloat16 (or without --amp), and --overwrite; --resume repeats "
            f"the run from that checkpoint")


@torch.no_grad()
def evaluate(model, data, *, amp=False):
    """Top-1 accuracy (%) and mean loss on the test set, sharded over ranks."""
    model.eval()
    device = next(model.parameters()).device
    batches = make_batches(torch.arange(len(data.test)), EVAL_BATCH, None, dist.rank(), dist.world_size())
    sums = torch.zeros(2, device=device, dtype=torch.float64)   # loss, correct: summed on the device
    seen = 0                                                     # counted on the host: no wait per batch
    for x, y, _ in data.test.batches(batches):
        with autocast(device, amp):
            logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
        seen += len(y)
    sums = dist.all_reduce_sum(torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64).to(device)]))
    return {"test_loss": (sums[0] / sums[2]).item(), "test_acc": (100 * sums[1] / sums[2]).item()}



# --------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------
def finishes_writes(fn):
    """A run that ends with an exception first lets the background writer finish what it was given
    (complete, committed epochs), so that the folder's final state follows its last files."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except BaseException:
            BackgroundWriter.drain_all()
            raise
    return wrapper


@finishes_writes
def fit(args, model, data, train_indices, device, *, run_info, fingerprint, ck=None, resume_from=None,
        recorder=None, weights=None, total_steps=None, stop_epoch=None, log, distill=None, sampler=None):
    """Train `model` on `train_indices`, evaluating every --eval_every epochs and after the last; write
    checkpoint.pth.tar, model_best.pth.tar, metrics.json and curve.png into args.save_path.

    total_steps: optimizer steps of the whole run (default: args.epochs epochs of train_indices);
      the cosine schedule spans them and the last epoch stops when they are taken.
    stop_epoch: stop after this many epochs with a normal checkpoint (the schedule still spans the
      whole run, so resuming without it gives exactly the uninterrupted run).
    ck: the checkpoint dict to resume from (read from `resume_from`, already checked against
      `fingerprint`, which every checkpoint stores). `run_info` is merged into metrics.json.
    sampler: dynamic pruning (utils/training/dynamic_pruning.py): each epoch trains sampler.begin_epoch(epoch)'s
      indices instead of train_indices, with its per-sample loss weights, and gives it the losses.
    The position of the run is (epoch, step): a checkpoint is written after every epoch, every
    --save_every_steps optimizer steps, and when SIGTERM/SIGUSR1 arrives (then the run ends with
    errors.Preempted); resuming continues at that step exactly (docs/PREEMPTION.md)."""
    train_indices = torch.as_tensor(train_indices, dtype=torch.int64)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.decay, nesterov=args.momentum > 0)
    scheduler, *schedule = make_schedule(args, optimizer, train_indices, sampler, total_steps)
    run = RunState(args, model, optimizer, scheduler, device, schedule, run_info=run_info, fingerprint=fingerprint,
                   log=log, recorder=recorder, sampler=sampler, stop_epoch=stop_epoch)
    if ck is not None:
        run.restore(ck, data, resume_from)
    if cuda_note(args, device):
        log(cuda_note(args, device))
    net = model
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    run.signals = StopSignals()
    for epoch in range(run.st["epoch"], run.stop_at):
        epoch_start = (run.order_gen.get_state(), run.aug_gen.get_state())   # what a mid-epoch checkpoint needs
        batches = epoch_batches(run, epoch, train_indices)
        sums = None
        if run.st["step"]:      # resumed in the middle of this epoch: the statistics of its first steps
            sums = {k: v.to(device) if torch.is_tensor(v) else v for k, v in ck["partial"][dist.rank()].items()}
        elif recorder is not None:
            recorder.start_epoch()
        tr = train_one_epoch(net, data, batches, optimizer, scheduler, run.aug_gen, amp=amp_dtype(args),
                             recorder=recorder, weights=weights, log=log, epoch=epoch, print_freq=args.print_freq,
                             start=run.st["step"], sums=sums,
                             after_step=functools.partial(after_step, run, epoch_start, len(batches)),
                             distill=distill, sample_weights=None if sampler is None else sampler.weights,
                             observe=None if sampler is None else sampler.observe, scaler=run.scaler)
        if sampler is not None:
            sampler.sync()                                 # every rank holds every sample's score
        if recorder is not None:
            recorder.end_epoch(epoch, torch.cat(batches))   # written in the background, before the checkpoint
        ev = None
        if run.evaluates(epoch):   # evaluation draws from no random stream: skipping it changes no training
            dist.broadcast_buffers(model)                  # every rank evaluates rank 0's model...
            ev = evaluate(model, data, amp=amp_dtype(args))   # ...unwrapped: no DDP collectives in eval
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "steps": len(batches), **tr}
        run.end_epoch(epoch, row, ev)                     # its files are written in the background
        signum = run.signals.agreed(now=True)   # a signal during evaluation: the checkpoint above is where we are
        if signum and epoch + 1 < run.stop_at:
            raise preempted(run, signum)
    run.signals.close()   # (a crash leaves the handler, which only records a signal, until the process ends)
    for images in (data.train, data.test):
        if isinstance(images, FolderImages):
            images.close()                  # the DataLoader workers, kept from epoch to epoch, end here
    return run.finish()


def make_schedule(args, optimizer, train_indices, sampler, total_steps):
    """The learning-rate schedule and the run's length: (scheduler, iters_per_epoch, total_steps, n_epochs).
    Cosine annealing per optimizer step over total_steps; epochs of varying length (InfoBatch) follow the
    sampler's schedule of epoch progress instead (then iters_per_epoch and total_steps are None)."""
    scheduler = sampler.scheduler(optimizer) if sampler is not None else None
    if scheduler is not None:
        return scheduler, None, None, args.epochs
    per_epoch = train_indices if sampler is None else torch.arange(sampler.epoch_size)
    iters_per_epoch = len(make_batches(per_epoch, args.batch_size, None, 0, dist.world_size()))
    total_steps = total_steps or args.epochs * iters_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return scheduler, iters_per_epoch, total_steps, math.ceil(total_steps / iters_per_epoch)


def epoch_batches(run, epoch, train_indices):
    """This rank's batches of epoch `epoch`, drawn from the data-order stream."""
    rank, world, sampler = dist.rank(), dist.world_size(), run.sampler
    if sampler is None:
        batches = make_batches(train_indices, run.args.batch_size, run.order_gen, rank, world)
        return batches[:run.total_steps - epoch * run.iters_per_epoch]   # the last epoch of an iteration budget
    batches = make_batches(sampler.begin_epoch(epoch), run.args.batch_size, run.order_gen, rank, world)
    if run.iters_per_epoch is None:
        run.scheduler.begin_epoch(epoch, len(batches), run.st["step"])
    return batches


def after_step(run, epoch_start, n_batches, step, sums):
    """After every optimizer step (`step` of the epoch's `n_batches`): a checkpoint every --save_every_steps
    steps (not at the epoch's last step, whose own checkpoint follows) and when a signal arrived, which
    then ends the run."""
    run.st["step"] = step
    signum = run.signals.agreed()
    every = run.args.save_every_steps
    if signum or (every and run.global_step() % every == 0 and step < n_batches):
        save_mid_epoch(run, epoch_start, sums)
    if signum:
        raise preempted(run, signum)


def save_mid_epoch(run, epoch_start, sums):
    """checkpoint.pth.tar at (epoch, step) in the middle of an epoch, written now (a collective): never of
    weights that a NaN step made, and after the epoch end's files still being written."""
    check_loss_finite(sums, run.st["epoch"])
    run.writes_done(wait=True)
    state = run.checkpoint(epoch_start, sums)
    if state is not None:
        epoch_end.save_checkpoint(run.args.save_path, state)
    dist.barrier()   # on disk before any rank goes on (or exits)


def preempted(run, signum):
    """The end of a run that a signal stopped, its checkpoint written: the line that says where and how to
    resume (in the log, and on the process's stdout at once), then errors.Preempted to raise."""
    name, status, st = signal.Signals(signum).name, EXIT_STATUS[signum], run.st
    where = f"step {st['step']} of epoch {st['epoch']}" if st["step"] else f"the start of epoch {st['epoch']}"
    run.writes_done(wait=True)   # the last epoch end's files on disk before the process ends
    dist.barrier()
    run.log(f"{name}: checkpoint at {where} (global step {run.global_step()}) in "
            f"{os.path.join(run.args.save_path, CHECKPOINT)}; run the same command with --resume to continue "
            f"(exit status {status})")
    sys.stdout.flush()           # in a job's log file now, whatever ends the process next
    run.signals.finish()
    dist.cleanup()
    return Preempted(status)


def evaluate_only(args, model, data):
    """--evaluate: the published behaviour, test accuracy of the (resumed) model, nothing written."""
    if args.resume:
        path = os.path.join(args.save_path, CHECKPOINT) if args.resume == "auto" else args.resume
        if not os.path.isfile(path):
            raise UserError(f"--evaluate: no checkpoint at {path}")
        model.load_state_dict(load_checkpoint(path)["model"])
    ev = evaluate(model, data, amp=amp_dtype(args))
    if dist.is_main_process():
        print(json.dumps(ev))
    return ev
