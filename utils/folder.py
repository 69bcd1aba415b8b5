"""What an output folder holds and who writes it: one module for every writer and reader.

Every folder the scripts write (a run's --save_path, a scoring's --mask_path) carries its identity:
- `.lock`: the one process writing it now (pid, host, start, heartbeat, SLURM job), held with an
  exclusive flock for the whole command. A second writer is refused at once, naming the holder. The
  kernel drops a flock when its process dies (kill -9 included), so a dead holder on this host is
  taken over with a note; a holder on another host counts as dead once its heartbeat (rewritten
  every HEARTBEAT_S seconds) is older than STALE_S, or at once when it was an earlier run of the same
  SLURM job (a requeue). The file is never deleted (deleting a flocked file lets two processes lock
  two inodes of one name); an empty lock file means "free".
- `folder.json` (runs): what wrote it (kind, run id, the run fingerprint) and its state: running,
  stopped (--stop_epoch), finished, failed or interrupted. "running" in a folder whose lock is free
  means the writer died: readers call that interrupted.
- `npy/manifest.json` (dynamics): per recorded epoch, the run id that wrote it and each file's
  size and CRC-32 (of the array's bytes after the .npy header), written right after the epoch's
  files. The scorer checks that epochs 0..T-1 all come from one run, verifying the checksums on the
  bytes it streams anyway (utils/scoring.py).
A scoring's commit record is its info_<tag>.json (importance_evaluation.py), written last.
"""
import atexit
import hashlib
import re
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
import zlib

import numpy as np

from .args import flag_name, without_unused
from .errors import UserError
from .io import save_json

# Flags that cannot change what a run computes: where it is, how it reports, how it is resumed.
# --data_path is here because the training labels' content is fingerprinted instead (a data set may
# move between machines); --mask_path/--score_path likewise (their content is); --ngpu because the
# resolved device is; --stop_epoch and --save_every_steps because stopping (or checkpointing) early and
# resuming gives the uninterrupted run.
NOT_FINGERPRINTED = {"print_freq", "workers", "resume", "overwrite", "evaluate", "save_path", "start_epoch",
                     "download", "data_path", "ngpu", "mask_path", "score_path", "stop_epoch", "save_every_steps"}
LOCK, STATE, MANIFEST = ".lock", "folder.json", "manifest.json"
HEARTBEAT_S = 30          # how often a writer rewrites its lock's heartbeat
STALE_S = 300             # a lock on another host without a heartbeat for this long is taken over


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


def check_fingerprint(ck, fingerprint, path):
    """UserError naming every setting in which the checkpoint `ck` (read from `path`) differs."""
    was = ck.get("fingerprint")
    if was is None:
        raise UserError(f"{path} was written by an older version of these scripts (no run fingerprint), so "
                        f"its settings cannot be checked; start again with --overwrite")
    diffs = fingerprint_diffs(was, fingerprint)
    if diffs:
        raise UserError(f"{path} is a run with {', '.join(diffs)}: resume it with the same settings, or start "
                        f"again with --overwrite")


# ------------------------------------------------------------------------------------------ the lock
def _slurm_job():
    """The SLURM job (array job_task) this process belongs to; requeued, it keeps the same one."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    if not raw.strip():
        return None
    try:
        holder = json.loads(raw)
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}                         # being rewritten (a heartbeat): someone holds it


def describe_holder(h):
    if not h:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    job = f", SLURM job {h['slurm_job']}" if h.get("slurm_job") else ""
    return f"pid {h.get('pid')} on {h.get('host')}{job} (since {since}: {h.get('command', '?')})"


def _holder_is_dead(holder, flock_free):
    """(dead, why) for the holder a lock file names."""
    if not holder:
        return True, ""
    age = time.time() - holder.get("heartbeat", 0)
    if holder.get("host") == socket.gethostname():
        if flock_free or not _pid_alive(holder.get("pid", -1)):
            return True, "is no longer running"
        return False, ""
    if holder.get("slurm_job") and holder["slurm_job"] == _slurm_job():
        return True, "was an earlier run of this SLURM job (requeued)"
    if age > STALE_S:
        return True, f"has not refreshed the lock for {age:.0f} s (> {STALE_S} s)"
    return False, ""


def check_unlocked(folder, flag):
    """Refuse (UserError) when a live process writes `folder`. Reads only (also on a read-only disk)."""
    path = os.path.join(folder, LOCK)
    if not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            free = True
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            free = False
        holder = _read_holder(fd)
    finally:
        os.close(fd)
    dead, _ = _holder_is_dead(holder, free)
    if not free or not dead:
        raise UserError(f"{flag} {folder} is being written by {describe_holder(holder)}: one writer per folder; "
                        f"wait for it to end or stop it (a dead holder's lock is taken over)")


class FolderLock:
    """The exclusive writer of `folder` until release() (or the process's end)."""

    def __init__(self, folder, flag):
        self.folder, self.flag, self.fd = folder, flag, None
        self._stop = threading.Event()

    def acquire(self, note=print):
        path = os.path.join(self.folder, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{self.flag} {self.folder} is being written by {describe_holder(holder)}: one writer "
                            f"per folder; wait for it to end or stop it") from None
        holder = _read_holder(fd)
        dead, why = _holder_is_dead(holder, flock_free=True)
        if not dead:   # a live writer on another host (flock does not reach across it)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise UserError(f"{self.flag} {self.folder} is being written by {describe_holder(holder)} on another "
                            f"host (last heartbeat {time.time() - holder.get('heartbeat', 0):.0f} s ago; taken over "
                            f"after {STALE_S} s without one)")
        if holder and why:
            note(f"note: {self.folder}: took over the lock of {describe_holder(holder)}, which {why}")
        self.fd = fd
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                   "slurm_job": _slurm_job(), "command": " ".join(sys.argv)[:300]}
        self._write()
        threading.Thread(target=self._beat, daemon=True).start()
        atexit.register(self.release)
        return self

    def _write(self):
        raw = json.dumps({**self.me, "heartbeat": time.time()}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, raw, 0)

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError:        # a full disk: the flock still holds on this host
                pass

    def release(self):
        if self.fd is None:
            return
        self._stop.set()
        try:
            os.ftruncate(self.fd, 0)   # empty = free (the file stays: see the module docstring)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


# ------------------------------------------------------------------------------- state of a run folder
def new_run_id():
    return uuid.uuid4().hex[:16]


def read_state(folder):
    """folder.json as a dict ({} when absent or unreadable), with "state" made honest: "running" in a
    folder whose lock is free is "interrupted" (its writer died)."""
    try:
        with open(os.path.join(folder, STATE)) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(st, dict):
        return {}
    if st.get("state") == "running":
        try:
            check_unlocked(folder, "")
            st["state"] = "interrupted"
        except UserError:
            pass
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


# ------------------------------------------------------------------------------------ dynamics manifest
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
