"""The lock record (.holder.json) of the one process writing a folder, and the judgement of whether
that holder is alive: on the reader's own clock, never by comparing two hosts' clocks."""
import json
import os
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
    taken = load_json(aside, dict(_UNREADABLE))
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

