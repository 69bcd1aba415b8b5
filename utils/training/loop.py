"""The training loop shared by train.py and train_subset.py.

`fit` runs epochs of `train_one_epoch` + `evaluate` over a set of training indices (all of them, or
a pruned subset), and owns everything that makes a run trustworthy: exact resume (model, optimizer,
scheduler, curves and every random stream in the checkpoint), atomic checkpoints/metrics/plots,
the log, and torchrun's DistributedDataParallel. Both functions return plain dicts of metrics.
"""
import functools
import json
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils import dist
from utils.errors import Preempted, UserError
from utils.protocol.files import check_writable, save_json, save_torch
from utils.protocol.fingerprint import array_sha256
from utils.protocol.outputs import BEST, CHECKPOINT, load_checkpoint
from utils.training.background import BackgroundWriter, HostCopy
from utils.training.data import FolderImages, make_batches
from utils.training.preemption import EXIT_STATUS, StopSignals

EVAL_BATCH = 500
PLOT_EVERY = 30.0   # seconds: curve.png is redrawn after an epoch at most this often, and after the last one


# --------------------------------------------------------------------------------------------------
# Start of a run (reads only), the model, the random streams
# --------------------------------------------------------------------------------------------------
def setup(args):
    """The first steps of both training scripts, none of which writes anything: device (and process
    group), the data on the device. Returns (device, data). What the run folder holds is read later,
    under its lock (utils.protocol.run.open_run)."""
    from utils.training.data import load_data
    if args.deterministic:   # before CUDA starts: cuBLAS reads this when its handle is created
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn where no deterministic kernel exists
        torch.backends.cudnn.deterministic = True
    check_writable(args.save_path, "--save_path")
    device = dist.setup(args.ngpu)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not args.deterministic
    set_precision(args, device)
    data = load_data(args, device, channels_last(args, device))
    return device, data


def channels_last(args, device):
    return args.amp or device.type == "cuda"


def set_precision(args, device):
    """--tf32 for CUDA's float32 convolutions and matrix products; --amp_dtype where the device has it."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    if args.amp and args.amp_dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp: {torch.cuda.get_device_name(device)} has no bfloat16; use --amp --amp_dtype float16 "
                        f"(with a gradient scaler), or leave out --amp")


def cuda_note(args, device):
    """The log's line about the GPU's numerics, or None on the CPU."""
    if device.type != "cuda":
        return None
    return (f"{torch.cuda.get_device_name(device)}: TF32 {args.tf32} (--tf32), "
            f"{'amp ' + args.amp_dtype if args.amp else 'float32'}, cudnn.benchmark "
            f"{'off, deterministic algorithms (--deterministic)' if args.deterministic else 'on (--deterministic turns it off)'}")


def amp_dtype(args):
    """The autocast dtype of the run, or None without --amp (the `amp` argument of the functions below)."""
    return getattr(torch, getattr(args, "amp_dtype", "bfloat16")) if args.amp else None


def autocast(device, amp):
    """torch.autocast for `amp`: None/False (off), True (bfloat16) or a dtype."""
    return torch.autocast(device.type, dtype=amp if isinstance(amp, torch.dtype) else torch.bfloat16,
                          enabled=bool(amp))


def run_facts(args, data, device):
    """Facts of a run that its flags do not show, for the run fingerprint (utils/protocol/run.py). The
    DataLoader's worker count is none: ImageFolder augmentation is seeded per sample (utils/training/data.py)."""
    return {"device": device.type, "processes": dist.world_size(), "training samples": data.n_train,
            "training labels": array_sha256(data.targets)}


def stream_seed(seed, *key):
    """A 64-bit seed for the named random stream `key` of run seed `seed`: numpy's SeedSequence
    spawning, so streams are independent of each other and of every other seed's streams (a plain
    seed + k would make run s's augmentation stream run s+k's initialisation stream)."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


ORDER, AUGMENT, GLOBAL, DYNAMIC = 0, 1, 2, 3   # spawn keys: data order, crops/flips, torch's global, dynamic pruning


def build_model(args, data, device):
    """The model from torch.manual_seed(--manualSeed), exactly as the published scripts initialise
    it; then each rank's global torch stream (ImageFolder transforms with --workers 0 draw from it)."""
    from models import create_model
    seed_everything(args.manualSeed)                     # the same initial model on every rank
    model = create_model(args.arch, data.num_classes).to(device)
    if channels_last(args, device):
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(stream_seed(args.manualSeed, GLOBAL, dist.rank()))
    return model


