"""The run folder (--save_path) of train.py and train_subset.py: resume checks, then writing.

Two phases, never mixed, so that a refused command leaves the folder byte-identical:
1. checks that read only: `find_resume` (is there a run, may we continue or overwrite it?),
   `load_checkpoint` + `check_fingerprint` (is the checkpoint a run with exactly these settings?);
2. `begin_run`: create the folder, remove what a killed write left, write args.json, open the log.

The run fingerprint is every resolved flag that can change a result (all of them except
NOT_FINGERPRINTED) plus facts the flags do not show (device type, number of processes, the
content of the training labels and of the mask and score files). It is stored in every checkpoint
and compared on resume, so a new flag is covered without touching this file.
"""
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
from tqdm import tqdm

from . import dist
from .args import flag_name, without_unused
from .errors import UserError
from .io import ensure_writable_dir, save_json, save_npy

CHECKPOINT, BEST = "checkpoint.pth.tar", "model_best.pth.tar"
# Flags that cannot change what a run computes: where it is, how it reports, how it is resumed.
# --data_path is here because the training labels' content is fingerprinted instead (a data set may
# move between machines); --mask_path/--score_path likewise (their content is); --ngpu because the
# resolved device is; --stop_epoch and --save_every_steps because stopping (or checkpointing) early and
# resuming gives the uninterrupted run.
NOT_FINGERPRINTED = {"print_freq", "workers", "resume", "overwrite", "evaluate", "save_path", "start_epoch",
                     "download", "data_path", "ngpu", "mask_path", "score_path", "stop_epoch", "save_every_steps"}
RUN_FILES = (CHECKPOINT, BEST, "metrics.json", "subset_indices.npy", "train_labels.npy",
             "label_noise_mask.npy", "corrupted_mask.npy", "curve.png")


def check_writable(path, flag):
    """Fail before any work if `path` could not be created or written; creates nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable")


def find_resume(args):
    """The checkpoint to resume from, or None. Reads only. A save_path holding a run is refused
    unless --resume or --overwrite says what to do with it."""
    check_writable(args.save_path, "--save_path")
    own = os.path.join(args.save_path, CHECKPOINT)
    held = [f for f in (CHECKPOINT, "metrics.json") if os.path.exists(os.path.join(args.save_path, f))]
    if args.resume:
        path = own if args.resume == "auto" else args.resume
        if os.path.isfile(path):
            if held and not args.overwrite and not args.evaluate and not _same_file(path, own):
                raise UserError(f"{args.save_path} already holds another run ({held[0]}), and --resume {path} would "
                                f"continue a different one into it: give an empty --save_path, resume "
                                f"{os.path.join(args.save_path, CHECKPOINT)}, or --overwrite to replace that run")
            return path
        if args.resume != "auto":
            raise UserError(f"--resume {path}: no such checkpoint file")
        if dist.is_main_process() and not args.evaluate:
            print(f"note: --resume: no checkpoint in {args.save_path} yet, starting from scratch")
        return None
    if held and not args.overwrite and not args.evaluate:
        raise UserError(f"{args.save_path} already holds a run ({held[0]}); pass --resume to continue it "
                        f"or --overwrite to start again")
    return None


def _same_file(a, b):
    return os.path.exists(b) and os.path.samefile(a, b)


def resumes_elsewhere(args):
    """--resume PATH names the checkpoint of another folder than --save_path."""
    return args.resume not in ("", "auto") and not _same_file(args.resume, os.path.join(args.save_path, CHECKPOINT))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()


def run_fingerprint(args, **facts):
    """{setting: value} of everything that defines the run: the fingerprinted flags under their
    command-line names, plus `facts` (e.g. device, processes, content hashes) under theirs."""
    fp = {flag_name(k): v for k, v in sorted(vars(args).items()) if k not in NOT_FINGERPRINTED}
    fp.update(facts)
    return fp


def _show(value):
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return f"sha256 {value[:12]}…"
    return repr(value)


def check_fingerprint(ck, fingerprint, path):
    """UserError naming the first setting in which the checkpoint `ck` (read from `path`) differs."""
    was = ck.get("fingerprint")
    if was is None:
        raise UserError(f"{path} was written by an older version of these scripts (no run fingerprint), so "
                        f"its settings cannot be checked; start again with --overwrite")
    was, fingerprint = without_unused(was, "--"), without_unused(fingerprint, "--")
    diffs = []
    for key in sorted(set(was) | set(fingerprint)):
        old, new = was.get(key, "(not set)"), fingerprint.get(key, "(not set)")
        if old != new:
            what = key if key.startswith("--") else f"the {key}"
            diffs.append(f"{what} {_show(old)} (now {_show(new)})")
    if diffs:
        raise UserError(f"{path} is a run with {', '.join(diffs)}: resume it with the same settings, or start "
                        f"again with --overwrite")


def load_checkpoint(path):
    """The dict a training script saved; anything else (a folder, an empty, truncated or foreign file) is
    one line. Loaded with weights_only: a checkpoint of ours holds tensors and plain values only."""
    import pickle

    import torch
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder: give the file, e.g. {os.path.join(path, CHECKPOINT)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        why = ("it is empty" if size == 0 else "it is truncated" if isinstance(e, EOFError) else
               "not a PyTorch checkpoint of tensors and plain values" if isinstance(e, pickle.UnpicklingError)
               else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise UserError(f"cannot read checkpoint {path}: not a complete checkpoint written by train.py or "
                        f"train_subset.py ({why})") from None


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


def _remove_stale_temporaries(save_path):
    """Delete the temporary files of writes that a killed run left half-done (utils.io names them
    .<name>.tmp<pid>); they are never trusted, but a checkpoint's can be gigabytes."""
    for folder in (save_path, os.path.join(save_path, "npy")):
        if os.path.isdir(folder):
            for f in os.listdir(folder):
                if f.startswith(".") and re.search(r"\.tmp\d+$", f):
                    os.remove(os.path.join(folder, f))


