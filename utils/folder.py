"""What an output folder holds and who writes it: the one owner of a folder's identity and of the
protocol by which every script writes one.

Every folder the scripts write (a run's --save_path, a scoring's --mask_path) carries its identity:
- `.holder.json`: the record of the one process writing it now (absent = free): its machine, pid,
  SLURM job and restart count, and a heartbeat counter it advances every HEARTBEAT_S seconds.
  Written atomically (a complete temporary file, then link/rename), so a reader never sees half a
  record; a record that cannot be read counts as held, never as dead.
- `.lock`: an empty file the writer holds an exclusive flock on (never deleted: deleting a flocked
  file lets two processes lock two inodes of one name). Where the file system has no flock (Lustre
  `-o noflock`: ENOSYS), or a dead node still holds it cluster-wide, the record alone decides.
- `folder.json` (runs): what wrote it (kind, run id, fingerprint) and its state: running, stopped
  (--stop_epoch), finished, failed or interrupted.
- `npy/manifest.json` (dynamics): per recorded epoch, the run id that wrote it and each file's size
  and CRC-32, written right after the epoch's files (utils/scoring.py checks it).
- `info_<tag>.json` (scorings): what was scored from which inputs, written last (importance_evaluation.py).

The write protocol, the same for a run folder and a scoring folder: take the lock -> read the record
of what the folder holds -> decide (fresh / resume / already done / refuse; `decide_run`) -> write ->
check that the lock is still ours -> commit last (the file that says "done"). Nothing is decided from
what was read before the lock was held. Every refusal names its way on (REFUSALS), and following it
works (tests/test_protocol.py follows each one).

Liveness of a holder is judged on the reader's own clock, never by comparing timestamps written by
another host: on the same machine (same host, boot and pid namespace) a dead pid is dead at once; a
holder of the same SLURM job with a lower restart count is the previous life of a requeued job (dead),
with the same restart count another task of the live job (alive); otherwise the holder is alive while
its heartbeat changes within GRACE_S seconds that the reader waits itself.
"""
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib

import numpy as np
from tqdm import tqdm

from .args import flag_name, without_unused
from .errors import UserError
from .io import ensure_writable_dir, save_json

# Flags that cannot change what a run computes: where it is, how it reports, how it is resumed.
# --data_path is here because the training labels' content is fingerprinted instead (a data set may
# move between machines); --mask_path/--score_path likewise (their content is); --ngpu because the
# resolved device is; --stop_epoch and --save_every_steps because stopping (or checkpointing) early and
# resuming gives the uninterrupted run.
NOT_FINGERPRINTED = {"print_freq", "workers", "resume", "overwrite", "evaluate", "save_path", "start_epoch",
                     "download", "data_path", "ngpu", "mask_path", "score_path", "stop_epoch", "save_every_steps"}
LOCK, HOLDER, STATE, MANIFEST = ".lock", ".holder.json", "folder.json", "manifest.json"
CHECKPOINT, BEST = "checkpoint.pth.tar", "model_best.pth.tar"
# what a previous run leaves in its folder (besides npy/ and the logs); the lock files are not one of them
RUN_FILES = (CHECKPOINT, BEST, "metrics.json", "subset_indices.npy", "train_labels.npy",
             "label_noise_mask.npy", "corrupted_mask.npy", "curve.png", STATE, "args.json")
UNLOCK = "python -m utils.folder unlock"     # the manual takeover, run from the repository


def _seconds(name, default):
    """A timing of the lock protocol; TDDS_LOCK_<NAME> overrides it (tests, and clusters with slow caches)."""
    return float(os.environ.get(f"TDDS_LOCK_{name}", default))


def heartbeat_s():
    return _seconds("HEARTBEAT_S", 10)      # how often a holder advances its heartbeat


def grace_s():
    return _seconds("GRACE_S", 60)          # a holder elsewhere whose heartbeat stays still this long is dead


def wait_s():
    return _seconds("WAIT_S", 10)           # how long a writer waits for a kernel lock held without a record


# ----------------------------------------------------------------------------------- the fingerprint
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


def fingerprint_diffs(was, now):
    """["--epochs 3 (now 5)", ...]: every setting in which two fingerprints differ (settings without
    effect, e.g. the noise type at noise 0, ignored)."""
    was, now = without_unused(was, "--"), without_unused(now, "--")
    diffs = []
    for key in sorted(set(was) | set(now)):
        old, new = was.get(key, "(not set)"), now.get(key, "(not set)")
        if old != new:
            what = key if key.startswith("--") else f"the {key}"
            diffs.append(f"{what} {_show(old)} (now {_show(new)})")
    return diffs


