"""Knowledge distillation from the model trained on the full data (train_subset.py --teacher).

Ben-Baruch et al. 2024 ("Distilling the Knowledge in Data Pruning"): the subset run learns from the
labels and from a teacher trained on ALL the training data, which recovers much of what aggressive
pruning loses. Per batch, with the teacher frozen in eval mode on the same augmented images:

    L = (1 - alpha) CE(z_s, y) + alpha tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))   (batch mean)

The tau^2 keeps the gradient of the soft term on the scale of the CE's as tau grows (Hinton et al.).
The published score weighting (utils/training/loop.py) multiplies this whole loss, as it multiplies the
plain CE. The teacher must have been trained on exactly this training set (data set, labels, class
count, corruption): a teacher that saw other labels would teach them.
"""
import os
import time

import torch
import torch.nn.functional as F

from utils.args import DATA_SETTINGS, without_unused
from utils.errors import UserError
from utils.protocol.files import load_json
from utils.protocol.fingerprint import array_sha256, file_sha256
from utils.protocol.outputs import CHECKPOINT, load_checkpoint
from utils.training.setup import amp_dtype, autocast, channels_last


def kd_loss(student, teacher, losses, alpha, tau):
    """(1 - alpha) CE + alpha tau^2 KL(p_t^tau || p_s^tau), both batch means; logits (B, C), `losses` (B,) the
    per-sample CE the loop computed anyway (its mean is bit for bit the loss without a teacher)."""
    ce = losses.mean()
    kl = F.kl_div(F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1), log_target=True,
                  reduction="batchmean")
    return (1 - alpha) * ce + alpha * tau ** 2 * kl


class Distiller:
    """The frozen teacher and the loss; train_one_epoch calls loss() once per batch."""

    def __init__(self, model, alpha, tau, amp=None):
        self.model, self.alpha, self.tau, self.amp = model.eval().requires_grad_(False), alpha, tau, amp
        self._cpu_seconds, self._events = 0.0, []

    @torch.no_grad()
    def _forward(self, x):
        """Teacher logits (B, C) float32, timed (CUDA events on a GPU: no synchronisation per batch)."""
        cuda = x.device.type == "cuda"
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t = time.perf_counter()
        with autocast(x.device, self.amp):
            z = self.model(x).float()
        if cuda:
            end.record()
            self._events.append((start, end))
        else:
            self._cpu_seconds += time.perf_counter() - t
        return z

    def loss(self, x, logits, losses):
        """The batch's loss from the student's logits (B, C) and per-sample CE (B,) on the augmented images x."""
        return kd_loss(logits, self._forward(x), losses, self.alpha, self.tau)

    def seconds(self):
        """Seconds of teacher forward passes since the last call (part of the epoch's train_seconds)."""
        if self._events:
            torch.cuda.synchronize()
            self._cpu_seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000
            self._events = []
        out, self._cpu_seconds = self._cpu_seconds, 0.0
        return out


def check_kd_args(args):
    """The distillation flags alone, before anything is read."""
    if args.teacher is None:
        if args.kd_alpha is not None:
            raise UserError("--kd_alpha weighs the distillation loss: it needs --teacher (the full-data model)")
        return
    if args.kd_alpha is None:
        raise UserError("--teacher needs --kd_alpha (the weight of the distillation term, 0..1; e.g. 0.5 up to "
                        "50% pruned, 1.0 at 90%, untuned here)")
    if not 0 <= args.kd_alpha <= 1:
        raise UserError(f"--kd_alpha must lie in [0, 1], got {args.kd_alpha}")
    if not args.kd_temperature > 0:
        raise UserError(f"--kd_temperature must be positive, got {args.kd_temperature}")
    if not os.path.isfile(args.teacher):
        raise UserError(f"--teacher {args.teacher}: no such file" + (
            f" (give a file in it, e.g. {os.path.join(args.teacher, 'model_best.pth.tar')})"
            if os.path.isdir(args.teacher) else ""))


def _recorded(folder, name):
    """A JSON file of the teacher's run folder, or {}."""
    return load_json(os.path.join(folder, name), {})


def load_teacher(args, data, device):
    """(Distiller, facts for metrics.json) from --teacher, or (None, {}) without one. Reads only; every
    way the teacher does not fit this training set is one UserError."""
    if args.teacher is None:
        return None, {}
    from models import create_model
    path = args.teacher
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or "model" not in ck:
        raise UserError(f"--teacher {path} is not a checkpoint of train.py (no 'model')")
    folder = os.path.dirname(os.path.abspath(path))
    # model_best.pth.tar holds the weights only: the run's fingerprint is in its checkpoint / args.json
    fp = ck.get("fingerprint") or _recorded(folder, "folder.json").get("fingerprint") or \
        _recorded(folder, "args.json").get("fingerprint") or _checkpoint_fingerprint(folder, path)
    if not fp:
        raise UserError(f"--teacher {path}: no run fingerprint in it or beside it (checkpoint.pth.tar, folder.json), "
                        f"so that it was trained on this training set cannot be checked")
    where = f"--teacher {path} was trained on"
    if fp.get("--dataset") != args.dataset:
        raise UserError(f"{where} {fp.get('--dataset')}, this run trains on --dataset {args.dataset}")
    if fp.get("training samples") != data.n_train or fp.get("training labels") != array_sha256(data.targets):
        raise UserError(f"{where} other training labels ({fp.get('training samples')} samples, labels "
                        f"sha256 {str(fp.get('training labels'))[:12]}…) than this run's ({data.n_train} samples, "
                        f"{array_sha256(data.targets)[:12]}…): use the full-data model of this training set")
    theirs = without_unused({k: fp.get("--" + k, d) for k, d in DATA_SETTINGS.items()})
    ours = without_unused({k: getattr(args, k) for k in DATA_SETTINGS})
    for k in DATA_SETTINGS:
        if theirs.get(k) != ours.get(k):
            raise UserError(f"{where} --{k} {theirs.get(k)}, this run has --{k} {ours.get(k)}: the teacher must "
                            f"have seen this training set")
    arch = ck.get("arch") or fp.get("--arch")
    try:
        model = create_model(arch, data.num_classes)
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"--teacher {path}: its {arch} weights do not fit {data.num_classes} classes "
                        f"({str(e).strip().splitlines()[0][:120]})") from None
    metrics = _recorded(folder, "metrics.json")
    facts = {"teacher": os.path.abspath(path), "teacher_sha256": file_sha256(path), "teacher_arch": arch,
             "teacher_epoch": ck.get("epoch"), "teacher_best_acc": ck.get("best_acc"),
             "teacher_run": folder, "teacher_finished": metrics.get("finished"),
             "teacher_train_seconds": metrics.get("train_seconds"),   # the teacher's own training, for the ledger
             "kd_alpha": args.kd_alpha, "kd_temperature": args.kd_temperature}
    model = model.to(device)
    if channels_last(args, device):   # the student's memory format and autocast dtype
        model = model.to(memory_format=torch.channels_last)
    return Distiller(model, args.kd_alpha, args.kd_temperature, amp=amp_dtype(args)), facts


def _checkpoint_fingerprint(folder, path):
    """The fingerprint of checkpoint.pth.tar beside `path` (when `path` is not that file itself)."""
    own = os.path.join(folder, CHECKPOINT)
    if not os.path.isfile(own) or os.path.samefile(own, path):
        return None
    ck = load_checkpoint(own)
    return ck.get("fingerprint") if isinstance(ck, dict) else None
