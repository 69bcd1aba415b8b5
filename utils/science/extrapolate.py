"""Score extrapolation by nearest neighbours (Schmidt et al., 2025, arXiv 2506.09010, the kNN
variant; docs/METHODS.md, "Score extrapolation").

A scoring run trained on a random subset S of the training set only, so a score s_j exists for
j in S alone. Every sample i has a feature h_i (the final scoring model's penultimate layer); a
sample outside S gets the mean score of its k nearest samples of S:

    s_i = (1/k) * sum_{j in nn_k(i)} s_j,    nn_k(i) = the k samples j of S with the smallest
                                             ||h_i - h_j||_2, ties broken by the smaller index j

and a sample of S keeps its own score. Distances are computed in float64 from the differences
(torch.cdist without the matrix-product shortcut, whose rounding could split equal distances), a
chunk of samples at a time, so memory stays near `chunk_bytes` whatever N.
"""
import numpy as np

from utils.errors import UserError

K_DEFAULT = 10          # the spec's k
CHUNK_BYTES = 64 << 20  # distance buffer per chunk of samples


def check_k(k, n_subset):
    """k must lie in 1..|S|: one line naming --extrapolate_k otherwise."""
    if not 1 <= k <= n_subset:
        raise UserError(f"--extrapolate_k {k} must lie in 1..{n_subset} (the samples the scoring run trained on)")


def nearest(features, subset, k=K_DEFAULT, chunk_bytes=CHUNK_BYTES, device="cpu"):
    """(others, positions): `others` (N - |S|,) int64 the samples outside S, ascending; `positions`
    (N - |S|, k) int64, row r the positions in `subset` of the k nearest samples of S to others[r]
    (the set nn_k of the module docstring, listed in ascending order of index).

    features: (N, D) floats in dataset order; subset: (|S|,) strictly increasing dataset indices."""
    import torch
    feats = np.asarray(features)
    subset = np.asarray(subset, dtype=np.int64)
    n = len(feats)
    if subset.ndim != 1 or len(subset) == 0 or (np.diff(subset) <= 0).any() or subset[0] < 0 or subset[-1] >= n:
        raise ValueError(f"subset must be strictly increasing indices in 0..{n - 1}")
    check_k(k, len(subset))
    if not np.isfinite(feats).all():
        raise UserError(f"the features of {int((~np.isfinite(feats)).any(1).sum())} samples are NaN or inf: "
                        f"no distances to take")
    inside = np.zeros(n, dtype=bool)
    inside[subset] = True
    others = np.flatnonzero(~inside).astype(np.int64)
    device = torch.device(device)
    ref = torch.from_numpy(feats[subset]).to(device, torch.float64)                 # (|S|, D)
    rows = max(1, chunk_bytes // (8 * len(subset)))
    positions = np.empty((len(others), k), dtype=np.int64)
    for a in range(0, len(others), rows):
        q = torch.from_numpy(feats[others[a:a + rows]]).to(device, torch.float64)   # (B, D)
        d = torch.cdist(q, ref, compute_mode="donot_use_mm_for_euclid_dist")      # (B, |S|)
        kth = torch.topk(d, k, dim=1, largest=False).values[:, -1:]               # (B, 1) k-th distance
        below = d < kth
        need = k - below.sum(1, keepdim=True)                                     # ties to take at kth
        tied = d == kth
        chosen = below | (tied & (torch.cumsum(tied, 1) <= need))                 # lowest indices first
        positions[a:a + len(q)] = chosen.nonzero()[:, 1].view(len(q), k).cpu().numpy()
    return others, positions


def extend(values, subset, others, positions):
    """(N, ...) array: values (|S|, ...) (rows in `subset` order) at the samples of S, unchanged, and at
    others[r] the mean of values[positions[r]] (summed in float64, in the order of `positions`)."""
    values = np.asarray(values)
    n = len(subset) + len(others)
    out = np.empty((n,) + values.shape[1:], dtype=values.dtype)
    out[np.asarray(subset)] = values
    acc = np.zeros((len(others),) + values.shape[1:], dtype=np.float64)
    for j in range(positions.shape[1]):
        acc += values[positions[:, j]]
    out[others] = acc / positions.shape[1]
    return out


def knn_extrapolate(values, subset, features, k=K_DEFAULT, chunk_bytes=CHUNK_BYTES, device="cpu"):
    """Every sample's value: `values` (|S|,) or (|S|, m) of the samples `subset` (strictly increasing
    dataset indices, the same order), extended to all N samples of `features` (N, D) by the mean
    over the k nearest samples of S. Returns (N,) or (N, m) in dataset order, values' dtype."""
    others, positions = nearest(features, subset, k, chunk_bytes, device)
    return extend(values, subset, others, positions)
