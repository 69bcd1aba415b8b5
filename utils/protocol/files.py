"""Atomic file writes: every output is written under a temporary name, flushed, then os.replace'd,
so an interrupted run (SIGKILL included) leaves each file either complete or absent/old. A write into
a folder this process holds under its lock is fenced (utils/protocol/fence.py): its temporary waits
in the writer's staging folder, ownership is checked right before the rename, and a writer that lost
the folder writes nothing more."""
import errno
import json
import os
import uuid

import numpy as np

from utils.errors import DISK_ERRORS, UserError, WriteFailed, describe_oserror
from utils.protocol import fence


def load_json(path, default=None, strict=False):
    """The JSON object (a dict) in `path`, the one reader of every record the scripts write.
    Lenient (default): `default` when the file is absent, unreadable, not JSON or not an object.
    strict=True: a file that cannot be read or parsed is a UserError naming it; what was parsed is
    returned as it is (the caller says what it expected)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        if strict:
            why = "not valid JSON" if isinstance(e, ValueError) else describe_oserror(e)
            raise UserError(f"cannot read {path}: {why}") from None
        return default
    return obj if strict or isinstance(obj, dict) else default


def atomic_write(path, write_fn, mode="wb"):
    """write_fn(f) writes the content to an open file object; `path` appears only when complete. A write
    that fails (any OSError, or torch.save's errno-less "PytorchStreamWriter failed writing file") raises
    utils.errors.WriteFailed naming `path` and why; the previous `path`, if any, is untouched. In a
    folder this process holds, a writer that lost it raises FolderLost instead and writes nothing."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    lock = fence.holder_of(path)
    if lock is not None:
        lock.check_lost()
    where = lock.staging_for(folder) if lock is not None else folder
    tmp = os.path.join(where, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if lock is not None:
            lock.ensure_owned()         # the last look before the rename (which fails once the stage is retired)
        os.replace(tmp, path)
    except BaseException as e:
        _discard(tmp)
        lost = lock.taken() if lock is not None and isinstance(e, OSError) else None
        if lost is not None:
            raise lost from None
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and _is_write_error(e)):
            raise WriteFailed(path, _why(e, folder), getattr(e, "errno", None)) from e
        raise


def remove_file(path):
    """Remove `path` if it is there. In a folder this process holds, fenced like a write: it is first
    renamed into the writer's staging folder (which fails once a takeover retired it), then deleted."""
    path = os.fspath(path)
    lock = fence.holder_of(path)
    if lock is not None:
        lock.ensure_owned()
        where = lock.staging_for(os.path.dirname(path) or ".")
        if where == lock.stage:
            trash = os.path.join(where, f".removed.{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                lost = lock.taken()
                if lost is not None:
                    raise lost from None
                return
            path = trash
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _is_write_error(e):
    """torch.save reports a failed write as a RuntimeError without errno (full disk, quota, a parallel
    file system's failure)."""
    text = str(e)
    return "PytorchStreamWriter" in text or "inline_container" in text or "file write failed" in text


def _why(e, folder):
    """What went wrong, in words: the errno of the error or of one it was raised from (torch.save's
    RuntimeError often hides an OSError), else a full disk if it is, else the error's first line."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return describe_oserror(seen)
        seen = seen.__cause__ or seen.__context__
    if _no_space(folder):
        return DISK_ERRORS[errno.ENOSPC]
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"the write failed ({first[:200]})"


def _no_space(folder):
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (64 << 10)   # under 64 KiB left: the write ran out of room


def _discard(tmp):
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
    except OSError:
        pass


def save_npy(path, array):
    atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), mode="w")


def save_text(path, text):
    atomic_write(path, lambda f: f.write(text), mode="w")


def save_torch(path, obj):
    import torch  # imported here so numpy-only users of this module stay light
    atomic_write(path, lambda f: torch.save(obj, f))


def save_figure(path, fig):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def ensure_writable_dir(path, what="output folder"):
    """Create `path` if needed; a folder that cannot be created or written is a UserError."""
    from utils.errors import UserError
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is not writable")
    return path


def check_writable(path, flag):
    """Fail before any work if `path` could not be created or written; creates nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable")