def _remove_previous_run(save_path):
    """--overwrite: the previous run's outputs go, so that none of them can be mistaken for the new run's."""
    npy = os.path.join(save_path, "npy")
    stale = [os.path.join(npy, f) for f in (os.listdir(npy) if os.path.isdir(npy) else []) if f.endswith(".npy")]
    logs = [os.path.join(save_path, f) for f in os.listdir(save_path) if re.fullmatch(r"log_seed_\d+\.txt", f)]
    for f in stale + logs + [os.path.join(save_path, f) for f in RUN_FILES]:
        if os.path.exists(f):
            os.remove(f)


def begin_run(args, resuming, fingerprint):
    """Phase 2, after every check passed: the folder, args.json and the log. Returns the Log."""
    if dist.is_main_process():
        ensure_writable_dir(args.save_path, "--save_path")
        _remove_stale_temporaries(args.save_path)
        if args.overwrite and (not resuming or resumes_elsewhere(args)):
            _remove_previous_run(args.save_path)
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            commit = ""
        save_json(os.path.join(args.save_path, "args.json"),
                  {"args": vars(args), "command": " ".join(sys.argv), "cwd": os.getcwd(),
                   "git_commit": commit or None, "fingerprint": fingerprint})
    dist.barrier()
    return Log(args.save_path, args.manualSeed, append=resuming)


def training_cwd(run_folder):
    """The folder a run was started in, so that the relative paths it recorded can be found from anywhere:
    args.json's cwd, or (older runs) its save_path as typed stripped from the run folder; None if unknown."""
    try:
        with open(os.path.join(run_folder, "args.json")) as f:
            recorded = json.load(f)
        if recorded.get("cwd"):
            return recorded["cwd"]
        save_path = recorded["args"]["save_path"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    parts = os.path.normpath(save_path).split(os.sep)
    if os.path.isabs(save_path) or ".." in parts:
        return None
    base = os.path.abspath(run_folder)
    for _ in parts:   # strip save_path's components from the end of the absolute run folder
        base = os.path.dirname(base)
    return base


def write_training_set_files(save_path, data):
    """What --label_noise / --corrupt_ratio did to the training set, (N,) each in dataset order:
    the labels trained on, which labels were flipped, which images were corrupted."""
    if data.flipped is not None:
        save_npy(os.path.join(save_path, "train_labels.npy"), data.targets)
        save_npy(os.path.join(save_path, "label_noise_mask.npy"), data.flipped)
    if data.corrupted is not None:
        save_npy(os.path.join(save_path, "corrupted_mask.npy"), data.corrupted)


def training_set_info(data):
    """metrics.json entries: how many training samples the robustness flags changed."""
    info = {}
    if data.flipped is not None:
        info["num_mislabeled"] = int(data.flipped.sum())
    if data.corrupted is not None:
        info["num_corrupted"] = int(data.corrupted.sum())
    return info
