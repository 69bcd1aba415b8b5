"""Fencing: a writer that lost its folder writes nothing more into it.

A folder's lock is a lease: another process that judges the holder dead (its heartbeat still for the
grace period) takes the folder over, and a holder that was only paused (SIGSTOP, a node cut off from
the file system for a minute) then wakes up believing it still writes the folder. So every write
that lands in a folder this process holds (the folder itself, its npy/ and selection/) is fenced:

- before it starts, and again right before its rename into place, the writer reads the lock record
  and checks that it still carries its own nonce; the first time it does not, the command stops with
  one line, and nothing more is written (not even the folder's state: `lost` stays set);
- the rename itself cannot land after a takeover: the temporary file lives in the writer's own staging
  folder `.stage.<nonce>` inside the folder, and whoever takes the folder over renames that staging
  folder away before it clears the old record. A rename from a path that no longer exists fails, so a
  writer frozen between its check and its rename (the window a check alone leaves open) finds out
  when it wakes and commits nothing.

The registry below maps each held folder to its lock (utils.protocol.lock.FolderLock registers and
unregisters itself); utils.protocol.files consults it on every write, so the training code needs no
change to be fenced."""
import os

SUBFOLDERS = ("npy", "selection")   # a run folder's subfolders that its writer fills
_HELD = {}                          # folder path (absolute, and resolved) -> the FolderLock holding it


def _spellings(folder):
    return {os.path.normpath(os.path.abspath(folder)), os.path.realpath(folder)}


def hold(folder, lock):
    for key in _spellings(folder):
        _HELD[key] = lock


def let_go(lock):
    for key in [k for k, v in _HELD.items() if v is lock]:
        del _HELD[key]


def holder_of(path):
    """The lock of the held folder that a file at `path` lands in (directly, or in its npy/ or
    selection/), or None: not a folder this process writes under a lock."""
    if not _HELD:
        return None
    where = os.path.dirname(os.path.abspath(os.fspath(path)))
    for d in _spellings(where):
        if d in _HELD:
            return _HELD[d]
        if os.path.basename(d) in SUBFOLDERS and os.path.dirname(d) in _HELD:
            return _HELD[os.path.dirname(d)]
    return None


def guard(path):
    """Before a write (or a removal) at `path`: stop with one line if the folder it lands in was
    taken from this process (FolderLost), or if this process can no longer prove it holds it."""
    lock = holder_of(path)
    if lock is not None:
        lock.ensure_owned()
    return lock
