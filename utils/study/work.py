"""The work of a static point's scoring, in training passes of the TARGET model (the one its subset
runs train) as a fraction of one full-data training of it (E epochs x N samples). One rule for the
sweep's equal-work controls, planned before anything runs (utils/study/plan.py), and for the
summary's ledger, counted from the runs' records (utils/study/costs.py); docs/STUDIES.md, "Work
across architectures", says it in words.

    dynamics  = T / E x f x train_factor       the scoring run's first T epochs, on a fraction f of
                                               the data, by a model that costs train_factor training
                                               passes of the target per training pass (1 for the target)
    features  = forward_share / E              score extrapolation: one forward pass of all N samples
                                               through the scoring model (0 where there is none)

train_factor and forward_share are measured with torch's FLOP counter (utils/training/flops.py).
"""

ROUND = 2   # equal-work rates are planned to 2 decimals (0.37): a subset's size is floored to whole samples anyway


def scoring_work(T, epochs, fraction=1.0, train_factor=1.0, forward_share=0.0):
    """dynamics + features (module docstring) for a score of the first T of `epochs` epochs."""
    if not epochs:
        raise ValueError("scoring_work: the schedule's epochs must be positive")
    return float(T) / float(epochs) * float(fraction) * float(train_factor) + float(forward_share) / float(epochs)


def point_work(scoring, rate):
    """The charged work of a static point planned under the epoch budget: its scoring's work plus a
    subset run that trains 1 - rate of the data for the schedule's epochs."""
    return float(scoring) + (1.0 - float(rate))


def equal_work_rate(work):
    """The pruning rate (for RS2 the ratio) whose run under the epoch budget trains `work` of one
    full-data training: 1 - work, to ROUND decimals, as the sweep writes rates ('%g': 0.37); None where
    no pruned run costs that much (work of one full-data training or more: the full-data run itself
    is that point's control) or where nothing would be trained."""
    r = round(1.0 - float(work), ROUND)
    return "%g" % r if 0 < r < 1 else None
