"""The lock of a folder (FolderLock): one writer per folder, released at the end of the command at the
latest (registered with utils.errors), and the manual takeover of a folder whose writer is dead."""
import errno
import fcntl
import os
import shutil
import socket
import sys
import threading
import time
import uuid

from utils.errors import FolderLost, UserError, WriteFailed, at_exit, describe_oserror
from utils.protocol import fence
from utils.protocol.files import ensure_writable_dir
from utils.protocol.holder import (
    HOLDER,
    LOCK,
    UNLOCK,
    _clear_record,
    _pid_start,
    _slurm,
    _watch,
    _write_record,
    describe_holder,
    grace_s,
    heartbeat_s,
    holder_message,
    judge_holder,
    machine_identity,
    quick_judgement,
    read_holder,
    retire_stages,
    stage_of,
    wait_s,
)

_HELD = set()   # the locks this process holds: released at the end of a command (utils.errors.run) at the latest


@at_exit
def release_all():
    for lock in list(_HELD):
        lock.release()


class FolderLock:
    """The exclusive writer of `folder` until release() (or the process's end). While held, every write
    into the folder is fenced (utils/protocol/fence.py): `ensure_owned()` stops the command with one
    line once the folder was taken over, and `lost` then keeps this process from writing anything more."""

    def __init__(self, folder, flag):
        self.folder, self.flag = folder, flag
        self.fd, self.rec, self.record_only = None, None, False
        self.lost = None       # the error that ends every later write: FolderLost, or WriteFailed of the record
        self.stage = None      # .stage.<nonce>: where this writer's temporary files wait for their rename
        self.created = []      # the folder and lock file this process created (a refusal takes them back)
        self.note = print
        self._stop, self._mutex, self._released, self._thread = threading.Event(), threading.RLock(), False, None
        self._judged = None    # (record, why) of a holder judged dead while waiting for the kernel lock
        self._beat_ok, self._beat_error = None, None   # when the heartbeat was last written; why it fails now
        self._same_device = {}

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
                        self._judged = (h, why)     # judged once: acquire() does not watch it again
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
        self.note = note
        if not os.path.isdir(self.folder):
            self.created.append(self.folder)
        ensure_writable_dir(self.folder, self.flag)
        try:
            self.record_only = not self._flock(note)
        except OSError as e:
            self.release(refused=True)
            raise WriteFailed(os.path.join(self.folder, LOCK), describe_oserror(e), e.errno) from None
        job, restart = _slurm()
        self.rec = {"nonce": uuid.uuid4().hex, "machine": machine_identity(), "host": socket.gethostname(),
                    "pid": os.getpid(), "pid_start": _pid_start(os.getpid()), "slurm_job": job,
                    "slurm_restart": restart, "started": time.time(), "heartbeat": 0,
                    "command": " ".join(sys.argv)[:300]}
        try:
            self._take_record(note)
            self.stage = stage_of(self.folder, self.rec["nonce"])
            os.mkdir(self.stage)
        except OSError as e:
            self.release(refused=True)
            raise WriteFailed(os.path.join(self.folder, HOLDER), f"{describe_oserror(e)} (the folder's lock record)",
                              e.errno) from None
        retire_stages(self.folder, None, keep=self.stage)   # what killed writers left: none of it is trusted
        self._beat_ok = time.monotonic()
        fence.hold(self.folder, self)
        _HELD.add(self)
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat of {self.folder}")
        self._thread.start()
        return self

    def _take_record(self, note):
        """Write this process's record exclusively; a holder judged dead is cleared first (its staging
        folder retired before its record goes), a live one refuses."""
        for _ in range(100):
            try:
                _write_record(self.folder, self.rec, exclusive=True, note=note)
                return
            except FileExistsError:
                h = read_holder(self.folder)
                if h is None:
                    continue
                if self._judged is not None and self._judged[0] == h:
                    alive, why = False, self._judged[1]       # watched once already (the kernel lock's holder)
                else:
                    alive, why = judge_holder(self.folder, h, note)
                if alive:
                    self.release(refused=True)
                    raise UserError(holder_message(self.flag, self.folder, h))
                if _clear_record(self.folder, h, note=note) and why:
                    note(f"note: {self.folder}: took over the lock of {describe_holder(h)}, which {why}")
        self.release(refused=True)
        raise UserError(f"{self.flag} {self.folder}: could not take the lock (its record keeps changing)")

    # -- the heartbeat: proof of life for the others, and the first to notice a takeover
    def _beat(self):
        while not self._stop.wait(heartbeat_s()):
            with self._mutex:              # release() waits for a beat in flight; none starts after it
                if self._released or self.lost or not self._beat_once():
                    return

    def _beat_once(self):
        """Advance the heartbeat: False once the folder is lost (taken over, or unprovable for the grace)."""
        verdict, h = self._verdict()
        if verdict in ("theirs", "gone"):
            self._lose(h)
            return False
        rec = {**self.rec, "heartbeat": self.rec["heartbeat"] + 1}
        error = None
        for attempt in range(3):
            try:
                _write_record(self.folder, rec, exclusive=False, stage=self.stage)
                self.rec, self._beat_ok, self._beat_error = rec, time.monotonic(), None
                return True
            except OSError as e:
                if not os.path.isdir(self.stage):      # retired by a takeover: the folder is another's
                    self._lose(read_holder(self.folder))
                    return False
                error = e
                time.sleep(0.05 * (attempt + 1))
        if self._beat_error is None:
            self.note(f"note: cannot write the lock record {os.path.join(self.folder, HOLDER)} "
                      f"({describe_oserror(error)}); retrying: if it still fails after {grace_s():.0f} s, this run "
                      f"stops writing (others may then take the folder over)")
        self._beat_error = error
        if time.monotonic() - self._beat_ok > grace_s():
            self.lost = WriteFailed(os.path.join(self.folder, HOLDER),
                                    f"{describe_oserror(error)} (the folder's lock record, for {grace_s():.0f} s: "
                                    f"this run can no longer prove it is alive, so it stopped writing; nothing more "
                                    f"was committed)", error.errno)
            return False
        return True

    def _verdict(self):
        """("ours" | "theirs" | "gone" | "unreadable", record) of the folder's record now. A record that
        cannot be read is still ours until another's nonce is read (reads are retried); an absent one is
        read again, since a takeover of another record may put ours aside for an instant."""
        for attempt in range(3):
            h = read_holder(self.folder)
            if h is not None and not h.get("unreadable"):
                return ("ours" if h.get("nonce") == self.rec["nonce"] else "theirs"), h
            if attempt < 2:
                time.sleep(0.02 * (attempt + 1))
        return ("gone" if h is None else "unreadable"), h

    def _lose(self, h):
        """Record that the folder is lost (held by `h`, or cleared): every later write raises this."""
        if not self.lost:
            who = (f"was taken over by {describe_holder(h)}" if h else
                   f"was taken from this run (its lock record was cleared: by a process that judged this one dead "
                   f"and took the folder, or by {UNLOCK})")
            self.lost = FolderLost(f"{self.flag} {self.folder} {who}: this run stopped writing there; nothing more "
                                   f"was committed (check who writes it now; the same command with --resume "
                                   f"continues this run once that one has ended)")
        return self.lost

    # -- fencing (utils/protocol/fence.py, utils/protocol/files.py)
    def ensure_owned(self):
        """Before a write lands in the folder (and before a commit): stop with one line (FolderLost),
        committing nothing, if the folder was taken over or this process cannot prove it holds it."""
        if self.lost:
            raise self.lost
        if self.rec is None:
            return
        if self._beat_error is not None and time.monotonic() - self._beat_ok > grace_s():
            with self._mutex:
                if not self.lost:
                    self._beat_once()
            if self.lost:
                raise self.lost
        verdict, h = self._verdict()
        if verdict in ("theirs", "gone"):
            raise self._lose(h)

    def check_lost(self):
        """The lost flag alone (no read): a writer that lost its folder starts no write there."""
        if self.lost:
            raise self.lost

    def owned(self):
        return not self.lost and self.rec is not None and self._verdict()[0] in ("ours", "unreadable")

    def staging_for(self, folder):
        """Where a temporary file bound for `folder` waits: this writer's staging folder when it lies on the
        same file system (a rename cannot cross file systems), else `folder` itself."""
        if self.stage is None:
            return folder
        if folder not in self._same_device:
            try:
                self._same_device[folder] = os.stat(folder).st_dev == os.stat(self.stage).st_dev
            except OSError:
                return self.stage       # (retired: the write fails, and says the folder was taken)
        return self.stage if self._same_device[folder] else folder

    def taken(self):
        """After a write into the folder failed: FolderLost if that is because the staging folder was
        retired by a takeover, else None (a real write failure)."""
        if self.stage is not None and not os.path.isdir(self.stage):
            return self._lose(read_holder(self.folder))
        return None

    def _unflock(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def release(self, refused=False):
        """Let go of the folder, for good: the heartbeat is stopped first (a beat in flight ends before,
        none starts after), then the staging folder and the record go. `refused`: nothing was written,
        so the folder and the lock file that acquire() created go too (a refused command leaves no
        trace; the record keeps a late opener of the removed lock file from writing beside a new one)."""
        self._stop.set()
        with self._mutex:
            self._released = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        fence.let_go(self)
        if self.rec is not None:
            if self.stage is not None and os.path.isdir(self.stage):
                shutil.rmtree(self.stage, ignore_errors=True)
            try:
                _clear_record(self.folder, self.rec, retire=False, mine=True)   # only if it is still ours
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


