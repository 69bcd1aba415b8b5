"""The lock record (.holder.json) of the one process writing a folder, and the judgement of whether
that holder is alive: on the reader's own clock, never by comparing two hosts' clocks."""
import errno
import json
import os
import shutil
import socket
import time
import uuid

from utils.protocol.files import load_json

LOCK, HOLDER = ".lock", ".holder.json"
UNLOCK = "python -m utils.protocol.unlock"     # the manual takeover, run from the repository


def _seconds(name, default):
    """A timing of the lock protocol; TDDS_LOCK_<NAME> overrides it (tests, and clusters with slow caches)."""
    return float(os.environ.get(f"TDDS_LOCK_{name}", default))


def heartbeat_s():
    return _seconds("HEARTBEAT_S", 10)      # how often a holder advances its heartbeat


def grace_s():
    return _seconds("GRACE_S", 60)          # a holder elsewhere whose heartbeat stays still this long is dead


def wait_s():
    return _seconds("WAIT_S", 10)           # how long a writer waits for a kernel lock held without a record



# ------------------------------------------------------------------------------ the holder's record
def _boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def _pid_namespace():
    return os.readlink("/proc/self/ns/pid")


def machine_identity():
    """Who can check this process's pid: the host name, the kernel's boot id and the pid namespace, so
    that containers sharing a host name (or a host) never judge each other's pids. TDDS_MACHINE_ID
    overrides it (tests simulate a second host with it)."""
    if os.environ.get("TDDS_MACHINE_ID"):
        return os.environ["TDDS_MACHINE_ID"]
    parts = [socket.gethostname()]
    for probe in (_boot_id, _pid_namespace):
        try:
            parts.append(probe())
        except OSError:
            parts.append("?")
    return "/".join(parts)


def _pid_stat(pid):
    """(state letter, start time in clock ticks since boot) of process `pid` from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError, TypeError):
        return None


def _pid_start(pid):
    """The start time of process `pid` (clock ticks since boot), or None: a reused pid has another."""
    stat = _pid_stat(pid)
    return stat[1] if stat else None


def _pid_alive(pid, start=None):
    """Whether `pid` runs here (and is the process that started at `start`): a zombie, killed but not yet
    reaped by its parent, has ended (it writes nothing more, and cannot be stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (TypeError, OverflowError, ValueError):
        return False
    stat = _pid_stat(pid)
    if stat is not None and stat[0] in "ZX":
        return False
    return start is None or stat is None or stat[1] == start


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


NO_LINK = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS)   # file systems without hard links (FUSE, SMB, FAT)
_NOTED_NO_LINK = set()


def _write_record(folder, rec, exclusive, stage=None, note=print):
    """Write the record atomically: a complete temporary file (in `stage`, the writer's staging folder,
    when given), then link (exclusive: fails with FileExistsError if a record exists) or rename over
    it. Where the file system refuses hard links, the exclusive record is created with O_EXCL instead
    (a reader that catches it half-written counts it as held), with a note. Raises the OSError."""
    path = os.path.join(folder, HOLDER)
    data = json.dumps(rec).encode()
    tmp = os.path.join(stage or folder, f".holder.{rec['nonce']}.{rec['heartbeat']}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return
        _link_exclusive(tmp, path, folder, data, note)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _link_exclusive(src, path, folder, data, note):
    """Hard-link `src` to `path`: atomic, and refused (FileExistsError) where `path` exists; where the file
    system refuses hard links, `path` is created exclusively with `data` instead."""
    try:
        os.link(src, path)
    except OSError as e:
        if e.errno not in NO_LINK:
            raise
        _create_exclusive(folder, path, data, e, note)


def _create_exclusive(folder, path, data, why, note):
    """The exclusive record without link(): O_CREAT | O_EXCL (FileExistsError if a record exists)."""
    if folder not in _NOTED_NO_LINK:
        _NOTED_NO_LINK.add(folder)
        note(f"note: {folder}: this file system refuses hard links ({os.strerror(why.errno)}); the lock record is "
             f"created exclusively with O_EXCL instead")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


STAGE, RETIRED = ".stage.", ".retired."     # a writer's staging folder .stage.<nonce>; one taken from it


def stage_of(folder, nonce):
    return os.path.join(folder, f"{STAGE}{nonce}")


def retire_stages(folder, h=None, keep=None):
    """Rename away the staging folder of the holder `h` (every one but `keep` when h is None or its
    record unreadable), then delete it: a rename that writer still has pending now fails, so nothing
    it writes can land in the folder any more (utils/protocol/fence.py)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    target = f"{STAGE}{h['nonce']}" if h and h.get("nonce") else None   # None: every staging folder
    for name in names:
        path = os.path.join(folder, name)
        if path == keep or not name.startswith((STAGE, RETIRED)):
            continue
        if name.startswith(STAGE):
            if target is not None and name != target:
                continue
            aside = os.path.join(folder, f"{RETIRED}{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, aside)
            except OSError:
                continue
            path = aside
        shutil.rmtree(path, ignore_errors=True)


def _is(rec, expected, mine):
    """Whether the record `rec` is `expected`: by nonce; one that cannot be read only where `expected`
    could not be read either (the manual unlock), or where `expected` is this process's own (`mine`)."""
    if expected.get("unreadable"):
        return True
    if rec.get("unreadable") or "nonce" not in rec:
        return mine
    return rec["nonce"] == expected.get("nonce")


def _clear_record(folder, expected, retire=True, note=print, mine=False):
    """Take away the record `expected` (judged dead; or this process's own, `mine`): first its writer's
    staging folder (`retire`), then the record, renamed aside (one process wins) and checked to be
    that record; a newer one taken by mistake is put back. True if cleared."""
    path = os.path.join(folder, HOLDER)
    now = read_holder(folder)
    if now is None:
        return True
    if not _is(now, expected, mine):
        return False                      # it changed hands meanwhile: not the record judged
    if retire:
        retire_stages(folder, expected)
    aside = os.path.join(folder, f".holder.stale.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    if not _is(load_json(aside, dict(_UNREADABLE)), expected, mine):
        try:                              # put the live one back (fails only if a third took the folder)
            with open(aside, "rb") as f:
                data = f.read()
            _link_exclusive(aside, path, folder, data, note)
        except FileExistsError:
            pass
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def holder_message(flag, folder, h):
    return (f"{flag} {folder} is being written by {describe_holder(h)}: one writer per folder; wait "
            f"for it to end, or if it is dead: {UNLOCK} {folder}")

