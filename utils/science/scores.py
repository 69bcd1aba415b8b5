"""TDDS and the baseline scores of docs/METHODS.md, streamed from the recorded dynamics files.

Every score is a per-sample reduction over epochs, and TDDS only ever needs p_t and p_{t+1}
together, so the work is split into chunks of SAMPLES (outer loop) and epochs (inner loop): for
each (chunk, epoch) only that chunk's rows of the epoch file are read, the features of the epoch
are computed once (one softmax), and the chunk keeps a (T, chunk) array of the one feature its
method needs. Memory is therefore bounded by the chunk size, not by N x T x C; the only O(N)
arrays are the score itself, the labels, and the int32 Index of each epoch whose rows
are shuffled (the published layout stores rows in the visiting order).

torch is imported only when scores are computed, so bad input is reported in a fraction of a second.
"""
import os
import re
import sys
import zlib

import numpy as np

from utils.errors import UserError
from utils.protocol.manifest import check_trajectory, read_manifest

METHODS = ('tdds', 'random', 'el2n', 'forgetting', 'aum', 'entropy', 'dyn_unc', 'dual')
METHOD_FEATURE = {'tdds': 'contrib', 'random': None, 'el2n': 'el2n', 'forgetting': 'correct',
                  'aum': 'margin', 'entropy': 'entropy', 'dyn_unc': 'target_prob', 'dual': 'target_prob'}
LABEL_METHODS = ('el2n', 'forgetting', 'aum', 'dyn_unc', 'dual')   # need y when computed from logits
WINDOW_METHODS = ('tdds', 'dyn_unc', 'dual')                        # use --window_size
MEAN_P_METHODS = ('dual',)   # also write mean_p_<tag>.npy, the mean p_y that --selection beta evaluates

_EPOCH_FILE = re.compile(r'^(\d+)_([A-Za-z][A-Za-z0-9]*)\.npy$')      # <e>_<Tag>.npy
_BLOCK_BYTES = 32 << 20   # rows are read in blocks of at most this size (see _Npy)


def output_tag(method, trajectory_len, window_size=None, decay=None, name_window=False, name_decay=False):
    """The <tag> of a score's files: win{K}_ep{T} for TDDS (the published name), {method}_ep{T} for a
    baseline. When one call scores several decays (several window sizes for dyn_unc, dual), _decay{beta}
    (_win{K}) is appended so that no two results share a file."""
    if method == 'tdds':
        tag = f'win{window_size}_ep{trajectory_len}'
    elif method == 'moderate':   # from a trained model's features, not from the trajectory
        return 'moderate'
    else:
        tag = f'{method}_ep{trajectory_len}'
        if method in ('dyn_unc', 'dual') and name_window:
            tag += f'_win{window_size}'
    if method == 'tdds' and name_decay:
        tag += f'_decay{decay:g}'
    return tag


def output_names(method, trajectory_len, window_size, decay=None, name_window=False, name_decay=False):
    """File names written to --mask_path (the first two are the published ones)."""
    tag = output_tag(method, trajectory_len, window_size, decay, name_window, name_decay)
    return {'mask': f'data_mask_{tag}.npy',              # argsort(score) ascending, int64
            'score': f'score_{tag}.npy',                 # score sorted ascending, float32
            'dataset_score': f'dataset_score_{tag}.npy',  # score in dataset order, float32
            'hist': f'score_hist_{tag}.png',              # histogram of the score
            'info': f'info_{tag}.json'}                   # what was scored, how long it took


def mean_p_name(tag):
    """The file beside a DUAL score holding each sample's mean p_y over epochs 0..T-1 (dataset order,
    float32); train_subset.py --selection beta finds it by the tag of data_mask_<tag>.npy."""
    return f'mean_p_{tag}.npy'


def combinations(method, trajectory_lens, window_sizes, decays):
    """The valid, distinct (T, K, beta) of `method` (K and beta are None where the method has no use
    for them), and the skipped ones as (T, K, reason)."""
    out, skipped = [], []
    for T in trajectory_lens:
        if T < 1:
            skipped.append((T, None, f"--trajectory_len {T} must be at least 1"))
            continue
        for K in (window_sizes if method in WINDOW_METHODS else [None]):
            low = 3 if method == 'tdds' else 2
            if K is not None and not low <= K <= T:
                skipped.append((T, K, f"--window_size {K} must be between {low} and --trajectory_len {T}"
                                      + (" (with K = 2 every TDDS window holds one contribution: all scores 0)"
                                         if method == 'tdds' and K == 2 else "")))
                continue
            for beta in (decays if method == 'tdds' else [None]):
                if (T, K, beta) not in out:
                    out.append((T, K, beta))
    return out, skipped


