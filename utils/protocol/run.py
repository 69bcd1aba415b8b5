"""The decision and commit of a run folder: read its record (folder.json) under the lock, decide
(fresh / resume / done / repair, or a refusal with its way on), write, commit last."""
import os
import re
import subprocess
import sys
import time
import uuid

from utils import dist
from utils.errors import UserError
from utils.protocol.files import load_json, remove_file, save_json
from utils.protocol.fingerprint import fingerprint_diffs
from utils.protocol.holder import quick_judgement, read_holder
from utils.protocol.lock import FolderLock
from utils.protocol.manifest import MANIFEST
from utils.protocol.outputs import CHECKPOINT, RUN_FILES, STATE, Log, load_checkpoint


# ------------------------------------------------------------------------------- state of a run folder
def new_run_id():
    return uuid.uuid4().hex[:16]


def read_state(folder):
    """folder.json as a dict ({} when absent or unreadable), with "state" made honest for readers:
    "running" in a folder that no live process holds is "interrupted" (its writer died)."""
    st = load_json(os.path.join(folder, STATE), {})
    if st.get("state") == "running" and quick_judgement(read_holder(folder)) in ("free", "dead"):
        st["state"] = "interrupted"
    return st


def write_state(folder, fresh=False, **fields):
    """Update folder.json (atomically) with `fields`, keeping the others (`fresh`: none of them)."""
    path = os.path.join(folder, STATE)
    st = {} if fresh else load_json(path, {})
    st.update(fields, updated=time.time())
    save_json(path, st)


def training_cwd(run_folder):
    """The folder a run was started in, so that the relative paths it recorded can be found from anywhere:
    args.json's cwd, or (older runs) its save_path as typed stripped from the run folder; None if unknown."""
    recorded = load_json(os.path.join(run_folder, "args.json"), {})
    try:
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


# ------------------------------------------------------------------ the decision for a run folder
# Every refusal of a run folder, with its way on. The ways named (`ways`) are what
# tests/test_protocol.py follows for each one, checking that the command then succeeds.
REFUSALS = {
    "ended_other_settings": ("{folder} holds a {state} run with {diffs}: give the same settings to use it, "
                             "another --save_path, or --overwrite to replace it",
                             ("same_settings", "other_save_path", "overwrite")),
    "done_files_lost": ("{folder}: folder.json says {state} but metrics.json is missing or unreadable and there is "
                        "no " + CHECKPOINT + " to rebuild it from: --overwrite to train it again, or another "
                        "--save_path", ("overwrite", "other_save_path")),
    "stopped_no_resume": ("{folder} holds a run stopped after {epochs} epochs: pass --resume to continue it, or "
                          "--overwrite to start again", ("resume", "overwrite")),
    "stopped_no_checkpoint": ("{folder} holds a run stopped after {epochs} epochs but no " + CHECKPOINT + " to "
                              "resume it from: --overwrite to start again, or another --save_path",
                              ("overwrite", "other_save_path")),
    "run_no_resume": ("{folder} already holds a run ({held}); pass --resume to continue it or --overwrite to start "
                      "again", ("resume", "overwrite")),
    "files_no_checkpoint": ("{folder} holds files of a run ({held}) but no " + CHECKPOINT + " to resume it from: "
                            "--overwrite to start again (its files are removed), or another --save_path",
                            ("overwrite", "other_save_path")),
    "checkpoint_other_settings": ("{path} is a run with {diffs}: resume it with the same settings, or --overwrite "
                                  "to start again", ("same_settings", "overwrite")),
    "checkpoint_unversioned": ("{path} was written by an older version of these scripts (no run fingerprint), so "
                               "its settings cannot be checked: --overwrite to start again", ("overwrite",)),
    "resume_into_other_run": ("{folder} already holds another run ({held}), and --resume {path} would continue a "
                              "different one into it: give an empty --save_path, or --overwrite to replace that run",
                              ("other_save_path", "overwrite")),
    "resume_from_other_settings": ("{path} is a run with {diffs}: give the settings it was run with to continue it "
                                   "into --save_path, or start afresh without --resume {path}",
                                   ("same_settings", "drop_resume")),
}


