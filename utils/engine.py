"""The training loop shared by train.py and train_subset.py.

`fit` runs epochs of `train_one_epoch` + `evaluate` over a set of training indices (all of them, or
a pruned subset), and owns everything that makes a run trustworthy: exact resume (model, optimizer,
scheduler, curves and every random stream in the checkpoint), atomic checkpoints/metrics/plots,
the log, and torchrun's DistributedDataParallel. Both functions return plain dicts of metrics.
"""
import json
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import dist
from .data import make_batches
from .errors import UserError
from .io import ensure_writable_dir, save_json, save_torch

CHECKPOINT, BEST = "checkpoint.pth.tar", "model_best.pth.tar"
EVAL_BATCH = 500


# --------------------------------------------------------------------------------------------------
# Run folder, log, seeds
# --------------------------------------------------------------------------------------------------
class Log:
    """Prints (main process only) and appends to SAVE_PATH/log_seed_<seed>.txt (the published name)."""

    def __init__(self, save_path, seed, append):
        self.file = None
        if dist.is_main_process():
            self.file = open(os.path.join(save_path, f"log_seed_{seed}.txt"), "a" if append else "w")

    def __call__(self, msg, echo=True):
        if self.file is None:
            return
        if echo:
            tqdm.write(msg)
        self.file.write(msg + "\n")
        self.file.flush()


def remove_stale_temporaries(save_path):
    """Delete the temporary files of writes that a killed run left half-done (utils.io names them
    .<name>.tmp<pid>); they are never trusted, but a checkpoint's can be gigabytes."""
    for folder in (save_path, os.path.join(save_path, "npy")):
        if os.path.isdir(folder):
            for f in os.listdir(folder):
                if f.startswith(".") and re.search(r"\.tmp\d+$", f):
                    os.remove(os.path.join(folder, f))


def prepare_run(args):
    """Check the save_path and the --resume/--overwrite request; returns the checkpoint to resume
    from (or None). A save_path holding a run is never silently overwritten."""
    ensure_writable_dir(args.save_path, "--save_path")
    if dist.is_main_process():
        remove_stale_temporaries(args.save_path)
    own = os.path.join(args.save_path, CHECKPOINT)
    if args.resume:
        path = own if args.resume == "auto" else args.resume
        if os.path.isfile(path):
            return path
        if args.resume != "auto":
            raise UserError(f"--resume {path}: no such checkpoint file")
        if dist.is_main_process():
            print(f"note: --resume: no checkpoint in {args.save_path} yet, starting from scratch")
        return None
    held = [f for f in (CHECKPOINT, "metrics.json") if os.path.exists(os.path.join(args.save_path, f))]
    if held and not args.overwrite and not args.evaluate:
        raise UserError(f"{args.save_path} already holds a run ({held[0]}); pass --resume to continue it "
                        f"or --overwrite to start again")
    if held and args.overwrite and dist.is_main_process():
        npy = os.path.join(args.save_path, "npy")
        stale = [os.path.join(npy, f) for f in (os.listdir(npy) if os.path.isdir(npy) else []) if f.endswith(".npy")]
        for f in stale + [os.path.join(args.save_path, f) for f in (CHECKPOINT, BEST, "metrics.json")]:
            if os.path.exists(f):
                os.remove(f)
    return None