# ------------------------------------------------------------------------------ the holder's record
def machine_identity():
    """Who can check this process's pid: the host name, the kernel's boot id and the pid namespace, so
    that containers sharing a host name (or a host) never judge each other's pids. TDDS_MACHINE_ID
    overrides it (tests simulate a second host with it)."""
    if os.environ.get("TDDS_MACHINE_ID"):
        return os.environ["TDDS_MACHINE_ID"]
    parts = [socket.gethostname()]
    for probe in (lambda: open("/proc/sys/kernel/random/boot_id").read().strip(),
                  lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(probe())
        except OSError:
            parts.append("?")
    return "/".join(parts)


def _pid_start(pid):
    """The start time of process `pid` (clock ticks since boot), or None: a reused pid has another."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid, start=None):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (TypeError, OverflowError, ValueError):
        return False
    return start is None or _pid_start(pid) in (None, start)


def _slurm():
    """(job, restart count) of the SLURM job this process belongs to; a requeued job keeps its job id
    and counts up SLURM_RESTART_COUNT."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    try:
        restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restart = 0
    return (f"{job}_{task}" if job and task else job), restart


_UNREADABLE = {"unreadable": True}


def read_holder(folder):
    """The record of the process writing `folder`: None when free, _UNREADABLE-like {"unreadable": True}
    when it cannot be read or parsed (which counts as held)."""
    try:
        with open(os.path.join(folder, HOLDER), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return dict(_UNREADABLE)
    try:
        rec = json.loads(raw)
        assert isinstance(rec, dict) and "nonce" in rec
        return rec
    except (ValueError, AssertionError, UnicodeDecodeError):
        return {**_UNREADABLE, "raw": raw[:200]}


def describe_holder(h):
    if not h:
        return "another process"
    if h.get("unreadable"):
        return "a process whose lock record cannot be read"
    job = f", SLURM job {h['slurm_job']} (restart {h.get('slurm_restart', 0)})" if h.get("slurm_job") else ""
    return f"pid {h.get('pid')} on {h.get('host')}{job} ({h.get('command', '?')})"


def quick_judgement(h):
    """What a reader can tell at once: "free", "dead" (same machine, pid gone; or a SLURM job's earlier
    life) or "alive"; "unknown" for a holder elsewhere, whose liveness needs watching its heartbeat."""
    if h is None:
        return "free"
    if h.get("unreadable"):
        return "alive"
    if h.get("machine") == machine_identity():
        return "alive" if _pid_alive(h.get("pid"), h.get("pid_start")) else "dead"
    job, restart = _slurm()
    if job and h.get("slurm_job") == job:
        return "dead" if int(h.get("slurm_restart") or 0) < restart else "alive"
    return "unknown"


def judge_holder(folder, h, note=print):
    """(alive, why) for the record `h` of `folder`, judged on this process's own clock: where a quick
    judgement cannot tell, watch the record for up to grace_s() seconds; any change means alive."""
    quick = quick_judgement(h)
    if quick == "free":
        return False, ""
    if quick == "dead":
        same = h.get("machine") == machine_identity()
        return False, "is no longer running" if same else "was an earlier run of this SLURM job (requeued)"
    if quick == "alive":
        return True, ""
    note(f"note: {folder} is held by {describe_holder(h)} on another machine; watching its heartbeat for up "
         f"to {grace_s():.0f} s to see whether it is alive")
    now = _watch(folder, h)
    if now != h:
        return (now is not None), ""     # a heartbeat (alive), or released meanwhile (free)
    return False, f"has not advanced its heartbeat for {grace_s():.0f} s (measured here)"


def _watch(folder, h):
    """Watch `folder`'s record for up to grace_s() seconds of this process's clock: the first record that
    differs from `h` (None: released), or `h` if it stayed the same."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace_s():
        time.sleep(min(0.05 + (time.monotonic() - t0) / 20, 1.0))
        now = read_holder(folder)
        if now != h:
            return now
    return h


def _write_record(folder, rec, exclusive):
    """Write the record atomically: a complete temporary file, then link (exclusive: fails with
    FileExistsError if a record exists) or rename over it."""
    path = os.path.join(folder, HOLDER)
    tmp = os.path.join(folder, f".holder.{rec['nonce']}.{rec['heartbeat']}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(rec, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _clear_record(folder, expected):
    """Take away the record `expected` (judged dead): rename it aside (one process wins) and check
    that what was taken is that record; a newer one taken by mistake is put back. True if cleared."""
    path = os.path.join(folder, HOLDER)
    aside = os.path.join(folder, f".holder.stale.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    try:
        with open(aside) as f:
            taken = json.load(f)
    except (OSError, ValueError):
        taken = dict(_UNREADABLE)
    if taken.get("nonce") != expected.get("nonce") and not expected.get("unreadable"):
        try:
            os.link(aside, path)          # put the live one back (fails only if a third took the folder)
        except FileExistsError:
            pass
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def holder_message(flag, folder, h):
    return (f"{flag} {folder} is being written by {describe_holder(h)}: one writer per folder; wait "
            f"for it to end, or if it is dead: {UNLOCK} {folder}")


_HELD = set()   # the locks this process holds: released at the end of a command (utils.errors.run) at the latest


def release_all():
    for lock in list(_HELD):
        lock.release()


class FolderLock:
    """The exclusive writer of `folder` until release() (or the process's end)."""

    def __init__(self, folder, flag):
        self.folder, self.flag = folder, flag
        self.fd, self.rec, self.lost, self.record_only = None, None, False, False
        self.created = []      # the folder and lock file this process created (a refusal takes them back)
        self._stop = threading.Event()

    # -- the kernel lock, where the file system has one
    def _flock(self, note):
        """Hold the exclusive flock on .lock: True; False where the file system has none, or where a
        process that wrote no record keeps it beyond wait_s() (a dead node's cluster-wide lock)."""
        path = os.path.join(self.folder, LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self.created.append(path)
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)
        waited, said = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except BlockingIOError:
                h = read_holder(self.folder)
                if h is not None:           # a writer: its record decides (alive, or a dead node's lock)
                    alive, why = judge_holder(self.folder, h, note)
                    if alive:
                        os.close(fd)
                        raise UserError(holder_message(self.flag, self.folder, h))
                    if read_holder(self.folder) == h:
                        note(f"note: {self.folder}: the kernel lock is still held for {describe_holder(h)}, which "
                             f"{why or 'has ended'} (a dead node's lock on a cluster file system); going on with the "
                             f"lock record alone")
                        os.close(fd)
                        return False
                    continue
                if time.monotonic() - waited > wait_s():
                    note(f"note: {self.folder}: the kernel lock has been held for {wait_s():.0f} s by a process "
                         f"that wrote no lock record (a dead node's lock on a cluster file system?); going on with "
                         f"the lock record alone")
                    os.close(fd)
                    return False
                if not said:
                    note(f"note: {self.folder}: waiting for a reader or a starting writer to let go of its lock")
                    said = True
                time.sleep(0.05)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL):
                    note(f"note: {self.folder}: this file system has no flock ({os.strerror(e.errno)}); one writer "
                         f"per folder is kept by the lock record alone")
                    return False
                raise

    def acquire(self, note=print):
        if not os.path.isdir(self.folder):
            self.created.append(self.folder)
        ensure_writable_dir(self.folder, self.flag)
        self.record_only = not self._flock(note)
        job, restart = _slurm()
        self.rec = {"nonce": uuid.uuid4().hex, "machine": machine_identity(), "host": socket.gethostname(),
                    "pid": os.getpid(), "pid_start": _pid_start(os.getpid()), "slurm_job": job,
                    "slurm_restart": restart, "started": time.time(), "heartbeat": 0,
                    "command": " ".join(sys.argv)[:300]}
        for _ in range(100):
            try:
                _write_record(self.folder, self.rec, exclusive=True)
                break
            except FileExistsError:
                h = read_holder(self.folder)
                if h is None:
                    continue
                alive, why = judge_holder(self.folder, h, note)
                if alive:
                    self.release(refused=True)
                    raise UserError(holder_message(self.flag, self.folder, h))
                if _clear_record(self.folder, h) and why:
                    note(f"note: {self.folder}: took over the lock of {describe_holder(h)}, which {why}")
        else:
            self.release(refused=True)
            raise UserError(f"{self.flag} {self.folder}: could not take the lock (its record keeps changing)")
        threading.Thread(target=self._beat, daemon=True).start()
        _HELD.add(self)
        return self

    def _beat(self):
        while not self._stop.wait(heartbeat_s()):
            if not self.owned():
                self.lost = True
                return
            try:
                self.rec["heartbeat"] += 1
                _write_record(self.folder, self.rec, exclusive=False)
            except OSError:        # a full disk: the record stays; elsewhere it will read as dead after the grace
                pass

    def owned(self):
        h = read_holder(self.folder)
        return not self.lost and h is not None and h.get("nonce") == self.rec["nonce"]

    def ensure_owned(self):
        """Before a commit: stop with one line (committing nothing) if the folder was taken over."""
        if self.rec is not None and not self.owned():
            self.lost = True
            raise UserError(f"{self.flag} {self.folder}: this process no longer holds the folder's lock (now "
                            f"{describe_holder(read_holder(self.folder))}): nothing was committed; check who writes "
                            f"it, then run the same command with --resume")

    def _unflock(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def release(self, refused=False):
        """Let go of the folder; `refused`: nothing was written, so the folder and the lock file that
        acquire() created go too (a refused command leaves no trace; the record keeps a late opener of
        the removed lock file from writing beside a new one)."""
        self._stop.set()
        try:
            if self.rec is not None and self.owned():
                os.remove(os.path.join(self.folder, HOLDER))
        except OSError:
            pass
        self.rec = None
        self._unflock()
        _HELD.discard(self)
        for path in reversed(self.created if refused else []):
            try:
                os.rmdir(path) if path == self.folder else os.remove(path)
            except OSError:
                pass
        self.created = []


def check_unlocked(folder, flag):
    """For readers: refuse (UserError) when a process may be writing `folder`. Takes no lock, waits for
    nothing: a holder elsewhere counts as writing."""
    h = read_holder(folder)
    if quick_judgement(h) not in ("free", "dead"):
        raise UserError(holder_message(flag, folder, h))


def unlock(folder, note=print):
    """The manual takeover: clear the record of a holder known to be dead; refused while the holder
    is alive (its pid on this machine, or its record changing over the grace period)."""
    h = read_holder(folder)
    if h is None:
        note(f"{folder} is not locked")
        return 0
    alive = _watch(folder, h) != h if h.get("unreadable") else judge_holder(folder, h, note)[0]
    if alive:
        raise UserError(f"{folder}: {describe_holder(h)} is alive (its pid runs, or its lock record changed "
                        f"while watched): stop it first")
    _clear_record(folder, h)
    note(f"{folder}: cleared the lock record of {describe_holder(h)}; the next command takes the folder")
    return 0


# ------------------------------------------------------------------------------- state of a run folder
def new_run_id():
    return uuid.uuid4().hex[:16]


def read_state(folder):
    """folder.json as a dict ({} when absent or unreadable), with "state" made honest for readers:
    "running" in a folder that no live process holds is "interrupted" (its writer died)."""
    try:
        with open(os.path.join(folder, STATE)) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(st, dict):
        return {}
    if st.get("state") == "running" and quick_judgement(read_holder(folder)) in ("free", "dead"):
        st["state"] = "interrupted"
    return st


def write_state(folder, **fields):
    """Update folder.json (atomically) with `fields`, keeping the others."""
    path = os.path.join(folder, STATE)
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    st.update(fields, updated=time.time())
    save_json(path, st)


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


# ------------------------------------------------------------------ a run folder's checkpoint and log
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

    def __init__(self, save_path, seed, append, main):
        self.file = None
        if main:
            self.file = open(os.path.join(save_path, f"log_seed_{seed}.txt"), "a" if append else "w")

    def __call__(self, msg, echo=True):
        if self.file is None:
            return
        if echo:
            tqdm.write(msg)
        self.file.write(msg + "\n")
        self.file.flush()



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
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            m = json.load(f)
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


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
        """The first writes, after every check passed: stale temporaries and (decided) the previous run's
        files go, then args.json, folder.json ("running") and the log."""
        from . import dist
        self.run_id = run_id or new_run_id()
        if self.main:
            save_path = self.args.save_path
            _remove_stale_temporaries(save_path)          # ours now: no live writer owns a temporary here
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
            write_state(save_path, kind="train_subset" if hasattr(self.args, "subset_rate") else "train",
                        run_id=self.run_id, fingerprint=self.fingerprint, state="running", completed_epochs=None,
                        error=None)
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
        from .errors import Preempted
        if exc is not None and self.main and self.run_id is not None and not getattr(self.lock, "lost", False):
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, Preempted))
            try:
                write_state(self.args.save_path, state="interrupted" if interrupted else "failed",
                            error=f"{type(exc).__name__}: {exc}"[:500])
            except OSError:   # a full or read-only disk: "running" with a free lock reads as interrupted
                pass
        self.release()
        return False


def open_run(args, fingerprint, stop_epoch=None):
    """The write protocol's first half for a run folder: take the lock (rank 0), read what the folder
    holds, decide, read the checkpoint to resume from and check it; every rank gets the decision (a
    refusal ends every rank). Returns the RunFolder (`done` set when there is nothing to do: then the
    lock is released already)."""
    from . import dist
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
    elif args.resume and main and decision["action"] == "fresh" and not decision["remove"]:
        print(f"note: --resume: no checkpoint in {args.save_path} yet, starting from scratch")
    return folder


def _remove_stale_temporaries(save_path):
    """Delete the temporary files of writes that a killed run left half-done (utils.io names them
    .<name>.tmp<pid>); they are never trusted, but a checkpoint's can be gigabytes."""
    for folder in (save_path, os.path.join(save_path, "npy")):
        if os.path.isdir(folder):
            for f in os.listdir(folder):
                if f.startswith(".") and re.search(r"\.tmp\d+$", f) and not f.startswith(".holder."):
                    os.remove(os.path.join(folder, f))


def _remove_previous_run(save_path):
    """The previous run's outputs go, so that none of them can be mistaken for the new run's."""
    stale = [os.path.join(save_path, sub, f) for sub in ("npy", "selection")
             if os.path.isdir(os.path.join(save_path, sub)) for f in os.listdir(os.path.join(save_path, sub))
             if f.endswith(".npy") or f == MANIFEST]
    logs = [os.path.join(save_path, f) for f in os.listdir(save_path) if re.fullmatch(r"log_seed_\d+\.txt", f)]
    for f in stale + logs + [os.path.join(save_path, f) for f in RUN_FILES]:
        if os.path.exists(f):
            os.remove(f)


# ----------------------------------------------------------------------- dynamics manifest
def data_crc32(path_or_array):
    """CRC-32 of an array's bytes as stored after the .npy header (the same from memory or from disk)."""
    if isinstance(path_or_array, np.ndarray):
        return zlib.crc32(np.ascontiguousarray(path_or_array).data)
    mm = np.load(path_or_array, mmap_mode="r")
    offset = mm.offset
    del mm
    crc = 0
    with open(path_or_array, "rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def read_manifest(npy_folder):
    """npy/manifest.json, or None (dynamics written by the published train.py, or older versions)."""
    path = os.path.join(npy_folder, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
        assert isinstance(m, dict) and isinstance(m.get("epochs"), dict)
        return m
    except (OSError, ValueError, AssertionError):
        raise UserError(f"cannot read {path}: not the manifest train.py writes (delete it to score the folder "
                        f"as unverified published files)") from None


def record_epoch(npy_folder, epoch, run_id, arrays):
    """Add epoch `epoch` (files {name: array}, already written) of run `run_id` to the manifest."""
    m = read_manifest(npy_folder) or {"epochs": {}}
    m["epochs"][str(epoch)] = {"run_id": run_id, "files": {
        name: {"bytes": int(a.nbytes), "crc32": data_crc32(a)} for name, a in arrays.items()}}
    save_json(os.path.join(npy_folder, MANIFEST), m)


def check_trajectory(manifest, epochs, path):
    """The run id that wrote every epoch of `epochs`, or a UserError naming the epochs that do not
    come from one run. {file name: expected crc32} of those epochs is returned beside it."""
    ent = manifest["epochs"]
    missing = [e for e in epochs if str(e) not in ent]
    if missing:
        raise UserError(f"{path}: epochs {_ranges(missing)} are not in {MANIFEST} (written by another run, or "
                        f"by a run that never finished them): epochs 0..{max(epochs)} must all come from one run")
    runs = {}
    for e in epochs:
        runs.setdefault(ent[str(e)]["run_id"], []).append(e)
    if len(runs) > 1:
        parts = "; ".join(f"epochs {_ranges(es)} by run {r}" for r, es in runs.items())
        raise UserError(f"{path} mixes runs: {parts}: score the dynamics of one run")
    crcs = {name: f["crc32"] for e in epochs for name, f in ent[str(e)]["files"].items()}
    return next(iter(runs)), crcs


def _ranges(es):
    es, out, i = sorted(es), [], 0
    while i < len(es):
        j = i
        while j + 1 < len(es) and es[j + 1] == es[j] + 1:
            j += 1
        out.append(str(es[i]) if i == j else f"{es[i]}-{es[j]}")
        i = j + 1
    return ", ".join(out)


def main(argv=None):
    """python -m utils.folder unlock FOLDER: the manual takeover of a folder whose writer is known dead."""
    from .args import Parser
    parser = Parser(prog="python -m utils.folder", description=main.__doc__.split(":")[0])
    parser.add_argument("command", choices=["unlock"])
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise UserError(f"{args.folder}: no such folder")
    return unlock(args.folder)


if __name__ == "__main__":
    from .errors import run
    run(main)