def refusal(key, **fields):
    return UserError(REFUSALS[key][0].format(**fields))


def _same_file(a, b):
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def run_files(save_path):
    """The files of a previous run in save_path (its epoch files included), the first few."""
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(save_path, f))]
    npy = os.path.join(save_path, "npy")
    if os.path.isdir(npy):
        held += sorted(os.path.join("npy", f) for f in os.listdir(npy) if f.endswith(".npy"))[:3]
    return held


def _read_metrics(folder):
    return load_json(os.path.join(folder, "metrics.json"))


def decide_run(folder, fingerprint, *, resume, overwrite, stop_epoch=None):
    """The decision for a run folder, from what it holds now (read under its lock): a dict with
    "action" in fresh / resume / done / repair, "remove" (the previous run's files go first) and
    "resume_from" (the checkpoint to load; its fingerprint is checked by `check_checkpoint`).
    Raises the UserError of REFUSALS where the command cannot go on."""
    own = os.path.join(folder, CHECKPOINT)
    state = read_state(folder)
    st, held, has_ck = state.get("state"), run_files(folder), os.path.isfile(own)
    fresh = {"action": "fresh", "remove": bool(held), "resume_from": None}
    if resume not in ("", "auto") and not _same_file(resume, own):      # continue another folder's run here
        if not os.path.isfile(resume):
            raise UserError(f"--resume {resume}: no such checkpoint file")
        if held and not overwrite:
            raise refusal("resume_into_other_run", folder=folder, held=held[0], path=resume)
        return {"action": "resume", "remove": bool(held), "resume_from": resume, "elsewhere": True}
    if st in ("finished", "stopped"):
        diffs = fingerprint_diffs(state.get("fingerprint") or {}, fingerprint)
        if diffs:
            if overwrite:
                return fresh
            raise refusal("ended_other_settings", folder=folder, state=st, diffs=", ".join(diffs))
        completed = state.get("completed_epochs") or 0
        if st == "finished" or (stop_epoch is not None and stop_epoch <= completed):
            if _read_metrics(folder) is not None:
                return {"action": "done", "remove": False, "resume_from": None}
            if has_ck:
                return {"action": "repair", "remove": False, "resume_from": own}   # fit rewrites metrics.json
            if overwrite:
                return fresh
            raise refusal("done_files_lost", folder=folder, state=st)
        if has_ck and resume:
            return {"action": "resume", "remove": False, "resume_from": own}
        if overwrite:
            return fresh
        raise refusal("stopped_no_resume" if has_ck else "stopped_no_checkpoint", folder=folder, epochs=completed)
    if has_ck:
        if resume:
            return {"action": "resume", "remove": False, "resume_from": own}
        if overwrite:
            return fresh
        raise refusal("run_no_resume", folder=folder, held=held[0])
    if held:
        if overwrite:
            return fresh
        if resume and st in ("running", "interrupted", "failed") and \
                not fingerprint_diffs(state.get("fingerprint") or {}, fingerprint):
            return {**fresh, "restart": st}     # this run, killed before its first checkpoint: requeued
        raise refusal("files_no_checkpoint", folder=folder, held=", ".join(held[:3]))
    return fresh


