"""The Moderate baseline (Xia et al., ICLR 2023, "Moderate coreset"): keep the samples whose
features are at a moderate distance from their class centre, pruning both the easiest (closest)
and the hardest (farthest). docs/METHODS.md, "Moderate".

f_i = the input of the model's final nn.Linear for training image i (eval mode, no augmentation,
the training normalisation); d_i = ||f_i - median_{j: y_j = y_i} f_j||_2 with the coordinate-wise
median of the class. The published selection sorts d over all samples and keeps the middle band of
ranks at each pruning rate; as a score (higher = kept) that is -|rank(d_i) - (N-1)/2|, rank being
the position in the stable ascending argsort of d. Keeping the N - floor(rN) highest scores then
keeps the band of ranks closest to the middle: the published band [round(N(1-r')/2), round(N(1+r')/2)),
r' = 1 - r, up to one sample at its edges, where ranks at equal distance from the middle tie (the
stable argsort of the scores keeps the one of higher dataset index).
The features come from utils/training/checkpoint_features.py (one forward pass of a model).
"""
import numpy as np


def moderate_score(features, targets):
    """(d (N,) distance to the class median, score (N,) float32 = -|rank(d) - (N-1)/2|)."""
    f = np.asarray(features, dtype=np.float32)
    y = np.asarray(targets)
    d = np.empty(len(f), dtype=np.float64)
    for c in np.unique(y):
        members = y == c
        centre = np.median(f[members], axis=0)                           # (D,) coordinate-wise
        d[members] = np.linalg.norm(f[members] - centre, axis=1)
    rank = np.empty(len(d), dtype=np.float64)
    rank[np.argsort(d, kind="stable")] = np.arange(len(d))
    return d, (0.0 - np.abs(rank - (len(d) - 1) / 2)).astype(np.float32)   # 0.0 -: no -0.0
