"""TDDS and the baseline scores of docs/METHODS.md, streamed from the recorded dynamics files.

Every score is a per-sample reduction over epochs, and TDDS only ever needs p_t and p_{t+1}
together, so the work is split into chunks of SAMPLES (outer loop) and epochs (inner loop): for
each (chunk, epoch) only that chunk's rows of the epoch file are read, the features of the epoch
are computed once (one softmax), and the chunk keeps a (T, chunk) array of the one feature its
method needs. Memory is therefore bounded by the chunk size, not by N x T x C; the only O(N)
arrays are the score itself, the labels, and the int32 Index of each epoch whose rows
are shuffled (the published layout stores rows in the visiting order).

What each score reads and how it reduces it is declared in utils/methods.py (SCORES); the per-epoch
features are utils/science/features.py's, the reducers utils/science/reducers.py's, the files are
read by utils/science/trajectory.py. torch is imported only when scores are computed, so bad input
is reported in a fraction of a second.
"""
import sys

import numpy as np

from utils.errors import UserError
from utils.methods import CONTRIB_FEATURES, DYNAMICS_SCORES, SCORES, WINDOW_SCORES, names, output_tag
from utils.science.trajectory import Dynamics, check_targets  # noqa: F401 (the scorer's inputs, imported from here too)

METHODS = DYNAMICS_SCORES                                 # --method values scored from a dynamics folder
METHOD_FEATURE = {m: SCORES[m].feature for m in METHODS}  # the per-epoch feature each one reads
LABEL_METHODS = names(SCORES, labels=True)                # need y when computed from logits
WINDOW_METHODS = WINDOW_SCORES                            # use --window_size
MEAN_P_METHODS = names(SCORES, mean_p=True)   # also write mean_p_<tag>.npy, the mean p_y that --selection beta evaluates


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


def _window_problem(method, K, T, zero='all scores 0'):
    """(why --window_size K does not fit `method` at --trajectory_len T, a note), or None if it fits."""
    low = SCORES[method].window
    if low <= K <= T:
        return None
    note = f" (with K = 2 every TDDS window holds one contribution: {zero})" if method == 'tdds' and K == 2 else ""
    return f"--window_size {K} must be between {low} and --trajectory_len {T}", note


def combinations(method, trajectory_lens, window_sizes, decays):
    """The valid, distinct (T, K, beta) of `method` (K and beta are None where the method has no use
    for them), and the skipped ones as (T, K, reason)."""
    spec = SCORES[method]
    out, skipped = [], []
    for T in trajectory_lens:
        if T < 1:
            skipped.append((T, None, f"--trajectory_len {T} must be at least 1"))
            continue
        for K in (window_sizes if spec.window is not None else [None]):
            problem = _window_problem(method, K, T) if K is not None else None
            if problem:
                skipped.append((T, K, problem[0] + problem[1]))
                continue
            for beta in (decays if spec.decay else [None]):
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
    spec = SCORES[method]
    problem = _window_problem(method, window_size, trajectory_len, 'all scores would be 0') \
        if spec.window is not None else None
    if problem:
        raise UserError(f"{problem[0]} for --method {method}{problem[1]}")
    if spec.decay and not 0 < decay <= 1:
        raise UserError(f"--decay {decay} must be in (0, 1]")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"--chunk_size {chunk_size} must be at least 1")


def method_labels(dyn, method, targets=None):
    """The (N,) int64 labels `method` needs on `dyn` (targets, else dyn.targets), or None if it
    needs none; a UserError saying how to supply them if there are none. A folder of the contrib
    layout that does not record the method's feature is refused here, before any work."""
    feature = SCORES[method].feature
    if dyn.fmt == 'contrib' and feature is not None and feature not in CONTRIB_FEATURES:
        raise UserError(f"--method {method} reads each epoch's {feature}, which the contrib layout of {dyn.path} "
                        f"(train.py --dynamics_format contrib) does not record: score the dynamics of a run "
                        f"recorded with --dynamics_format logits (the default)")
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

    targets: (N,) labels, overriding dyn.targets (needed by the scores of LABEL_METHODS when the
    dynamics are logits). Bad input raises UserError before any result exists.
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
    if SCORES[method].source == 'seed':
        return [np.random.default_rng(seed).random(dyn.n).astype(np.float32) for _ in combos]

    y = method_labels(dyn, method, targets)          # (N,) int64 or None, checked before importing torch
    from utils.science.reducers import LAST_EPOCH_ONLY
    reducer = SCORES[method].reducer
    # epochs whose data is read: a reducer of the last epoch needs only each T's last epoch
    epochs = sorted({T - 1 for T, _, _ in combos}) if reducer in LAST_EPOCH_ONLY else list(range(T_max))
    return _Pass(dyn, method, combos, y, epochs, chunk_size, device, progress, mean_p).run()