def start_run(args):
    """The first steps of both training scripts: device (and process group), the run folder check,
    the data on the device, the model from the seeded initialisation stream.
    Returns (device, data, model, resume_from)."""
    from models import create_model
    from .data import load_data
    device = dist.setup(args.ngpu)
    resume_from = prepare_run(args)
    channels_last = args.amp or device.type == "cuda"
    torch.backends.cudnn.benchmark = device.type == "cuda"
    data = load_data(args, device, channels_last)
    seed_everything(args.manualSeed)                     # the same initial model on every rank
    model = create_model(args.arch, data.num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(args.manualSeed + 1000 * dist.rank())  # then per rank: ImageFolder transforms
    return device, data, model, resume_from                  # with --workers 0 draw from this stream


def open_log(args, resume_from):
    """The run's log (appended to when resuming) and args.json; call once the inputs are checked."""
    write_run_info(args)
    return Log(args.save_path, args.manualSeed, append=bool(resume_from))


def seed_everything(seed):
    """Seed python, numpy and torch's global stream (model initialisation uses the latter)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_run_info(args):
    """args.json: the resolved arguments, the command line and the git commit, beside the log."""
    if not dist.is_main_process():
        return
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    save_json(os.path.join(args.save_path, "args.json"),
              {"args": vars(args), "command": " ".join(sys.argv), "git_commit": commit or None})


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, ...
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------------
# Random streams: data order (shared by all ranks), augmentation (per rank), and the global ones
# --------------------------------------------------------------------------------------------------
def rng_state(order_gen, aug_gen):
    """Every random generator's state, gathered from all ranks (a collective: call on every rank)."""
    np_state = np.random.get_state()
    local = {"augment": aug_gen.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state() if aug_gen.device.type == "cuda" else None}
    return {"order": order_gen.get_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "ranks": dist.all_gather_objects(local)}


def set_rng_state(state, order_gen, aug_gen):
    if len(state["ranks"]) != dist.world_size():
        raise UserError(f"the checkpoint was written by {len(state['ranks'])} processes; resume it with "
                        f"the same number (now {dist.world_size()})")
    order_gen.set_state(state["order"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    local = state["ranks"][dist.rank()]
    aug_gen.set_state(local["augment"])
    torch.set_rng_state(local["torch"])
    if local["cuda"] is not None and aug_gen.device.type == "cuda":
        torch.cuda.set_rng_state(local["cuda"])


# --------------------------------------------------------------------------------------------------
# One epoch of training, one evaluation
# --------------------------------------------------------------------------------------------------
def train_one_epoch(model, data, batches, optimizer, scheduler, aug_gen, *, amp=False, recorder=None,
                    weights=None, log=None, epoch=0, print_freq=200):
    """One pass over this rank's `batches` (lists of dataset indices). `weights` (N,) scales each
    batch's mean loss by sum(u[batch]) / batch_size (the published score weighting). Returns a dict."""
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    bar = tqdm(total=len(batches), desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=not (dist.is_main_process() and sys.stderr.isatty()))
    start = time.perf_counter()
    for step, (x, y, idx) in enumerate(data.train.batches(batches, aug_gen)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()                                    # (B, C)
        losses = F.cross_entropy(logits, y, reduction="none")      # (B,) per-sample, for the dynamics
        loss = losses.mean()
        if weights is not None:
            loss = loss * weights[idx].sum() / len(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()                                           # cosine annealing per iteration
        if recorder is not None:
            recorder.record(idx, logits, losses)
        loss_sum += losses.detach().sum()
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update()
        if (step + 1) % print_freq == 0 and log is not None:
            log(f"  epoch {epoch} [{step + 1}/{len(batches)}] loss {loss_sum.item() / seen:.4f} "
                f"acc {100 * correct.item() / seen:.2f} lr {scheduler.get_last_lr()[0]:.5f}", echo=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    totals = dist.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                              torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (100 * totals[1] / totals[2]).item(),
            "train_seconds": seconds, "samples": int(totals[2].item())}


@torch.no_grad()
def evaluate(model, data, *, amp=False):
    """Top-1 accuracy (%) and mean loss on the test set, sharded over ranks."""
    model.eval()
    device = next(model.parameters()).device
    batches = make_batches(torch.arange(len(data.test)), EVAL_BATCH, None, dist.rank(), dist.world_size())
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    for x, y, _ in data.test.batches(batches):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x).float()
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                             (logits.argmax(1) == y).sum().double(), torch.tensor(len(y), device=device).double()])
    dist.all_reduce_sum(sums)
    return {"test_loss": (sums[0] / sums[2]).item(), "test_acc": (100 * sums[1] / sums[2]).item()}


# --------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------
def fit(args, model, data, train_indices, device, *, run_info, resume_from=None, recorder=None,
        weights=None, log):
    """Train `model` on `train_indices` for args.epochs, evaluating every epoch; write
    checkpoint.pth.tar, model_best.pth.tar, metrics.json and curve.png into args.save_path.
    `run_info` is merged into metrics.json (dataset, method, subset_rate, ...)."""
    from .plots import plot_curves

    wall_start = time.perf_counter()
    rank, world = dist.rank(), dist.world_size()
    train_indices = torch.as_tensor(train_indices, dtype=torch.int64)
    iters_per_epoch = len(make_batches(train_indices, args.batch_size, None, 0, world))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.decay, nesterov=args.momentum > 0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * iters_per_epoch)
    order_gen = torch.Generator().manual_seed(args.manualSeed)                      # data order
    aug_gen = torch.Generator(device=device).manual_seed(args.manualSeed + 1 + 1000 * rank)  # crops/flips
    st = {"epoch": 0, "best_acc": 0.0, "history": [], "train_seconds": 0.0, "seconds": 0.0}

    if resume_from:
        ck = load_checkpoint(resume_from)
        was, now = {**ck["args"], **ck["run_info"]}, {**vars(args), **run_info}
        for key in ("dataset", "arch", "num_train_samples", "method", "subset_rate", "selection",
                    "epochs", "batch_size", "learning_rate", "momentum", "decay", "manualSeed",
                    "dynamics", "dynamics_format", "dynamics_dtype"):
            if was.get(key) != now.get(key):
                raise UserError(f"{resume_from} is a run with {key}={was.get(key)!r}, not {now.get(key)!r}; "
                                f"resume it with the same settings (or start again with --overwrite)")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], order_gen, aug_gen)
        if recorder is not None:
            recorder.load_state_dict(ck["recorder"])
        st = {k: ck[k] for k in st}
        log(f"resumed from {resume_from} at epoch {st['epoch']} (best {st['best_acc']:.2f}%)")

    net = model
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def metrics(done):
        last = st["history"][-1] if st["history"] else {}
        return {**run_info, "best_acc": st["best_acc"], "final_acc": last.get("test_acc"),
                "epochs": args.epochs, "completed_epochs": st["epoch"], "finished": done,
                "train_seconds": st["train_seconds"],
                "seconds": st["seconds"] + time.perf_counter() - wall_start,
                "history": st["history"]}

    for epoch in range(st["epoch"], args.epochs):
        batches = make_batches(train_indices, args.batch_size, order_gen, rank, world)
        if recorder is not None:
            recorder.start_epoch()
        tr = train_one_epoch(net, data, batches, optimizer, scheduler, aug_gen, amp=args.amp,
                             recorder=recorder, weights=weights, log=log, epoch=epoch,
                             print_freq=args.print_freq)
        if recorder is not None:
            recorder.end_epoch(epoch, torch.cat(batches))   # written in the background...
        dist.broadcast_buffers(model)                      # every rank evaluates rank 0's model...
        ev = evaluate(model, data, amp=args.amp)          # ...unwrapped: no DDP collectives in eval
        if recorder is not None:
            recorder.wait()                                # ...and on disk before the checkpoint
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **tr, **ev}
        st["history"].append(row)
        st["train_seconds"] += tr["train_seconds"]
        is_best = ev["test_acc"] > st["best_acc"]
        st["best_acc"] = max(st["best_acc"], ev["test_acc"])
        st["epoch"] = epoch + 1
        rng = rng_state(order_gen, aug_gen)                # collective, on every rank
        if dist.is_main_process():
            log(f"epoch {epoch:3d}/{args.epochs} train loss {tr['train_loss']:.4f} acc {tr['train_acc']:6.2f} | "
                f"test loss {ev['test_loss']:.4f} acc {ev['test_acc']:6.2f} (best {st['best_acc']:.2f}) | "
                f"{tr['samples'] / tr['train_seconds']:.0f} img/s")
            ck = {**st, "seconds": st["seconds"] + time.perf_counter() - wall_start, "model": model.state_dict(),
                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                  "recorder": recorder.state_dict() if recorder is not None else {},
                  "run_info": run_info, "args": vars(args), "arch": args.arch}
            save_torch(os.path.join(args.save_path, CHECKPOINT), ck)
            if is_best:
                save_torch(os.path.join(args.save_path, BEST), {"model": model.state_dict(), "epoch": epoch + 1,
                                                                "best_acc": st["best_acc"], "arch": args.arch})
            save_json(os.path.join(args.save_path, "metrics.json"), metrics(False))
            plot_curves(st["history"], os.path.join(args.save_path, "curve.png"),
                        title=f"{run_info.get('dataset')} {args.arch} ({run_info.get('num_train_samples')} samples)")
        dist.barrier()

    final = metrics(True)
    if dist.is_main_process():
        save_json(os.path.join(args.save_path, "metrics.json"), final)
        log(f"done: final {final['final_acc']:.2f}% best {final['best_acc']:.2f}% | train {final['train_seconds']:.1f} s, "
            f"total {final['seconds']:.1f} s | {args.save_path}/metrics.json, curve.png")
    return final


def evaluate_only(args, model, data):
    """--evaluate: the published behaviour, test accuracy of the (resumed) model, nothing written."""
    if args.resume:
        path = os.path.join(args.save_path, CHECKPOINT) if args.resume == "auto" else args.resume
        if not os.path.isfile(path):
            raise UserError(f"--evaluate: no checkpoint at {path}")
        model.load_state_dict(load_checkpoint(path)["model"])
    ev = evaluate(model, data, amp=args.amp)
    if dist.is_main_process():
        print(json.dumps(ev))
    return ev
