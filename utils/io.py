"""Atomic file writes: every output is written under a temporary name, flushed, then os.replace'd,
so an interrupted run (SIGKILL included) leaves each file either complete or absent/old."""
import errno
import json
import os

import numpy as np


def atomic_write(path, write_fn, mode="wb"):
    """write_fn(f) writes the content to an open file object; `path` appears only when complete."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # torch.save and np.save report a full disk as a short write without errno: name it
        full = isinstance(e, (OSError, RuntimeError)) and getattr(e, "errno", None) is None and _no_space(folder)
        if os.path.exists(tmp):
            os.remove(tmp)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
        raise


def _no_space(folder):
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (64 << 10)   # under 64 KiB left: the write ran out of room


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
    from .errors import UserError
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is not writable")
    return path