def check_checkpoint(decision, ck, fingerprint, *, overwrite, stop_epoch=None):
    """The decision once the checkpoint `ck` it resumes from is read: its fingerprint must be this
    command's (--overwrite replaces a run of other settings in its own folder instead), and a
    --stop_epoch that it has reached is already done. Returns the (possibly changed) decision."""
    path, was = decision["resume_from"], ck.get("fingerprint")
    diffs = None if was is None else fingerprint_diffs(was, fingerprint)
    if decision.get("elsewhere"):
        if was is None or diffs:
            raise refusal("resume_from_other_settings", path=path,
                          diffs=", ".join(diffs) if diffs else "no run fingerprint (an older version)")
        return decision
    if was is None or diffs:
        if overwrite:
            return {"action": "fresh", "remove": True, "resume_from": None}
        if was is None:
            raise refusal("checkpoint_unversioned", path=path)
        raise refusal("checkpoint_other_settings", path=path, diffs=", ".join(diffs))
    if stop_epoch is not None and ck.get("epoch", 0) >= stop_epoch:
        return {**decision, "action": "done", "epochs": ck.get("epoch", 0)}
    return decision


class RunFolder:
    """A run folder opened for writing (`open_run`): the lock (rank 0), the decision, the checkpoint to
    resume from. `done` holds the metrics of work already done (nothing to write). Then `begin()` makes
    the first writes, `with folder:` surrounds the training, `end(result)` commits: an exception records
    "failed" (or "interrupted" for Ctrl-C and signals) and the lock is released either way. Only the
    process that was rank 0 when the folder was opened writes its files, also after a preemption tore
    the process group down."""

    def __init__(self, args, lock, decision, ck, fingerprint, main):
        self.args, self.lock, self.decision, self.ck, self.fingerprint = args, lock, decision, ck, fingerprint
        self.main, self.log, self.run_id, self.done = main, None, None, None
        self.resume_from = decision["resume_from"] if ck is not None else None

    def begin(self, run_id=None):
        """The first writes, after every check passed: stale temporaries go; folder.json says "running"
        for this run (first: it retracts the record of a run being replaced, so that a removal cut short
        never leaves a folder that says "finished"); then the previous run's files go (if decided),
        then args.json and the log."""
        from utils import dist
        self.run_id = run_id or new_run_id()
        if self.main:
            save_path = self.args.save_path
            if self.lock is not None:
                self.lock.ensure_owned()
            _remove_stale_temporaries(save_path)          # ours now: no live writer owns a temporary here
            write_state(save_path, fresh=self.decision["remove"],
                        kind="train_subset" if hasattr(self.args, "subset_rate") else "train",
                        run_id=self.run_id, fingerprint=self.fingerprint, state="running", completed_epochs=None,
                        error=None)
            if self.decision["remove"]:
                _remove_previous_run(save_path)
            try:
                commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                        cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                commit = ""
            save_json(os.path.join(save_path, "args.json"),
                      {"args": vars(self.args), "command": " ".join(sys.argv), "cwd": os.getcwd(),
                       "git_commit": commit or None})
        dist.barrier()
        self.log = Log(self.args.save_path, self.args.manualSeed, append=self.ck is not None, main=self.main)
        return self

    def end(self, result):
        """The commit: folder.json says finished (or stopped), after everything it vouches for."""
        if self.main:
            if self.lock is not None:
                self.lock.ensure_owned()
            write_state(self.args.save_path, state="finished" if result.get("finished") else "stopped",
                        completed_epochs=result.get("completed_epochs"), final_acc=result.get("final_acc"))

    def release(self, refused=False):
        if self.lock is not None:
            self.lock.release(refused)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from utils.errors import FolderLost, Preempted
        # a run that lost its folder writes nothing there, its state neither (the folder is another's)
        if exc is not None and self.main and self.run_id is not None and not getattr(self.lock, "lost", None):
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, Preempted))
            try:
                write_state(self.args.save_path, state="interrupted" if interrupted else "failed",
                            error=f"{type(exc).__name__}: {exc}"[:500])
            except (OSError, FolderLost):   # a full or read-only disk: "running" with a free lock reads as
                pass                        # interrupted; a folder found lost only now: not ours to write
        self.release()
        return False