def auto_chunk_size(num_classes, trajectory_len):
    """Samples per chunk: buffers of about 32 MB, whatever N (so memory does not grow with N) and
    large enough that each shuffled epoch file is read in few passes."""
    return max(256, (32 << 20) // (4 * max(num_classes or 1, trajectory_len)))


def check_args(method, trajectory_len, window_size, decay, chunk_size=None):
    """Flag values that cannot work, as a UserError naming the flag (one combination)."""
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if trajectory_len < 1:
        raise UserError(f"--trajectory_len {trajectory_len} must be at least 1")
    low = 3 if method == 'tdds' else 2
    if method in WINDOW_METHODS and not low <= window_size <= trajectory_len:
        extra = " (with K = 2 every TDDS window holds one contribution: all scores would be 0)" \
            if method == 'tdds' and window_size == 2 else ""
        raise UserError(f"--window_size {window_size} must be between {low} and --trajectory_len "
                        f"{trajectory_len} for --method {method}{extra}")
    if method == 'tdds' and not 0 < decay <= 1:
        raise UserError(f"--decay {decay} must be in (0, 1]")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"--chunk_size {chunk_size} must be at least 1")


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


def method_labels(dyn, method, targets=None):
    """The (N,) int64 labels `method` needs on `dyn` (targets, else dyn.targets), or None if it
    needs none; a UserError saying how to supply them if there are none."""
    if method not in LABEL_METHODS or dyn.fmt != 'logits':
        return None   # the contrib layout stores the label-dependent features themselves
    y = targets if targets is not None else dyn.targets
    if y is None:
        raise UserError(f"--method {method} needs labels: {dyn.path} has no targets.npy (files "
                        f"written by the published train.py carry none); pass --data_path and "
                        f"--dataset so they can be read from the data set")
    return check_targets(y, dyn.n, dyn.num_classes, 'the labels')


def compute_score(dyn, method, trajectory_len, window_size, decay, targets=None, seed=42,
                  chunk_size=None, device='cpu', progress=True):
    """(N,) float32 score of every sample in DATASET order; higher = more important = kept.

    targets: (N,) labels, overriding dyn.targets (needed by el2n, forgetting, aum, dyn_unc when
    the dynamics are logits). Bad input raises UserError before any result exists.
    """
    check_args(method, trajectory_len, window_size, decay, chunk_size)
    return compute_scores(dyn, method, [(trajectory_len, window_size, decay)], targets, seed, chunk_size,
                          device, progress)[0]


def compute_scores(dyn, method, combos, targets=None, seed=42, chunk_size=None, device='cpu', progress=True,
                   mean_p=False):
    """[(N,) float32 score] for each (T, K, beta) of `combos`, in one pass over the files: each
    epoch is read and its per-sample feature (TDDS: the contribution c_t) computed once, for the
    largest T; every combination then reduces the first T epochs of it. Each result has the same
    bits as a call with that combination alone.

    mean_p=True (methods of MEAN_P_METHODS): returns (scores, mean_ps), mean_ps[i] the (N,) float32
    mean of p_y over epochs 0..T-1 of combination i, from the same pass."""
    if mean_p and method not in MEAN_P_METHODS:
        raise ValueError(f"mean_p is computed for {MEAN_P_METHODS}, not {method}")
    for T, K, beta in combos:
        check_args(method, T, K if K is not None else 2, beta if beta is not None else 0.9, chunk_size)
    T_max = max(T for T, _, _ in combos)
    if T_max > dyn.trajectory_len:
        raise ValueError(f"dynamics were opened for {dyn.trajectory_len} epochs, not {T_max}")
    if method == 'random':
        return [np.random.default_rng(seed).random(dyn.n).astype(np.float32) for _ in combos]

    y = method_labels(dyn, method, targets)          # (N,) int64 or None, checked before importing torch

    import torch
    from tqdm import tqdm

    from utils.science.features import FILE_TAGS, contribution_, epoch_features, log_eps, softmax_
    feature = METHOD_FEATURE[method]
    # epochs whose data is read: entropy needs only each T's last epoch
    epochs = sorted({T - 1 for T, _, _ in combos}) if method == 'entropy' else list(range(T_max))
    tag = 'Output' if dyn.fmt == 'logits' else FILE_TAGS[feature]  # the file read per epoch
    if dyn.fmt == 'contrib':
        if method == 'tdds':
            epochs = epochs[1:]   # <e>_Contrib.npy holds c_{e-1}, e >= 1
        for e in epochs:          # check every file before the long loop
            dyn.file(e, tag)
    if y is not None:
        y = torch.from_numpy(y)
    device = torch.device(device)

    n = dyn.n
    scores = [np.empty(n, np.float32) for _ in combos]
    mean_ps = [np.empty(n, np.float32) for _ in combos] if mean_p else None
    nonfinite = [0] * len(epochs)   # samples with NaN/inf inputs, per epoch
    bar = tqdm(total=len(epochs), unit='epoch', desc=f'{method} scores',
               disable=not (progress and sys.stderr.isatty()),
               bar_format='{l_bar}{bar}| {n:.1f}/{total_fmt} epochs [{elapsed}<{remaining}]')
    chunk_size = chunk_size or auto_chunk_size(dyn.num_classes, T_max)
    # TDDS from logits, the common case, allocates nothing per epoch: the chunk's logits are read
    # into one buffer, turned into p in place, and log(p + 1e-8) ping-pongs between two buffers.
    fast = dyn.fmt == 'logits' and feature == 'contrib'
    if fast:
        host = torch.empty(min(chunk_size, n), dyn.num_classes)              # (chunk, C) float32
        xbuf = host if device.type == 'cpu' else torch.empty_like(host, device=device)
        logp_buf, prev_buf = torch.empty_like(xbuf), torch.empty_like(xbuf)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        rows = []   # per-epoch (b-a,) features of the chunk
        yb = None if y is None else y[a:b].to(device)
        for j, e in enumerate(epochs):
            if fast:
                dyn.read(e, tag, a, b, out=host[:b - a].numpy())
                x = xbuf[:b - a].copy_(host[:b - a]) if xbuf is not host else host[:b - a]
            else:
                x = torch.from_numpy(_native(dyn.read(e, tag, a, b))).to(device).float()  # (B, C) or (B,)
            bad = ~torch.isfinite(x.sum(-1) if x.dim() == 2 else x)
            if bad.any():
                nonfinite[j] += int((~torch.isfinite(x)).reshape(b - a, -1).any(1).sum())
            if fast:
                p = softmax_(x)                                       # (B, C) p_e, in place
                logp = log_eps(p, out=logp_buf[:b - a])               # (B, C) log(p_e + 1e-8)
                if j > 0:
                    rows.append(contribution_(p, logp, prev_buf[:b - a]))  # c_{e-1}
                logp_buf, prev_buf = prev_buf, logp_buf
            elif dyn.fmt == 'logits':   # a baseline: one epoch's feature, no previous epoch needed
                rows.append(epoch_features(x, yb, None, (feature,))[0][feature])
            else:
                rows.append(x)
            bar.update((b - a) / n)
        feats = torch.stack(rows)   # (epochs, B); tdds: c_0..c_{T_max-2}
        for out, (T, K, beta) in zip(scores, combos):
            if method == 'entropy':
                mine = feats[epochs.index(T - 1)][None]               # (1, B) entropy at epoch T-1
            else:
                mine = feats[:T - 1] if method == 'tdds' else feats[:T]
            out[a:b] = _reduce(method, mine, T, K, beta).cpu().numpy()
        for out, (T, _, _) in zip(mean_ps or (), combos):
            out[a:b] = (_sum0(feats[:T]) / T).cpu().numpy()           # (B,) mean p_y, epochs 0..T-1
    bar.close()

    bad = [(e, k) for e, k in zip(epochs, nonfinite) if k]
    if bad:
        e, k = bad[0]
        more = f" (and {len(bad) - 1} more epochs)" if len(bad) > 1 else ''
        raise UserError(f"{dyn.file(e, tag).path}: epoch {e} has NaN/inf "
                        f"{'logits' if dyn.fmt == 'logits' else 'values'} for {k} samples{more}")
    return (scores, mean_ps) if mean_p else scores


