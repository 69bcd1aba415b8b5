"""Per-sample quantities of one epoch, computed from that epoch's logits.

Every score of docs/METHODS.md reduces, per sample, a sequence of per-epoch numbers: TDDS the
contribution c_t between consecutive epochs, each baseline one quantity of each epoch's prediction
(its L2 error, correctness, logit margin, entropy, a probability, ...).
They are all computed here, in one place, so that the scorer (utils/science/scores.py, reading
recorded logits) and train.py's recorder (`--dynamics_format contrib`, computing the features of
utils.methods.CONTRIB_FEATURES during training, so only T x N floats are ever stored) give the same
numbers. A score names its feature in utils/methods.py; each feature but 'contrib' (which needs the
previous epoch) is one function below, decorated with @per_epoch.
"""
import torch

from utils.methods import CONTRIB_FEATURES, SCORES

FEATURES = CONTRIB_FEATURES   # what the contrib recorder writes per epoch
FILE_TAGS = {f: ''.join(w.capitalize() for w in f.split('_')) for f in FEATURES}   # written as <e>_<Tag>.npy
LABEL_FEATURES = tuple(dict.fromkeys(s.feature for s in SCORES.values() if s.labels))   # these need the labels y
EPS = 1e-8   # log(p + 1e-8), as in the published TDDS script
PER_EPOCH = {}   # name -> f(z (B, C) float32 logits, p (B, C) softmax, y (B, 1) int64 or None) -> (B,) float32


def per_epoch(f):
    """Declare f as the per-epoch feature of its name (a score reads it by that name, utils/methods.py)."""
    PER_EPOCH[f.__name__] = f
    return f


def softmax_(z):
    """Softmax over dim 1 computed in place in z (B, C) float32, which then holds p."""
    z.sub_(z.amax(1, keepdim=True)).exp_()
    return z.div_(z.sum(1, keepdim=True))


def log_eps(p, out=None):
    """log(p + 1e-8), into `out` when given (no allocation)."""
    return torch.add(p, EPS, out=out).log_() if out is not None else (p + EPS).log_()


def contribution_(p, logp, prev_logp):
    """TDDS first depth c = sum_c |p_e (log(p_e+1e-8) - log(p_{e-1}+1e-8))| (B,), with the absolute
    value inside the class sum (as published). prev_logp (B, C) is used as scratch: overwritten."""
    return prev_logp.sub_(logp).mul_(p).abs_().sum(1)   # |p (prev - logp)| == |p (logp - prev)|


def epoch_features(logits, targets, prev_logp, names):
    """Features `names` of one epoch for a batch of samples.

    logits    (B, C) this epoch's logits z_e (any float dtype; computed in float32)
    targets   (B,) int64 labels, or None (then only features no score needs labels for can be asked for)
    prev_logp (B, C) log(p_{e-1} + 1e-8) of the same samples, as returned one epoch earlier,
              or None at epoch 0 (then 'contrib' is left out of the result)
    Returns ({name: (B,) float32}, logp (B, C) = log(p_e + 1e-8), the next epoch's prev_logp).

    'contrib' at epoch e >= 1 is the spec's c_{e-1} = sum_c |p_e (log(p_e+1e-8) - log(p_{e-1}+1e-8))|
    (absolute value inside the class sum, as published).
    """
    names = tuple(names)
    unknown = [n for n in names if n != 'contrib' and n not in PER_EPOCH]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {('contrib',) + tuple(PER_EPOCH)}")
    if targets is None and any(n in LABEL_FEATURES for n in names):
        raise ValueError(f"features {[n for n in names if n in LABEL_FEATURES]} need targets")

    z = logits.float()                       # (B, C)
    p = torch.softmax(z, dim=1)              # (B, C) p_e
    logp = log_eps(p)                        # (B, C) log(p_e + 1e-8)
    y = None if targets is None else targets.long().view(-1, 1)   # (B, 1)
    out = {}
    for n in names:
        if n != 'contrib':
            out[n] = PER_EPOCH[n](z, p, y)
        elif prev_logp is not None:
            out[n] = contribution_(p, logp, prev_logp.clone())
    return out, logp


# ------------------------------------------------------------------------ the per-epoch features
@per_epoch
def el2n(z, p, y):
    """||p - onehot(y)||_2."""
    err = p.clone()
    err.scatter_add_(1, y, torch.full_like(y, -1, dtype=p.dtype))   # p - onehot(y)
    return torch.linalg.vector_norm(err, dim=1)


@per_epoch
def correct(z, p, y):
    """1.0 where argmax z = y, else 0.0."""
    return (z.argmax(1) == y.squeeze(1)).float()


@per_epoch
def margin(z, p, y):
    """The logit margin z_y - max_{c != y} z_c (AUM)."""
    others = z.scatter(1, y, float('-inf'))                         # z without z_y
    return z.gather(1, y).squeeze(1) - others.amax(1)


@per_epoch
def entropy(z, p, y):
    """-sum_c p_c log p_c, with the exact log p (not log(p + 1e-8)): confident samples have entropies
    far below 1e-8 * C."""
    return -(p * torch.log_softmax(z, dim=1)).sum(1)


@per_epoch
def target_prob(z, p, y):
    """p_y."""
    return p.gather(1, y).squeeze(1)


@per_epoch
def prob_gap(z, p, y):
    """p_(1) - p_(2): the largest predicted probability minus the second largest (DeepCore's margin)."""
    top = p.topk(2, dim=1).values                                   # (B, 2), descending
    return top[:, 0] - top[:, 1]


@per_epoch
def least_conf(z, p, y):
    """1 - max_c p_c (least confidence)."""
    return 1 - p.amax(1)
