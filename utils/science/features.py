"""Per-sample quantities of one epoch, computed from that epoch's logits.

Every score of docs/METHODS.md reduces, per sample, a sequence of per-epoch numbers: TDDS the
contribution c_t between consecutive epochs, the baselines the L2 error, correctness, margin,
entropy or target probability. They are all computed here, in one place, so that the scorer
(utils/science/scores.py, reading recorded logits) and train.py's recorder (`--dynamics_format contrib`,
computing them during training, so only T x N floats are ever stored) give the same numbers.
"""
import torch

FEATURES = ('contrib', 'el2n', 'correct', 'margin', 'entropy', 'target_prob')
FILE_TAGS = {'contrib': 'Contrib', 'el2n': 'El2n', 'correct': 'Correct', 'margin': 'Margin',
             'entropy': 'Entropy', 'target_prob': 'TargetProb'}   # written as <e>_<Tag>.npy
LABEL_FEATURES = ('el2n', 'correct', 'margin', 'target_prob')    # these need the labels y
EPS = 1e-8   # log(p + 1e-8), as in the published TDDS script


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
    targets   (B,) int64 labels, or None (then only 'contrib' and 'entropy' can be asked for)
    prev_logp (B, C) log(p_{e-1} + 1e-8) of the same samples, as returned one epoch earlier,
              or None at epoch 0 (then 'contrib' is left out of the result)
    Returns ({name: (B,) float32}, logp (B, C) = log(p_e + 1e-8), the next epoch's prev_logp).

    'contrib' at epoch e >= 1 is the spec's c_{e-1} = sum_c |p_e (log(p_e+1e-8) - log(p_{e-1}+1e-8))|
    (absolute value inside the class sum, as published).
    """
    names = tuple(names)
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {FEATURES}")
    if targets is None and any(n in LABEL_FEATURES for n in names):
        raise ValueError(f"features {[n for n in names if n in LABEL_FEATURES]} need targets")

    z = logits.float()                       # (B, C)
    p = torch.softmax(z, dim=1)              # (B, C) p_e
    logp = log_eps(p)                        # (B, C) log(p_e + 1e-8)
    out = {}
    if 'contrib' in names and prev_logp is not None:
        out['contrib'] = contribution_(p, logp, prev_logp.clone())
    if 'entropy' in names:
        # exact log p here (not log(p + 1e-8)): confident samples have entropies far below 1e-8 * C
        out['entropy'] = -(p * torch.log_softmax(z, dim=1)).sum(1)
    if targets is not None:
        y = targets.long().view(-1, 1)       # (B, 1)
        if 'el2n' in names:
            err = p.clone()
            err.scatter_add_(1, y, torch.full_like(y, -1, dtype=p.dtype))   # p - onehot(y)
            out['el2n'] = torch.linalg.vector_norm(err, dim=1)
        if 'correct' in names:
            out['correct'] = (z.argmax(1) == y.squeeze(1)).float()
        if 'margin' in names:
            others = z.scatter(1, y, float('-inf'))                         # z without z_y
            out['margin'] = z.gather(1, y).squeeze(1) - others.amax(1)
        if 'target_prob' in names:
            out['target_prob'] = p.gather(1, y).squeeze(1)
    return {n: out[n] for n in names if n in out}, logp