def _native(a):
    """float16/float32 arrays as they are (torch reads them), anything else as native float32."""
    return a if a.dtype in (np.float32, np.float16) else a.astype(np.float32)


def _sum0(x):
    """Sum over dim 0 by plain elementwise adds, so a sample gets the same bits whatever chunk it
    is in (torch's vectorized column sums round the last, partial SIMD block differently)."""
    acc = x[0].clone()
    for row in x[1:]:
        acc += row
    return acc


def _reduce(method, x, T, K, decay):
    """Chunk scores (B,) from the per-epoch feature x (epochs, B) of `method`."""
    import torch
    if method == 'tdds':   # x = c_0..c_{T-2}
        S = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for k in range(T - K + 1):
            win = x[k:k + K - 1]                                   # (K-1, B) c_k..c_{k+K-2}
            s = _sum0((win - _sum0(win) / (K - 1)).square_()).sqrt_()   # root of summed squares (as published)
            S += s.double() * (decay * (1 - decay) ** (T - K - k))
        return S.float()
    if method == 'el2n':
        return _sum0(x) / T
    if method == 'forgetting':   # x = correctness 0/1
        ok = x > 0.5
        forgot = (ok[:-1] & ~ok[1:]).sum(0).float()
        return torch.where(ok.any(0), forgot, torch.full_like(forgot, T))   # never learned: T
    if method == 'aum':          # x = margin
        return -_sum0(x) / T
    if method == 'entropy':      # x = entropy at epoch T-1 only
        return x[0]
    if method == 'dyn_unc':      # x = p_y
        std = 0
        for k in range(T - K + 1):
            win = x[k:k + K]                                       # (K, B) p_y at e = k..k+K-1
            std += (_sum0((win - _sum0(win) / K).square_()) / K).sqrt_()   # population std
        return std / (T - K + 1)
    if method == 'dual':         # x = p_y; DUAL (Cho et al. 2025): per window 10 * std_ddof1 * (1 - mean)
        acc = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for k in range(T - K + 1):
            win = x[k:k + K].double()                              # (K, B) p_y at e = k..k+K-1
            mean = _sum0(win) / K
            std = (_sum0((win - mean).square_()) / (K - 1)).sqrt_()   # sample std (ddof 1), as published
            acc += 10 * std * (1 - mean)                           # the product inside each window
        return (acc / (T - K + 1)).float()
    raise ValueError(method)
