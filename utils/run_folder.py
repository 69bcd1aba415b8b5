"""The run folder (--save_path) of train.py and train_subset.py: decide, then write.

Two phases, never mixed, so that a refused command leaves the folder byte-identical:
1. checks that read only: `find_resume` (is another process writing the folder? is there a run, may
   we continue or overwrite it?), then, once the run fingerprint is known, `settle` (is that run
   already finished with these settings - then nothing is done, --overwrite or not - or a checkpoint
   of exactly these settings to resume?);
2. `begin_run`: take the folder's lock, remove what a killed write left, write args.json and
   folder.json (state "running"), open the log; `RunFolder.end` records the final state.

The run fingerprint (utils/folder.py) is every resolved flag that can change a result plus facts the
flags do not show (device type, number of processes, the content of the training labels and of the
mask and score files). It is stored in every checkpoint and in folder.json and compared on resume.
"""
import json
import os
import re
import subprocess
import sys

from tqdm import tqdm

from . import dist
from .errors import Preempted, UserError
from .folder import (LOCK, MANIFEST, STATE, FolderLock, array_sha256, check_fingerprint,  # noqa: F401 (re-exported)
                     check_unlocked, file_sha256, fingerprint_diffs, new_run_id, read_state, run_fingerprint,
                     training_cwd, write_state, NOT_FINGERPRINTED)
from .io import ensure_writable_dir, save_json, save_npy

CHECKPOINT, BEST = "checkpoint.pth.tar", "model_best.pth.tar"
# what a previous run leaves in its folder (besides npy/ and the logs); .lock is not one of them
RUN_FILES = (CHECKPOINT, BEST, "metrics.json", "subset_indices.npy", "train_labels.npy",
             "label_noise_mask.npy", "corrupted_mask.npy", "curve.png", STATE, "args.json")


