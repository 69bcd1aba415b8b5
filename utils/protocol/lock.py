"""The lock of a folder (FolderLock): one writer per folder, released at the end of the command at the
latest (registered with utils.errors), and the manual takeover of a folder whose writer is dead."""
import errno
import fcntl
import os
import socket
import sys
import threading
import time
import uuid

from utils.errors import UserError, at_exit
from utils.protocol.files import ensure_writable_dir
from utils.protocol.holder import (
    HOLDER,
    LOCK,
    _clear_record,
    _pid_start,
    _slurm,
    _watch,
    _write_record,
    describe_holder,
    heartbeat_s,
    holder_message,
    judge_holder,
    machine_identity,
    quick_judgement,
    read_holder,
    wait_s,
)

_HELD = set()   # the locks this process holds: released at the end of a command (utils.errors.run) at the latest


@at_exit
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