def seed_everything(seed):
    """Seed python, numpy and torch's global stream (model initialisation uses the latter)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Random streams: data order (shared by all ranks), augmentation (per rank), and the global ones
# --------------------------------------------------------------------------------------------------
def rng_state(order_gen, aug_gen, epoch_start=None):
    """Every random generator's state, gathered from all ranks (a collective: call on every rank).
    In the middle of an epoch, `epoch_start` = (order, augmentation) states at the start of that
    epoch: the order stream's, from which the epoch's batches are drawn again on resume (so "order"
    always means the stream at the start of the checkpoint's epoch), and the augmentation stream's,
    for data sets that draw from it once per epoch (ImageFolder: its DataLoader's worker seeds)."""
    np_state = np.random.get_state()
    local = {"augment": aug_gen.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state() if aug_gen.device.type == "cuda" else None}
    if epoch_start is not None:
        local["augment_epoch_start"] = epoch_start[1]
    return {"order": order_gen.get_state() if epoch_start is None else epoch_start[0], "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "ranks": dist.all_gather_objects(local)}


def set_rng_state(state, order_gen, aug_gen, per_batch=True):
    """Restore every stream. In the middle of an epoch, `per_batch`: the data draw augmentation batch by
    batch (in-memory data: restore the stream at the step) or once per epoch (ImageFolder: restore it at
    the epoch start, so that the epochs after this one draw exactly what they would have)."""
    if len(state["ranks"]) != dist.world_size():
        raise UserError(f"the checkpoint was written by {len(state['ranks'])} processes; resume it with "
                        f"the same number (now {dist.world_size()})")
    order_gen.set_state(state["order"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    local = state["ranks"][dist.rank()]
    aug_gen.set_state(local["augment"] if per_batch else local.get("augment_epoch_start", local["augment"]))
    torch.set_rng_state(local["torch"])
    if local["cuda"] is not None and aug_gen.device.type == "cuda":
        torch.cuda.set_rng_state(local["cuda"])


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


def make_scaler(args, device):
    """The GradScaler of --amp --amp_dtype float16, or None (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type) if amp_dtype(args) == torch.float16 else None


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


def writes_done(writer, wait=False):
    """Raise on every rank if rank 0's background writes failed (rank 0 raises the write's own error, e.g.
    the full disk's). `wait`: wait for them first. A collective where several processes run."""
    error = None
    if dist.is_main_process():
        try:
            writer.wait() if wait else writer.check()
        except Exception as e:
            error = e
    if dist.broadcast_object(error is not None) and error is None:
        raise UserError("process 0 could not write the run's files (its error says why); this process stops too")
    if error is not None:
        raise error


@finishes_writes
def fit(args, model, data, train_indices, device, *, run_info, fingerprint, ck=None, resume_from=None,
        recorder=None, weights=None, total_steps=None, stop_epoch=None, log, distill=None, sampler=None):
    """Train `model` on `train_indices`, evaluating every epoch; write checkpoint.pth.tar,
    model_best.pth.tar, metrics.json and curve.png into args.save_path.

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
    from utils.training.curve import plot_curves

    wall_start = time.perf_counter()
    rank, world = dist.rank(), dist.world_size()
    train_indices = torch.as_tensor(train_indices, dtype=torch.int64)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.decay, nesterov=args.momentum > 0)
    scheduler = sampler.scheduler(optimizer) if sampler is not None else None
    if scheduler is not None:   # epochs of varying length (InfoBatch): the schedule follows epoch progress
        iters_per_epoch, total_steps, n_epochs = None, None, args.epochs
    else:
        per_epoch = train_indices if sampler is None else torch.arange(sampler.epoch_size)
        iters_per_epoch = len(make_batches(per_epoch, args.batch_size, None, 0, world))
        total_steps = total_steps or args.epochs * iters_per_epoch
        n_epochs = math.ceil(total_steps / iters_per_epoch)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    order_gen = torch.Generator().manual_seed(stream_seed(args.manualSeed, ORDER))             # data order
    aug_gen = torch.Generator(device=device).manual_seed(stream_seed(args.manualSeed, AUGMENT, rank))  # crops/flips
    scaler = make_scaler(args, device)                                # float16 only
    writer = recorder.writer if recorder is not None else BackgroundWriter()   # epoch ends, in order
    # step: optimizer steps taken in epoch `epoch` (0 at an epoch boundary)
    st = {"epoch": 0, "step": 0, "best_acc": 0.0, "history": [], "train_seconds": 0.0, "seconds": 0.0}

    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"], order_gen, aug_gen, per_batch=not isinstance(data.train, FolderImages))
        if recorder is not None:
            recorder.load_state_dict(ck["recorder"])
        if sampler is not None:
            sampler.load_state_dict(ck["sampler"])
        st = {k: ck.get(k, v) for k, v in st.items()}   # checkpoints before (epoch, step) have no step
        at = f"epoch {st['epoch']}" + (f", step {st['step']}" if st["step"] else "")
        log(f"resumed from {resume_from} at {at} (best {st['best_acc']:.2f}%)")

    if cuda_note(args, device):
        log(cuda_note(args, device))
    net = model
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def global_step():   # optimizer steps taken so far
        if iters_per_epoch:
            return st["epoch"] * iters_per_epoch + st["step"]
        return sum(row["steps"] for row in st["history"]) + st["step"]

    def metrics(done):
        last = st["history"][-1] if st["history"] else {}
        return {**run_info, "best_acc": st["best_acc"], "final_acc": last.get("test_acc"),
                "epochs": n_epochs, "steps": total_steps or global_step(), "completed_epochs": st["epoch"],
                "finished": done, "stopped": not done and st["epoch"] == stop_at,
                "train_seconds": st["train_seconds"],
                "seconds": st["seconds"] + time.perf_counter() - wall_start,
                "history": st["history"]}

    def save_checkpoint(epoch_start=None, sums=None, then=None):
        """checkpoint.pth.tar at (st["epoch"], st["step"]); in the middle of an epoch, `epoch_start`
        (rng_state) and `sums`, this rank's statistics of the epoch so far, written now. At an epoch end,
        `then(state)` writes the epoch's other files after it, all on the background writer from host
        copies taken here (the next epoch does not wait). A collective: every rank calls it."""
        if sums is not None:
            check_loss_finite(sums, st["epoch"])        # never a checkpoint of weights a NaN step made
            writes_done(writer, wait=True)              # the epoch end's files first, then this one
        rng = rng_state(order_gen, aug_gen, epoch_start)
        partial = None if sums is None else dist.all_gather_objects(
            {k: v.cpu() if torch.is_tensor(v) else v for k, v in sums.items()})
        rec = recorder.state_dict(mid_epoch=sums is not None) if recorder is not None else {}
        samp = {"sampler": sampler.state_dict()} if sampler is not None else {}
        if dist.is_main_process():
            state = {**st, **samp, "history": list(st["history"]), "global_step": global_step(),
                     "partial": partial, "seconds": st["seconds"] + time.perf_counter() - wall_start,
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                     "rng": rng, "recorder": rec, "run_info": run_info, "args": dict(vars(args)), "arch": args.arch,
                     "fingerprint": fingerprint}
            if then is None:
                save_torch(os.path.join(args.save_path, CHECKPOINT), state)
            else:
                host = HostCopy(state)
                writer.submit(commit_epoch, host, then)
        if then is None:
            dist.barrier()   # on disk before any rank goes on (or exits)

    def commit_epoch(host, then):
        """(background) The epoch end's checkpoint, then the files that follow it."""
        state = host.get()
        save_torch(os.path.join(args.save_path, CHECKPOINT), state)
        then(state)

    def epoch_files(is_best, epoch):
        """What follows an epoch's checkpoint (rank 0): model_best.pth.tar, metrics.json, curve.png (after
        the first and the last epoch, and at most every PLOT_EVERY seconds between)."""
        m, history = metrics(False), list(st["history"])
        m["history"] = history
        title = f"{run_info.get('dataset')} {args.arch} ({run_info.get('num_train_samples')} samples)"
        draw = epoch + 1 == stop_at or time.perf_counter() - last_plot[0] >= PLOT_EVERY
        if draw:
            last_plot[0] = time.perf_counter()

        def write(state):
            if is_best:
                save_torch(os.path.join(args.save_path, BEST), {"model": state["model"], "epoch": epoch + 1,
                                                                "best_acc": state["best_acc"], "arch": args.arch})
            save_json(os.path.join(args.save_path, "metrics.json"), m)
            if draw:
                plot_curves(history, os.path.join(args.save_path, "curve.png"), title=title)
        return write

    def preempted(signum):
        name = signal.Signals(signum).name
        status = EXIT_STATUS[signum]
        where = f"step {st['step']} of epoch {st['epoch']}" if st["step"] else f"the start of epoch {st['epoch']}"
        writes_done(writer, wait=True)   # the last epoch end's files on disk before the process ends
        dist.barrier()
        log(f"{name}: checkpoint at {where} (global step {global_step()}) in "
            f"{os.path.join(args.save_path, CHECKPOINT)}; run the same command with --resume to continue "
            f"(exit status {status})")
        signals.finish()
        dist.cleanup()
        return Preempted(status)

    save_every = args.save_every_steps
    last_plot = [-math.inf]   # when curve.png was drawn: ~0.3 s a plot, more than a short run's epoch
    signals = StopSignals()
    stop_at = min(n_epochs, stop_epoch or n_epochs)
    for epoch in range(st["epoch"], stop_at):
        epoch_start = (order_gen.get_state(), aug_gen.get_state())   # what a mid-epoch checkpoint needs
        if sampler is None:
            batches = make_batches(train_indices, args.batch_size, order_gen, rank, world)
            batches = batches[:total_steps - epoch * iters_per_epoch]   # the last epoch of an iteration budget
        else:
            batches = make_batches(sampler.begin_epoch(epoch), args.batch_size, order_gen, rank, world)
            if iters_per_epoch is None:
                scheduler.begin_epoch(epoch, len(batches), st["step"])
        sums = None
        if st["step"]:          # resumed in the middle of this epoch: the statistics of its first steps
            sums = {k: v.to(device) if torch.is_tensor(v) else v for k, v in ck["partial"][rank].items()}
        elif recorder is not None:
            recorder.start_epoch()

        def after_step(step, sums):
            st["step"] = step
            signum = signals.agreed()
            if signum or (save_every and global_step() % save_every == 0
                          and step < len(batches)):   # the epoch's last step: its own checkpoint follows
                save_checkpoint(epoch_start, sums)
            if signum:
                raise preempted(signum)

        tr = train_one_epoch(net, data, batches, optimizer, scheduler, aug_gen, amp=amp_dtype(args),
                             recorder=recorder, weights=weights, log=log, epoch=epoch,
                             print_freq=args.print_freq, start=st["step"], sums=sums, after_step=after_step,
                             distill=distill, sample_weights=None if sampler is None else sampler.weights,
                             observe=None if sampler is None else sampler.observe, scaler=scaler)
        if sampler is not None:
            sampler.sync()                                 # every rank holds every sample's score
        if recorder is not None:
            recorder.end_epoch(epoch, torch.cat(batches))   # written in the background, before the checkpoint
        dist.broadcast_buffers(model)                      # every rank evaluates rank 0's model...
        ev = evaluate(model, data, amp=amp_dtype(args))   # ...unwrapped: no DDP collectives in eval
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "steps": len(batches), **tr, **ev}
        st["history"].append(row)
        st["train_seconds"] += tr["train_seconds"]
        is_best = ev["test_acc"] > st["best_acc"]
        st["best_acc"] = max(st["best_acc"], ev["test_acc"])
        st["epoch"], st["step"] = epoch + 1, 0
        if dist.is_main_process():
            log(f"epoch {epoch:3d}/{n_epochs} train loss {tr['train_loss']:.4f} acc {tr['train_acc']:6.2f} | "
                f"test loss {ev['test_loss']:.4f} acc {ev['test_acc']:6.2f} (best {st['best_acc']:.2f}) | "
                f"{tr['samples'] / tr['train_seconds']:.0f} img/s")
        writes_done(writer)                               # an earlier epoch's failed write ends the run
        save_checkpoint(then=epoch_files(is_best, epoch))  # written in the background
        signum = signals.agreed(now=True)   # a signal during evaluation: the checkpoint above is where we are
        if signum and epoch + 1 < stop_at:
            raise preempted(signum)
    signals.close()   # (a crash leaves the handler, which only records a signal, until the process ends)
    for images in (data.train, data.test):
        if isinstance(images, FolderImages):
            images.close()                  # the DataLoader workers, kept from epoch to epoch, end here

    done = st["epoch"] >= n_epochs
    writes_done(writer, wait=True)
    final = metrics(done)
    if dist.is_main_process():
        save_json(os.path.join(args.save_path, "metrics.json"), final)
        if not st["history"]:
            log(f"nothing to do: the run is at epoch {st['epoch']} of {n_epochs}")
        elif done:
            log(f"done: final {final['final_acc']:.2f}% best {final['best_acc']:.2f}% | train "
                f"{final['train_seconds']:.1f} s, total {final['seconds']:.1f} s | {args.save_path}/metrics.json, curve.png")
        else:
            log(f"stopped after epoch {st['epoch'] - 1} ({st['epoch']} of {n_epochs} epochs, --stop_epoch): "
                f"test {final['final_acc']:.2f}% | resume without --stop_epoch to finish the run")
    return final


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