def open_run(args, fingerprint, stop_epoch=None):
    """The write protocol's first half for a run folder: take the lock (rank 0), read what the folder
    holds, decide, read the checkpoint to resume from and check it; every rank gets the decision (a
    refusal ends every rank). Returns the RunFolder (`done` set when there is nothing to do: then the
    lock is released already)."""
    from utils import dist
    main = dist.is_main_process()
    lock = decision = refused = ck = None
    if main:
        try:
            lock = FolderLock(args.save_path, "--save_path").acquire()
            decision = decide_run(args.save_path, fingerprint, resume=args.resume, overwrite=args.overwrite,
                                  stop_epoch=stop_epoch)
            if decision["resume_from"]:
                ck = load_checkpoint(decision["resume_from"])
                decision = check_checkpoint(decision, ck, fingerprint, overwrite=args.overwrite,
                                            stop_epoch=stop_epoch)
        except UserError as e:
            refused = str(e)
    refused, decision = dist.broadcast_object((refused, decision))
    folder = RunFolder(args, lock, decision or {}, None, fingerprint, main)
    if refused or decision["action"] == "done":       # nothing written: no trace left
        folder.release(refused=True)
    if refused:
        raise UserError(refused)
    if decision["action"] == "done":
        folder.done = _read_metrics(args.save_path) or {"completed_epochs": decision.get("epochs")}
        return folder
    if decision["resume_from"]:
        folder.ck = ck if ck is not None else load_checkpoint(decision["resume_from"])
        folder.resume_from = decision["resume_from"]
        if decision["action"] == "repair" and main:
            print(f"note: {args.save_path}: metrics.json was lost; rebuilding it from {CHECKPOINT}")
    elif args.resume and main and decision.get("restart"):
        print(f"note: --resume: the run in {args.save_path} ({decision['restart']}) never reached a checkpoint; "
              f"starting it from scratch (the files it left are removed)")
    elif args.resume and main and decision["action"] == "fresh" and not decision["remove"]:
        print(f"note: --resume: no checkpoint in {args.save_path} yet, starting from scratch")
    return folder


def _remove_stale_temporaries(save_path):
    """Delete the temporary files of writes that a killed run left half-done beside their files (older
    versions, and subfolders on another file system; utils.protocol.files names them .<name>.tmp<pid>);
    they are never trusted, but a checkpoint's can be gigabytes. Staging folders go when the lock is taken."""
    for folder in (save_path, os.path.join(save_path, "npy"), os.path.join(save_path, "selection")):
        if os.path.isdir(folder):
            for f in os.listdir(folder):
                if f.startswith(".") and re.search(r"\.tmp\d+$", f) and not f.startswith(".holder."):
                    os.remove(os.path.join(folder, f))


def _remove_previous_run(save_path):
    """The previous run's outputs go, so that none of them can be mistaken for the new run's; folder.json
    already speaks for the new run. Its checkpoint goes first (a removal cut short leaves nothing that
    resumes the old run under the new record)."""
    stale = [os.path.join(save_path, sub, f) for sub in ("npy", "selection")
             if os.path.isdir(os.path.join(save_path, sub)) for f in os.listdir(os.path.join(save_path, sub))
             if f.endswith(".npy") or f == MANIFEST]
    logs = [os.path.join(save_path, f) for f in os.listdir(save_path) if re.fullmatch(r"log_seed_\d+\.txt", f)]
    for f in [os.path.join(save_path, f) for f in RUN_FILES if f != STATE] + stale + logs:
        if os.path.exists(f):
            remove_file(f)


def _pct(value):
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "?"


def already_done(args, metrics):
    """The same command on a run that is done: say so, write nothing."""
    if dist.is_main_process():
        what = ("finished" if metrics.get("finished") else
                f"stopped after epoch {metrics.get('completed_epochs')}, which holds the epochs asked")
        print(f"already {what}: {args.save_path} (final {_pct(metrics.get('final_acc'))}, best "
              f"{_pct(metrics.get('best_acc'))}); nothing rewritten")
    dist.cleanup()
    return metrics
