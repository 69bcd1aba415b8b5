"""A folder of recorded dynamics, read in blocks: the epoch files of train.py (this project's, in dataset
order, or the published one's, rows in the visiting order with an Index), checked on opening.

Two layouts (docs/FILES.md, "Dynamics"): 'logits' (<e>_Output.npy (N, C), the published one) and
'contrib' (train.py --dynamics_format contrib: one (N,) file per feature of
utils.methods.CONTRIB_FEATURES). Rows are read with plain sequential reads (no memory map), so memory
is bounded by the block size whatever N; the only O(N) arrays are the labels and the int32 Index of
each epoch whose rows are shuffled. The scorer is utils/science/scores.py.
"""
import os
import re
import zlib

import numpy as np

from utils.errors import UserError
from utils.protocol.manifest import check_trajectory, read_manifest

_EPOCH_FILE = re.compile(r'^(\d+)_([A-Za-z][A-Za-z0-9]*)\.npy$')      # <e>_<Tag>.npy
_BLOCK_BYTES = 32 << 20   # rows are read in blocks of at most this size (see _Npy)


class _Npy:
    """One .npy file: its header is checked on opening; rows are read with plain sequential reads
    into a block buffer of at most _BLOCK_BYTES (no memory map: a map keeps every page it touched
    resident, so reading a whole trajectory through maps would make memory grow with the data)."""

    def __init__(self, path, crc32=None):
        self.path = path
        self.crc32, self._crc, self._at = crc32, 0, 0   # expected CRC of the data; running CRC up to byte _at
        try:
            mm = np.load(path, mmap_mode='r')   # reads the header; fails if the data is cut short
            self.shape, self.dtype, self.offset = mm.shape, mm.dtype, mm.offset
            c_order = mm.flags.c_contiguous
            del mm
        except Exception as e:   # any failure here means the file itself is bad
            msg = ' '.join(str(e).split())
            raise UserError(f"cannot read {path}: truncated or not a .npy file ({msg})") from None
        if not c_order:
            raise UserError(f"{path} is stored in Fortran order; re-save it with np.ascontiguousarray")
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))

    def blocks(self, lo, hi):
        """Yield (first row, rows) for rows lo..hi-1 in consecutive blocks; each block is a view of
        one reused buffer, valid until the next one is read."""
        step = max(1, _BLOCK_BYTES // max(1, self.row_bytes))
        buf = np.empty((min(step, hi - lo),) + self.shape[1:], self.dtype)
        with open(self.path, 'rb') as f:
            f.seek(self.offset + lo * self.row_bytes)
            for a in range(lo, hi, step):
                view = buf[:min(step, hi - a)]
                if f.readinto(view) != view.nbytes:
                    raise UserError(f"cannot read {self.path}: the file is truncated")
                self._verify(a * self.row_bytes, view)
                yield a, view

    def _verify(self, start, view):
        """Checksum the data as it streams by (each byte once, in file order, whatever the chunking):
        the file must be the one the manifest recorded."""
        if self.crc32 is None or start != self._at:
            return
        self._crc = zlib.crc32(view.data, self._crc)
        self._at += view.nbytes
        if self._at == self.shape[0] * self.row_bytes:
            if self._crc != self.crc32:
                raise UserError(f"{self.path} is not the file its run recorded in manifest.json (changed or replaced "
                                f"since): record the dynamics again, or score a folder of one run")
            self.crc32 = None   # verified

    def rows(self, lo, hi, out=None):
        """Rows lo..hi-1 (into `out`, converted to its dtype, when given)."""
        out = np.empty((hi - lo,) + self.shape[1:], self.dtype) if out is None else out
        for a, blk in self.blocks(lo, hi):
            out[a - lo:a - lo + len(blk)] = blk
        return out

    def scatter(self, index, a, b, out=None):
        """The rows whose dataset index (row r holds index[r]) lies in a..b-1, placed at
        out[index - a]: one sequential pass over the file, rows scattered in place (torch's
        index_copy_ uses every core)."""
        import torch
        out = np.empty((b - a,) + self.shape[1:], self.dtype) if out is None else out
        dst = torch.from_numpy(out)
        whole = a == 0 and b == len(index)
        for lo, blk in self.blocks(0, self.shape[0]):
            idx = index[lo:lo + len(blk)]
            src = torch.from_numpy(blk)
            if not whole:
                keep = torch.from_numpy((idx >= a) & (idx < b))
                idx, src = idx[keep.numpy()], src[keep]
            dst.index_copy_(0, torch.from_numpy(idx.astype(np.int64) - a), src.to(dst.dtype))
        return out


class Dynamics:
    """A folder of recorded dynamics, opened and checked for epochs 0..trajectory_len-1.

    Two layouts are read:
      'logits'  (published): <e>_Output.npy (N, C) float32/float16 logits, <e>_Index.npy (N,);
      'contrib' (train.py --dynamics_format contrib): <e>_<Tag>.npy (N,) per feature, <e>_Index.npy.
    Row r of epoch e belongs to dataset index Index_e[r]. Opening reads the .npy headers and the
    Index files only; `targets` is targets.npy (N,) int64 in dataset order, or None if absent.

    `subset` (strictly increasing dataset indices S; train.py --train_fraction): the run trained on S
    only, and every epoch holds the rows of exactly S. The samples are then S's (n = |S|, read and
    scored in the order of S; `targets` is targets.npy[S]), and n_all is the training set's N.
    """

    def __init__(self, path, trajectory_len, subset=None):
        if not os.path.isdir(path):
            raise UserError(f"dynamics folder {path} does not exist" if not os.path.exists(path)
                            else f"--dynamics_path {path} is not a folder")
        self.path = path
        self.subset = None if subset is None else np.asarray(subset, dtype=np.int64)
        self._found = {}   # (epoch, tag) -> file path
        for name in os.listdir(path):
            m = _EPOCH_FILE.match(name)
            if m:
                self._found[int(m[1]), m[2]] = os.path.join(path, name)
        if not self._found:
            sub = os.path.join(path, 'npy')
            hint = f" (did you mean {sub}?)" if os.path.isdir(sub) else ''
            raise UserError(f"no epoch files (<e>_Output.npy, <e>_Index.npy) in {path}{hint}")
        self.fmt = 'logits' if any(tag == 'Output' for _, tag in self._found) else 'contrib'
        epochs = sorted({e for e, _ in self._found})
        self.epochs_recorded = len(epochs)
        T = trajectory_len
        if T < 1:
            raise UserError(f"--trajectory_len {T} must be at least 1")
        if T > epochs[-1] + 1:
            raise UserError(f"found {len(epochs)} recorded epochs (0..{epochs[-1]}) in {path}, "
                            f"--trajectory_len {T} needs {T}")
        self.trajectory_len = T
        # which run wrote epochs 0..T-1 (None: published files, no manifest, origin not checkable)
        self.manifest = read_manifest(path)
        self.run_id, self._crcs = check_trajectory(self.manifest, range(T), path) if self.manifest else (None, {})
        self.n, self.num_classes = None, None
        self._n_all = _targets_len(path)   # N of targets.npy (None: no file), to name a dynamic run's epochs
        self._files = {}   # (epoch, tag) -> _Npy, checked
        self._index = {}   # epoch -> None (rows in dataset order) or (N,) int32 Index of the file
        for e in range(T):
            if self.fmt == 'logits':
                out = self.file(e, 'Output')
                if out.dtype.kind != 'f' or len(out.shape) != 2:
                    raise UserError(f"{out.path} holds {out.dtype} {out.shape}, expected (N, C) float logits")
                if self.n is None:
                    self.n, self.num_classes, self._first = out.shape[0], out.shape[1], out.path
                elif out.shape != (self.n, self.num_classes):
                    self._refuse_partial(e, out, out.shape[0] != self.n)
                    raise UserError(f"{out.path} has shape {out.shape}, expected "
                                    f"{(self.n, self.num_classes)} like {self._first}")
            self._index[e] = self._check_index(e)
        if self.n == 0:
            raise UserError(f"{self._first} has no samples")
        self.n_all = self.n if self.subset is None else self._n_all
        self.targets = self._load_targets()

    def identity(self, T):
        """A short text naming what epochs 0..T-1 are, for a scoring's record: the run that recorded them
        and their checksums (manifest), else the files' names, sizes and modification times."""
        import hashlib
        import json
        h = hashlib.sha256()
        if self.manifest:
            for e in range(T):
                h.update(json.dumps(self.manifest['epochs'][str(e)], sort_keys=True).encode())
            return f"run {self.run_id}, epochs 0..{T - 1} sha256 {h.hexdigest()[:16]}"
        for (e, tag), p in sorted(self._found.items()):
            if e < T:
                st = os.stat(p)
                h.update(f"{e}_{tag}:{st.st_size}:{st.st_mtime_ns};".encode())
        return f"unverified files, epochs 0..{T - 1} sha256 {h.hexdigest()[:16]}"

    def file(self, e, tag):
        """The checked _Npy of <e>_<tag>.npy; a missing file is a UserError naming it."""
        if (e, tag) not in self._files:
            if (e, tag) not in self._found:
                raise UserError(f"missing {os.path.join(self.path, f'{e}_{tag}.npy')}: epochs "
                                f"0..{self.trajectory_len - 1} are needed for --trajectory_len "
                                f"{self.trajectory_len}")
            f = _Npy(self._found[e, tag], self._crcs.get(f'{e}_{tag}.npy'))
            if tag not in ('Output', 'Index'):   # a per-sample feature of the contrib layout
                if f.shape != (self.n,) or f.dtype.kind not in 'fiub':
                    raise UserError(f"{f.path} holds {f.dtype} {f.shape}, expected ({self.n},) numbers")
            self._files[e, tag] = f
        return self._files[e, tag]

    def _check_index(self, e):
        """Check <e>_Index.npy is a permutation of 0..N-1; return None if it is 0..N-1 in order,
        else the Index itself as int32 (row r holds dataset index Index[r])."""
        f = self.file(e, 'Index')
        if len(f.shape) != 1 or f.dtype.kind not in 'iuf':
            raise UserError(f"{f.path} holds {f.dtype} {f.shape}, expected (N,) integer dataset indices")
        if self.n is None:
            self.n, self._first = f.shape[0], f.path
        if f.shape[0] != self.n:
            self._refuse_partial(e, f, True)
            raise UserError(f"{f.path} has {f.shape[0]} rows, expected {self.n} like {self._first}")
        idx = f.rows(0, self.n)
        if idx.dtype.kind == 'f':
            if not np.array_equal(idx, np.round(idx)):
                raise UserError(f"{f.path} holds non-integer indices")
        idx = idx.astype(np.int64, copy=False)
        if self.subset is not None:
            return self._subset_index(f, idx)
        if np.array_equal(idx, np.arange(self.n)):
            return None
        if self.n and (idx.min() < 0 or idx.max() >= self.n or
                       (np.bincount(idx, minlength=self.n) != 1).any()):
            self._refuse_partial(e, f, idx.min() >= 0 and idx.max() >= self.n)
            raise UserError(f"{f.path} is not a permutation of 0..{self.n - 1} "
                            f"(indices out of range, repeated or missing)")
        return idx.astype(np.int32)

    def _subset_index(self, f, idx):
        """The rows of an epoch of a run on the samples S: a permutation of S. None if in S's order, else
        the position in S of each row (int32)."""
        S = self.subset
        if len(idx) != len(S) or not np.array_equal(np.sort(idx), S):
            raise UserError(f"{f.path} holds {len(idx)} rows that are not the {len(S)} samples the run trained on "
                            f"(its train_indices.npy): dynamics and run folder do not belong together")
        if self._n_all is None or S[-1] >= self._n_all:
            raise UserError(f"{self.path} needs targets.npy with the labels of the whole training set to score the "
                            f"{len(S)} samples its run trained on")
        pos = np.searchsorted(S, idx)
        return None if np.array_equal(pos, np.arange(len(S))) else pos.astype(np.int32)

    def _refuse_partial(self, e, f, suspect):
        """A run that prunes while training (train.py --dynamic) records only the samples each epoch
        trained: when `suspect` (epochs of different sizes, indices beyond the rows) and an epoch holds
        fewer rows than targets.npy has labels, say so."""
        path, e, rows = (f.path, e, f.shape[0]) if f.shape[0] <= self.n else (self._first, 0, self.n)
        if suspect and self._n_all is not None and rows < self._n_all:
            raise UserError(f"{path}: epoch {e} holds {rows} of the {self._n_all} samples of targets.npy (a run "
                            f"that prunes while training, train.py --dynamic, records only the samples it "
                            f"trained): scores need every sample in every epoch; record them with a run "
                            f"without --dynamic (a train.py --train_fraction run is scored from inside its "
                            f"run folder, which names the samples it trained in train_indices.npy)")

    def _load_targets(self):
        path = os.path.join(self.path, 'targets.npy')
        if not os.path.exists(path):
            return None
        try:
            y = np.load(path, allow_pickle=False)
        except Exception as e:
            msg = ' '.join(str(e).split())
            raise UserError(f"cannot read {path}: truncated or not a .npy file ({msg})") from None
        if self.subset is not None:   # the labels of the whole training set; S's are scored
            return check_targets(y, self.n_all, self.num_classes, path)[self.subset]
        return check_targets(y, self.n, self.num_classes, path)

    def read(self, e, tag, a, b, out=None):
        """Values of dataset indices a..b-1 at epoch e from <e>_<tag>.npy, in dataset order
        (into the numpy array `out`, converted to its dtype, when given)."""
        f, index = self.file(e, tag), self._index[e]
        return f.rows(a, b, out) if index is None else f.scatter(index, a, b, out)


def _targets_len(path):
    """len(targets.npy) in the dynamics folder `path` from its header, or None (no readable file:
    _load_targets reports a bad one)."""
    try:
        return len(np.load(os.path.join(path, 'targets.npy'), mmap_mode='r'))
    except Exception:
        return None


def check_targets(y, n, num_classes, what):
    """Labels as (n,) int64, or a UserError saying what is wrong with `what`."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in 'iu':
        raise UserError(f"{what} holds {y.dtype} {y.shape}, expected ({n},) integer labels")
    if len(y) != n:
        raise UserError(f"{what} has {len(y)} labels, but the dynamics have {n} samples")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise UserError(f"{what} holds labels outside 0..{(num_classes or 1) - 1}")
    return y.astype(np.int64)
