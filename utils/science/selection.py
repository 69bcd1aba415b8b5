"""From a scoring run's mask/score files to the indices train_subset.py trains on.

Conventions (docs/METHODS.md, "Selection"):
- higher score = more important = kept; `rate` is the fraction PRUNED;
- mask file = argsort(S) ascending (int64 dataset indices), score file = sort(S) ascending;
- every strategy keeps exactly kept_count(N, rate) = N - int(rate * N) samples, the size of the
  published slice mask[int(rate * N):], so strategies are compared at equal subset size.
Pure numpy: this module is also used by tests and summaries that never import torch.
"""
import math
import os

import numpy as np

from utils.errors import UserError
from utils.methods import SELECTIONS

STRATEGIES = tuple(SELECTIONS)   # --selection (declared in utils/methods.py)
BETA_C = 4.0      # --beta_c default: DUAL's value for CIFAR (tuned there, not on other data sets)
BETA_SCALE = 15   # DUAL's C: beta = C (1 - mu)(1 - r^c), alpha = C + 1 - beta
BETA_TOP = 10     # mu is the mean p_y of this many highest-scored samples


def kept_count(n, rate):
    """Samples kept at pruning rate `rate`: n - int(rate * n), the size of the published slice."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"--subset_rate must be in [0, 1) (the fraction pruned), got {rate}")
    keep = n - int(rate * n)
    if keep < 1:
        raise UserError(f"--subset_rate {rate} keeps no sample of the {n} in the training set")
    return keep


# ----------------------------------------------------------------------------- loading

def _load_1d(path, what):
    """np.load a 1-D array, turning every way the file can be wrong into a one-line UserError."""
    if os.path.isdir(path):
        prefix = "data_mask_" if what == "mask" else "score_"
        raise UserError(f"{what} file {path} is a folder: give the {prefix}<tag>.npy file in it")
    if not os.path.isfile(path):
        raise UserError(f"{what} file {path} does not exist")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # truncated, not .npy, pickled objects, permissions ...
        raise UserError(f"{what} file {path} is not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        shape = getattr(a, "shape", "?")
        raise UserError(f"{what} file {path} must hold a 1-D array, got shape {shape}")
    return a


def load_mask_and_score(mask_path, score_path, n, dataset=None):
    """Read and check a mask (+ optional score) file written by importance_evaluation.py.

    Returns (order, score_by_index):
      order          (N,) int64, the mask: dataset indices from lowest to highest score;
      score_by_index (N,) float64 with score_by_index[order[j]] = score[j] (dataset order),
                     or None when score_path is None.
    `dataset` only names the data set in the length-mismatch message.
    Any mismatch is a UserError naming the file: a wrong file here silently trains on the wrong
    samples, which no later step could detect.
    """
    mask = _load_1d(mask_path, "mask")
    if mask.dtype.kind not in "iu":
        raise UserError(f"mask file {mask_path} must hold integer dataset indices, got dtype {mask.dtype}")
    if len(mask) != n:
        name = f"the {dataset} training set" if dataset else "the training set"
        raise UserError(f"mask file {mask_path}: mask has {len(mask)} entries but {name} has {n} samples"
                        " — was it computed on another data set?")
    if n and (mask.min() < 0 or mask.max() >= n):
        raise UserError(f"mask file {mask_path} holds indices outside [0, {n}) "
                        f"(min {mask.min()}, max {mask.max()})")
    order = mask.astype(np.int64)
    seen = np.bincount(order, minlength=n)  # (N,) how often each dataset index occurs
    if (seen != 1).any():
        dup = int(np.flatnonzero(seen > 1)[0])
        raise UserError(f"mask file {mask_path} lists dataset index {dup} more than once; "
                        "expected a permutation of 0 .. N-1")
    if score_path is None:
        return order, None

    score = _load_1d(score_path, "score")
    if score.dtype.kind not in "fiu":
        raise UserError(f"score file {score_path} must hold numbers, got dtype {score.dtype}")
    if len(score) != len(order):
        raise UserError(f"score file {score_path} has {len(score)} entries but mask file {mask_path} "
                        f"has {len(order)}")
    score = score.astype(np.float64)
    if not np.isfinite(score).all():
        raise UserError(f"score file {score_path} contains NaN or inf "
                        f"({int((~np.isfinite(score)).sum())} entries)")
    if (np.diff(score) < 0).any():
        raise UserError(f"score file {score_path} is not sorted ascending, so it is not the score file "
                        f"that belongs to mask file {mask_path}")
    _check_pair(mask_path, score_path, order, score)
    score_by_index = np.empty(n, dtype=np.float64)
    score_by_index[order] = score
    return order, score_by_index


def file_tag(path, prefix):
    """<tag> of a file named <prefix><tag>.npy (data_mask_, score_), else None."""
    name = os.path.basename(path or "")
    return name[len(prefix):-4] if name.startswith(prefix) and name.endswith(".npy") else None


def _check_pair(mask_path, score_path, order, score):
    """A mask and a score file from two different scorings pass every check above (every score file
    is sorted): refuse names whose tags differ (data_mask_<tag>.npy, score_<tag>.npy) and, where
    importance_evaluation.py left dataset_score_<tag>.npy beside the mask, a score that is not it."""
    mtag, stag = file_tag(mask_path, "data_mask_"), file_tag(score_path, "score_")
    if mtag is not None and stag is not None and mtag != stag:
        raise UserError(f"mask file {mask_path} and score file {score_path} come from two different scorings "
                        f"({mtag} vs {stag}): pass score_{mtag}.npy with this mask")
    beside = os.path.join(os.path.dirname(mask_path), f"dataset_score_{mtag}.npy") if mtag else None
    if beside and os.path.isfile(beside):
        ref = np.load(beside, allow_pickle=False)
        if ref.shape == order.shape and not np.array_equal(ref[order].astype(np.float64), score):
            raise UserError(f"score file {score_path} is not the score of mask file {mask_path} "
                            f"({os.path.basename(beside)} beside the mask says otherwise)")


# ----------------------------------------------------------------------------- strategies

def _ccs_budgets(sizes, budget):
    """Coverage-centric budgets: strata visited smallest first (ties by stratum index), each gets
    min(its size, remaining budget // non-empty strata left). The largest stratum comes last and
    takes what is left, so the total is exact whenever budget <= sizes.sum(); the fill loop below
    states that guarantee in code rather than relying on the argument."""
    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.zeros_like(sizes)
    visit = [s for s in np.argsort(sizes, kind="stable") if sizes[s] > 0]
    rest = budget
    for k, s in enumerate(visit):
        out[s] = min(sizes[s], rest // (len(visit) - k))
        rest -= out[s]
    for s in visit:  # leftover (if any): fill strata with room, in the same order
        extra = min(sizes[s] - out[s], rest)
        out[s] += extra
        rest -= extra
    return out


def _select_ccs(ranked, score_by_index, budget, mis_ratio, strata, rng, where=""):
    """CCS on one group. ranked: (M,) dataset indices by ascending score (mask order)."""
    m = len(ranked)
    n_drop = int(mis_ratio * m)
    rest = ranked[:m - n_drop]  # drop the n_drop highest scores (the likely mislabeled / too hard)
    if budget > len(rest):
        raise UserError(f"--mis_ratio {mis_ratio} removes {n_drop} samples{where}, "
                        f"leaving {len(rest)} < {budget} to keep")
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    s = score_by_index[rest]  # (M',) scores of the candidates
    lo, hi = s.min(), s.max()
    if hi > lo:  # equal-width strata over [lo, hi]; the maximum belongs to the last stratum
        sid = np.minimum(((s - lo) / (hi - lo) * strata).astype(np.int64), strata - 1)
    else:
        sid = np.zeros(len(s), dtype=np.int64)
    budgets = _ccs_budgets(np.bincount(sid, minlength=strata), budget)
    picks = [rng.choice(rest[sid == k], size=b, replace=False) for k, b in enumerate(budgets) if b > 0]
    return np.concatenate(picks)


def beta_weights(score, mean_p, rate, c=BETA_C):
    """DUAL's pruning-rate-adaptive sampling weights (N,) float64: w_i = BetaPDF(mean_p_i; a, b) * score_i
    with mu = mean of mean_p over the BETA_TOP highest scores (stable order), b = 15 (1 - mu)(1 - rate^c),
    a = 16 - b, mean_p clipped to [1e-12, 1 - 1e-12]; the pdf is evaluated in log space (math.lgamma),
    so extreme parameters do not overflow. As rate -> 1, b -> 0 and the weight moves to easy samples."""
    score = np.asarray(score, dtype=np.float64)
    p = np.clip(np.asarray(mean_p, dtype=np.float64), 1e-12, 1 - 1e-12)
    mu = float(p[np.argsort(score, kind="stable")[-BETA_TOP:]].mean())
    b = BETA_SCALE * (1 - mu) * (1 - rate ** c)   # > 0: mu <= 1 - 1e-12 and rate < 1
    a = BETA_SCALE + 1 - b
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.exp(log_norm + (a - 1) * np.log(p) + (b - 1) * np.log1p(-p)) * score


def _select_beta(idx, weights, b, rng, where=""):
    """b of the dataset indices idx drawn without replacement, with probability proportional to weights[idx]."""
    w = weights[idx]
    positive = int((w > 0).sum())
    if positive < b:
        raise UserError(f"--selection beta: only {positive} samples{where} have a positive weight "
                        f"(Beta pdf x score), {b} are to be kept; the score must be positive where it matters "
                        f"(use a score where higher = kept and > 0, e.g. dual or tdds)")
    return rng.choice(idx, size=b, replace=False, p=w / w.sum())


def class_budgets(counts, total):
    """Largest-remainder split of `total` proportional to `counts` (ties: lower class first)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    quota = counts * total  # exact integer arithmetic: quota / n is the ideal share
    out = quota // n
    short = total - int(out.sum())
    out[np.argsort(-(quota % n), kind="stable")[:short]] += 1
    return out


def select(order, score_by_index, rate, strategy="top", seed=42, mis_ratio=0.0, strata=50,
           class_balanced=False, targets=None, n=None, mean_p=None, beta_c=BETA_C):
    """Kept dataset indices, (K,) int64 sorted ascending, with K = kept_count(N, rate).

    order: (N,) the mask (dataset indices by ascending score); score_by_index: (N,) scores in
    dataset order. 'top' needs order, 'ccs' needs score_by_index (order, if given, breaks ties when
    dropping the mis_ratio part), 'beta' needs score_by_index and mean_p (N,) (each sample's mean
    p_y, dataset order; DUAL's sampler, beta_weights), 'random' neither. N is len(order), else
    len(score_by_index), else len(targets), else the `n` argument. targets: (N,) labels, needed for
    class_balanced (beta: mu and the weights are computed once over all samples, then drawn per class).
    Randomness (ccs, random, beta) comes only from np.random.default_rng(seed).
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown selection strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not 0.0 <= mis_ratio < 1.0:
        raise UserError(f"--mis_ratio must be in [0, 1), got {mis_ratio}")
    if int(strata) != strata or strata < 1:
        raise UserError(f"--strata must be a positive integer, got {strata}")
    if strategy == "top" and order is None:
        raise UserError("strategy 'top' needs the mask file")
    if SELECTIONS[strategy].score_values and score_by_index is None:
        raise UserError(f"strategy '{strategy}' needs the score file that belongs to the mask")
    if strategy == "beta" and mean_p is None:
        raise UserError("strategy 'beta' needs each sample's mean p_y (mean_p_<tag>.npy of --method dual)")
    if strategy == "beta" and not beta_c > 0:
        raise UserError(f"--beta_c must be positive, got {beta_c}")
    if strategy == "beta" and np.min(score_by_index) < 0:   # the scores are sampling weights
        raise UserError(f"--selection beta samples in proportion to the score, which must be >= 0 (this one "
                        f"reaches {np.min(score_by_index):.4g}): use a score such as dual or tdds")
    if class_balanced and targets is None:
        raise UserError("--class_balanced needs the training labels")

    lengths = [len(a) for a in (order, score_by_index, targets, mean_p) if a is not None] + ([n] if n is not None else [])
    if not lengths:
        raise ValueError("select() needs order, score_by_index, targets or n to know the data set size")
    if len(set(lengths)) != 1:
        raise ValueError(f"select() got inputs of different lengths {lengths}")
    n = lengths[0]
    budget = kept_count(n, rate)
    if order is None and score_by_index is not None:
        order = np.argsort(score_by_index, kind="stable")
    rng = np.random.default_rng(seed)
    weights = beta_weights(score_by_index, mean_p, rate, beta_c) if strategy == "beta" else None

    def pick(idx, b, where=""):
        """Keep b of the group idx (dataset indices: mask order for top/ccs/beta, ascending for random)."""
        if strategy == "top":
            return idx[len(idx) - b:]
        if strategy == "random":
            return rng.choice(idx, size=b, replace=False)
        if strategy == "beta":
            return _select_beta(idx, weights, b, rng, where)
        return _select_ccs(idx, score_by_index, b, mis_ratio, int(strata), rng, where)

    # random ignores the mask entirely, so the baseline is the same whichever scores were computed
    base = np.arange(n, dtype=np.int64) if strategy == "random" else np.asarray(order, dtype=np.int64)
    if not class_balanced:
        kept = pick(base, budget)  # for top: base[int(rate * n):], the published slice
    else:
        targets = np.asarray(targets)
        classes, counts = np.unique(targets, return_counts=True)
        budgets = class_budgets(counts, budget)
        group_of = targets[base]  # (N,) class of each entry of base, base order kept within a class
        kept = np.concatenate([pick(base[group_of == c], int(b), f" in class {c}")
                               for c, b in zip(classes, budgets)])
    kept = np.sort(kept.astype(np.int64))
    assert len(kept) == budget and len(np.unique(kept)) == budget
    return kept


def loss_weights(score_by_index):
    """Published per-sample loss weights u = (S - min S) / (max S - min S), (N,) float32.
    All ones when every score is equal (the published formula would divide by zero)."""
    s = np.asarray(score_by_index, dtype=np.float64)
    lo, hi = s.min(), s.max()
    if hi == lo:
        return np.ones(len(s), dtype=np.float32)
    return ((s - lo) / (hi - lo)).astype(np.float32)