class _Pass:
    """One pass over the epoch files of `epochs`, chunk by chunk of samples, reducing each chunk for
    every combination."""

    def __init__(self, dyn, method, combos, y, epochs, chunk_size, device, progress, mean_p):
        import torch
        from tqdm import tqdm

        from utils.science.features import FILE_TAGS
        self.dyn, self.method, self.combos, self.spec = dyn, method, combos, SCORES[method]
        self.feature = self.spec.feature
        self.tag = 'Output' if dyn.fmt == 'logits' else FILE_TAGS[self.feature]  # the file read per epoch
        if dyn.fmt == 'contrib':
            if self.feature == 'contrib':
                epochs = epochs[1:]   # <e>_Contrib.npy holds c_{e-1}, e >= 1
            for e in epochs:          # check every file before the long loop
                dyn.file(e, self.tag)
        self.epochs = epochs
        self.y = None if y is None else torch.from_numpy(y)
        self.device = torch.device(device)
        n = dyn.n
        self.scores = [np.empty(n, np.float32) for _ in combos]
        self.mean_ps = [np.empty(n, np.float32) for _ in combos] if mean_p else None
        self.nonfinite = [0] * len(epochs)   # samples with NaN/inf inputs, per epoch
        self.bar = tqdm(total=len(epochs), unit='epoch', desc=f'{method} scores',
                        disable=not (progress and sys.stderr.isatty()),
                        bar_format='{l_bar}{bar}| {n:.1f}/{total_fmt} epochs [{elapsed}<{remaining}]')
        self.chunk_size = chunk_size or auto_chunk_size(dyn.num_classes, max(T for T, _, _ in combos))
        # TDDS from logits, the common case, allocates nothing per epoch: the chunk's logits are read
        # into one buffer, turned into p in place, and log(p + 1e-8) ping-pongs between two buffers.
        self.fast = dyn.fmt == 'logits' and self.feature == 'contrib'
        if self.fast:
            self.host = torch.empty(min(self.chunk_size, n), dyn.num_classes)            # (chunk, C) float32
            self.xbuf = self.host if self.device.type == 'cpu' else torch.empty_like(self.host, device=self.device)
            self.logp_buf, self.prev_buf = torch.empty_like(self.xbuf), torch.empty_like(self.xbuf)

    def run(self):
        n = self.dyn.n
        for a in range(0, n, self.chunk_size):
            b = min(a + self.chunk_size, n)
            self._reduce(a, b, self._features(a, b))
        self.bar.close()
        bad = [(e, k) for e, k in zip(self.epochs, self.nonfinite) if k]
        if bad:
            e, k = bad[0]
            more = f" (and {len(bad) - 1} more epochs)" if len(bad) > 1 else ''
            raise UserError(f"{self.dyn.file(e, self.tag).path}: epoch {e} has NaN/inf "
                            f"{'logits' if self.dyn.fmt == 'logits' else 'values'} for {k} samples{more}")
        return (self.scores, self.mean_ps) if self.mean_ps is not None else self.scores

    def _features(self, a, b):
        """(epochs, b-a) the feature of samples a..b-1 at each epoch read (tdds: c_0..c_{T_max-2})."""
        import torch

        from utils.science.features import contribution_, epoch_features, log_eps, softmax_
        dyn, rows = self.dyn, []   # per-epoch (b-a,) features of the chunk
        yb = None if self.y is None else self.y[a:b].to(self.device)
        for j, e in enumerate(self.epochs):
            if self.fast:
                dyn.read(e, self.tag, a, b, out=self.host[:b - a].numpy())
                x = self.xbuf[:b - a].copy_(self.host[:b - a]) if self.xbuf is not self.host else self.host[:b - a]
            else:
                x = torch.from_numpy(_native(dyn.read(e, self.tag, a, b))).to(self.device).float()  # (B, C) or (B,)
            bad = ~torch.isfinite(x.sum(-1) if x.dim() == 2 else x)
            if bad.any():
                self.nonfinite[j] += int((~torch.isfinite(x)).reshape(b - a, -1).any(1).sum())
            if self.fast:
                p = softmax_(x)                                            # (B, C) p_e, in place
                logp = log_eps(p, out=self.logp_buf[:b - a])               # (B, C) log(p_e + 1e-8)
                if j > 0:
                    rows.append(contribution_(p, logp, self.prev_buf[:b - a]))  # c_{e-1}
                self.logp_buf, self.prev_buf = self.prev_buf, self.logp_buf
            elif dyn.fmt == 'logits':   # a baseline: one epoch's feature, no previous epoch needed
                rows.append(epoch_features(x, yb, None, (self.feature,))[0][self.feature])
            else:
                rows.append(x)
            self.bar.update((b - a) / dyn.n)
        return torch.stack(rows)

    def _reduce(self, a, b, feats):
        """Each combination's scores (and mean p_y) of samples a..b-1 from their features."""
        from utils.science.reducers import LAST_EPOCH_ONLY, REDUCERS
        from utils.science.reducers import mean_p as mean_of_p
        reduce = REDUCERS[self.spec.reducer]
        for out, (T, K, beta) in zip(self.scores, self.combos):
            if self.spec.reducer in LAST_EPOCH_ONLY:
                mine = feats[self.epochs.index(T - 1)][None]              # (1, B) the feature at epoch T-1
            else:   # T epochs give T-1 contributions c_t between consecutive ones
                mine = feats[:T - 1] if self.feature == 'contrib' else feats[:T]
            out[a:b] = reduce(mine, T, K, beta).cpu().numpy()
        for out, (T, _, _) in zip(self.mean_ps or (), self.combos):
            out[a:b] = mean_of_p(feats, T).cpu().numpy()                   # (B,) mean p_y, epochs 0..T-1


def _native(a):
    """float16/float32 arrays as they are (torch reads them), anything else as native float32."""
    return a if a.dtype in (np.float32, np.float16) else a.astype(np.float32)