def check_writable(path, flag):
    """Fail before any work if `path` could not be created or written; creates nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable")


def run_files(save_path):
    """The files of a previous run in save_path (its epoch files included), the first few."""
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(save_path, f))]
    npy = os.path.join(save_path, "npy")
    if os.path.isdir(npy):
        held += sorted(os.path.join("npy", f) for f in os.listdir(npy) if f.endswith(".npy"))[:3]
    return held


def find_resume(args):
    """The checkpoint to resume from, or None. Reads only. A folder another process writes is refused;
    a save_path holding a run is refused unless --resume or --overwrite says what to do with it (a
    finished or stopped run is left to `settle`, which needs the fingerprint)."""
    check_writable(args.save_path, "--save_path")
    if args.evaluate:
        path = os.path.join(args.save_path, CHECKPOINT) if args.resume == "auto" else args.resume
        return path if args.resume and os.path.isfile(path) else None
    if os.path.isdir(args.save_path):
        check_unlocked(args.save_path, "--save_path")
    own = os.path.join(args.save_path, CHECKPOINT)
    held = run_files(args.save_path)
    ended = read_state(args.save_path).get("state") in ("finished", "stopped")
    if args.resume:
        path = own if args.resume == "auto" else args.resume
        if os.path.isfile(path):
            if held and not args.overwrite and not _same_file(path, own):
                raise UserError(f"{args.save_path} already holds another run ({held[0]}), and --resume {path} would "
                                f"continue a different one into it: give an empty --save_path, resume "
                                f"{os.path.join(args.save_path, CHECKPOINT)}, or --overwrite to replace that run")
            return path
        if args.resume != "auto":
            raise UserError(f"--resume {path}: no such checkpoint file")
    if held and not args.overwrite and not ended:
        if args.resume:
            raise UserError(f"{args.save_path} holds files of a run ({', '.join(held[:3])}) but no {CHECKPOINT} to "
                            f"resume it from: --overwrite to start again (its files are removed), or another --save_path")
        raise UserError(f"{args.save_path} already holds a run ({held[0]}); pass --resume to continue it "
                        f"or --overwrite to start again")
    if args.resume and not held and dist.is_main_process():
        print(f"note: --resume: no checkpoint in {args.save_path} yet, starting from scratch")
    return None


def settle(args, fingerprint, resume_from):
    """Phase 1, once the fingerprint is known: (checkpoint dict or None, metrics of a run that is
    already done or None). The same command on a finished run (or on a run stopped at this
    --stop_epoch) is done: nothing to train, nothing to rewrite. Other settings on an ended run are
    refused, listing the differences, unless --overwrite."""
    state = read_state(args.save_path)
    ended = state.get("state") in ("finished", "stopped")
    diffs = fingerprint_diffs(state.get("fingerprint") or {}, fingerprint) if ended else []
    # --overwrite replaces a run of other settings; a done run of these very settings is never redone
    if ended and not resumes_elsewhere(args) and not (diffs and args.overwrite):
        done = state["state"] == "finished" or getattr(args, "stop_epoch", None) == state.get("completed_epochs")
        if diffs:
            raise UserError(f"{args.save_path} holds a {state['state']} run with {', '.join(diffs)}: give the same "
                            f"settings to use it, another --save_path, or --overwrite to replace it")
        if done:
            try:
                with open(os.path.join(args.save_path, "metrics.json")) as f:
                    return None, json.load(f)
            except (OSError, ValueError):
                raise UserError(f"{args.save_path}: folder.json says {state['state']} but metrics.json is missing or "
                                f"unreadable: --overwrite to train it again") from None
        if not resume_from and not args.overwrite:
            raise UserError(f"{args.save_path} holds a run stopped after {state.get('completed_epochs')} epochs; pass "
                            f"--resume to continue it, or --overwrite to start again"
                            if os.path.exists(os.path.join(args.save_path, CHECKPOINT)) else
                            f"{args.save_path} holds a run stopped after {state.get('completed_epochs')} epochs but no "
                            f"{CHECKPOINT} to resume it from: --overwrite to start again, or another --save_path")
    if not resume_from:
        return None, None
    ck = load_checkpoint(resume_from)
    check_fingerprint(ck, fingerprint, resume_from)
    return ck, None


def already_done(args, metrics):
    """The same command on a run that is done: say so, write nothing."""
    if dist.is_main_process():
        what = "finished" if metrics.get("finished") else f"stopped after epoch {metrics.get('completed_epochs')} as asked"
        print(f"already {what}: {args.save_path} (final {metrics.get('final_acc')}%, best {metrics.get('best_acc')}%); "
              f"nothing rewritten")
    dist.cleanup()
    return metrics


def _same_file(a, b):
    return os.path.exists(b) and os.path.samefile(a, b)


def resumes_elsewhere(args):
    """--resume PATH names the checkpoint of another folder than --save_path."""
    return args.resume not in ("", "auto") and not _same_file(args.resume, os.path.join(args.save_path, CHECKPOINT))


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
    stale = [os.path.join(npy, f) for f in (os.listdir(npy) if os.path.isdir(npy) else [])
             if f.endswith(".npy") or f == MANIFEST]
    logs = [os.path.join(save_path, f) for f in os.listdir(save_path) if re.fullmatch(r"log_seed_\d+\.txt", f)]
    for f in stale + logs + [os.path.join(save_path, f) for f in RUN_FILES]:
        if os.path.exists(f):
            os.remove(f)


class RunFolder:
    """The run folder while this process writes it: `log`, `run_id`, the lock (rank 0), the state.
    Use `with run:` around the training, and `run.end(result)` at its end: an exception records the
    state "failed" (or "interrupted" for Ctrl-C and signals) and the lock is released either way."""

    def __init__(self, args, log, lock, run_id):
        self.args, self.log, self.lock, self.run_id = args, log, lock, run_id

    def end(self, result):
        if dist.is_main_process():
            write_state(self.args.save_path, state="finished" if result.get("finished") else "stopped",
                        completed_epochs=result.get("completed_epochs"), final_acc=result.get("final_acc"))

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and dist.is_main_process():
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, Preempted))
            try:
                write_state(self.args.save_path, state="interrupted" if interrupted else "failed",
                            error=f"{type(exc).__name__}: {exc}"[:500])
            except OSError:   # a full or read-only disk: "running" with a free lock reads as interrupted
                pass
        if self.lock is not None:
            self.lock.release()
        return False


def begin_run(args, resuming, fingerprint, run_id=None):
    """Phase 2, after every check passed: the folder, its lock, args.json, folder.json and the log.
    Returns the RunFolder. `run_id` names the run that the epochs belong to (a resumed run keeps its
    own: the checkpoint's run_info has it)."""
    lock, refused = None, None
    run_id = run_id or new_run_id()
    if dist.is_main_process():
        ensure_writable_dir(args.save_path, "--save_path")
        try:
            lock = FolderLock(args.save_path, "--save_path").acquire()
        except UserError as e:
            refused = str(e)
    refused = dist.broadcast_object(refused)   # every rank stops, not only the one that tried
    if refused:
        raise UserError(refused)
    if dist.is_main_process():
        _remove_stale_temporaries(args.save_path)   # ours now: no live writer owns a temporary here
        if args.overwrite and (not resuming or resumes_elsewhere(args)):
            _remove_previous_run(args.save_path)
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            commit = ""
        save_json(os.path.join(args.save_path, "args.json"),
                  {"args": vars(args), "command": " ".join(sys.argv), "cwd": os.getcwd(),
                   "git_commit": commit or None})
        write_state(args.save_path, kind="train_subset" if hasattr(args, "subset_rate") else "train", run_id=run_id,
                    fingerprint=fingerprint, state="running", completed_epochs=None, error=None)
    dist.barrier()
    return RunFolder(args, Log(args.save_path, args.manualSeed, append=resuming), lock, run_id)


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
