"""utils/science/selection.py against hand-made cases and plain-loop reference implementations of docs/METHODS.md."""
from fractions import Fraction

import numpy as np
import pytest

from utils.errors import UserError
from utils.science.selection import kept_count, load_mask_and_score, loss_weights, select


# ----------------------------------------------------------------------------- references

def ref_ccs_budgets(sizes, budget):
    """Spec, written as a plain loop: smallest stratum first, each min(size, rest // strata left)."""
    nonempty = sorted((size, k) for k, size in enumerate(sizes) if size > 0)
    out, rest = [0] * len(sizes), budget
    for j, (size, k) in enumerate(nonempty):
        out[k] = min(size, rest // (len(nonempty) - j))
        rest -= out[k]
    assert rest == 0
    return out


def ref_class_budgets(counts, total):
    """Largest remainder with exact fractions; ties go to the earlier class."""
    n = sum(counts)
    shares = [Fraction(c * total, n) for c in counts]
    out = [int(s) for s in shares]
    by_remainder = sorted(range(len(counts)), key=lambda k: (-(shares[k] - out[k]), k))
    for k in by_remainder[:total - sum(out)]:
        out[k] += 1
    return out


def strata_scores(sizes, width=1.0, rng=None):
    """Scores whose equal-width stratum is known by construction: stratum k gets `sizes[k]` values
    strictly inside [k, k+1) * width, and the first/last non-empty strata also hold the exact
    min (0) and max (len(sizes) * width), so [min, max] spans exactly len(sizes) strata."""
    rng = rng or np.random.default_rng(0)
    m = len(sizes)
    assert sizes[0] >= 1 and sizes[-1] >= 1
    scores, label = [], []
    for k, size in enumerate(sizes):
        vals = (k + rng.uniform(0.1, 0.9, size)) * width
        scores.append(vals)
        label += [k] * size
    scores = np.concatenate(scores)
    scores[0] = 0.0                     # in stratum 0
    scores[sum(sizes) - 1] = m * width  # the maximum belongs to the last stratum
    return scores, np.array(label)


# ----------------------------------------------------------------------------- kept_count / top

@pytest.mark.parametrize("n,rate,keep", [(1000, 0.3, 700), (1000, 0.0, 1000), (10, 0.3, 7),
                                         (7, 0.5, 4), (50000, 0.9, 5000), (50000, 0.7, 15000),
                                         (3, 0.99, 1)])
def test_kept_count(n, rate, keep):
    assert kept_count(n, rate) == keep
    assert kept_count(n, rate) == len(np.arange(n)[int(rate * n):])  # the published slice


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_kept_count_bad_rate(rate):
    with pytest.raises(UserError, match="--subset_rate"):
        kept_count(100, rate)
    with pytest.raises(UserError, match="--subset_rate"):
        select(np.arange(100), None, rate)


def test_kept_count_nothing_left():
    with pytest.raises(UserError, match="keeps no sample"):
        kept_count(0, 0.0)


def test_top_is_published_slice_with_ties_in_mask_order():
    s = np.array([5.0, 5.0, 5.0, 5.0, 0.0, 0.0])
    order = np.array([5, 4, 3, 1, 0, 2])  # a valid argsort of s, ties NOT in index order
    assert (np.diff(s[order]) >= 0).all()
    kept = select(order, s, 0.5)
    np.testing.assert_array_equal(kept, [0, 1, 2])  # order[3:]; re-sorting by score would give 1,2,3
    rng = np.random.default_rng(1)
    s = rng.integers(0, 20, 500).astype(np.float64)  # many ties
    order = np.argsort(s)
    for rate in (0.0, 0.3, 0.5, 0.9):
        kept = select(order, s, rate)
        np.testing.assert_array_equal(kept, np.sort(order[int(rate * 500):]))
        assert kept.dtype == np.int64


# ----------------------------------------------------------------------------- ccs

def test_ccs_drops_highest_and_honours_strata():
    sizes = [6, 24, 50, 100]
    scores, label = strata_scores(sizes)
    n_out = 20
    scores = np.concatenate([scores, 100.0 + np.arange(n_out)])  # the 10% highest, to be dropped
    label = np.concatenate([label, np.full(n_out, -1)])
    n = len(scores)
    assert n == 200 and int(0.1 * n) == n_out
    order = np.argsort(scores, kind="stable")
    kept = select(order, scores, 0.5, strategy="ccs", mis_ratio=0.1, strata=4, seed=3)
    assert len(kept) == kept_count(n, 0.5) == 100 and len(np.unique(kept)) == 100
    assert (label[kept] >= 0).all()  # none of the dropped highest ones
    counts = [int((label[kept] == k).sum()) for k in range(4)]
    assert counts == ref_ccs_budgets(sizes, 100) == [6, 24, 35, 35]


@pytest.mark.parametrize("trial", range(12))
def test_ccs_strata_counts_random_layouts(trial):
    rng = np.random.default_rng(100 + trial)
    m = int(rng.integers(1, 9))
    sizes = list(rng.integers(0, 40, m))
    sizes[0], sizes[-1] = max(sizes[0], 1), max(sizes[-1], 1)  # pin min and max
    scores, label = strata_scores(sizes, width=float(rng.uniform(0.01, 5)), rng=rng)
    scores = scores - 3.0  # negative scores work too
    n = len(scores)
    rate = float(rng.uniform(0, 0.95))
    order = np.argsort(scores)
    kept = select(order, scores, rate, strategy="ccs", strata=m, seed=trial)
    budget = n - int(rate * n)
    assert len(kept) == budget and len(np.unique(kept)) == budget
    counts = [int((label[kept] == k).sum()) for k in range(m)]
    assert counts == ref_ccs_budgets(sizes, budget)


def test_ccs_empty_stratum_and_equal_scores():
    sizes = [10, 0, 3, 40]
    scores, label = strata_scores(sizes)
    kept = select(np.argsort(scores), scores, 1 - 30 / 53 + 1e-9, strategy="ccs", strata=4)
    assert len(kept) == 30
    assert [int((label[kept] == k).sum()) for k in range(4)] == ref_ccs_budgets(sizes, 30) == [10, 0, 3, 17]
    flat = np.ones(40)
    kept = select(np.arange(40), flat, 0.25, strategy="ccs")
    assert len(kept) == 30 and len(np.unique(kept)) == 30


def test_ccs_reproducible_per_seed():
    s = np.random.default_rng(0).normal(size=300)
    order = np.argsort(s)
    a = select(order, s, 0.5, strategy="ccs", seed=1)
    np.testing.assert_array_equal(a, select(order, s, 0.5, strategy="ccs", seed=1))
    assert not np.array_equal(a, select(order, s, 0.5, strategy="ccs", seed=2))


def test_ccs_budget_exceeds_what_is_left():
    s = np.arange(1000, dtype=np.float64)
    with pytest.raises(UserError, match="--mis_ratio 0.4 removes 400 samples, leaving 600 < 700 to keep"):
        select(np.arange(1000), s, 0.3, strategy="ccs", mis_ratio=0.4)


# ----------------------------------------------------------------------------- random

def test_random_reproducible_and_seed_dependent():
    a = select(None, None, 0.7, strategy="random", seed=5, n=1000)
    assert len(a) == 300 and len(np.unique(a)) == 300 and a.min() >= 0 and a.max() < 1000
    assert (np.diff(a) > 0).all() and a.dtype == np.int64
    np.testing.assert_array_equal(a, select(None, None, 0.7, strategy="random", seed=5, n=1000))
    assert not np.array_equal(a, select(None, None, 0.7, strategy="random", seed=6, n=1000))
    # the mask does not influence the random baseline
    order = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(a, select(order, None, 0.7, strategy="random", seed=5))


# ----------------------------------------------------------------------------- class balanced

@pytest.mark.parametrize("strategy", ["top", "random", "ccs"])
def test_class_balanced_counts(strategy):
    class_sizes = {3: 7, 7: 13, 9: 30, 12: 50}  # non-contiguous labels
    targets = np.concatenate([np.full(c, k) for k, c in class_sizes.items()])
    targets = np.random.default_rng(0).permutation(targets)
    n = len(targets)
    s = np.random.default_rng(1).normal(size=n)
    order = np.argsort(s)
    rate = 0.37
    kept = select(order, s, rate, strategy=strategy, class_balanced=True, targets=targets, seed=4)
    budget = n - int(rate * n)
    want = ref_class_budgets(list(class_sizes.values()), budget)
    assert want == [4, 8, 19, 32]  # shares 4.41, 8.19, 18.9, 31.5: the two largest remainders get +1
    assert len(kept) == budget and len(np.unique(kept)) == budget
    assert [int((targets[kept] == k).sum()) for k in class_sizes] == want
    if strategy == "top":  # the highest of each class, in mask order
        for (k, b) in zip(class_sizes, want):
            in_class = [i for i in order if targets[i] == k]
            assert set(kept[targets[kept] == k]) == set(in_class[len(in_class) - b:])


def test_class_balanced_needs_targets():
    with pytest.raises(UserError, match="--class_balanced"):
        select(np.arange(10), None, 0.5, class_balanced=True)


# ----------------------------------------------------------------------------- select flag errors

@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="best"), "unknown selection strategy"),
    (dict(strategy="ccs", mis_ratio=1.0), "--mis_ratio"),
    (dict(strategy="ccs", mis_ratio=-0.1), "--mis_ratio"),
    (dict(strategy="ccs", strata=0), "--strata"),
])
def test_select_flag_errors(kwargs, match):
    s = np.arange(20, dtype=np.float64)
    with pytest.raises(UserError, match=match):
        select(np.arange(20), s, 0.5, **kwargs)


# ----------------------------------------------------------------------------- loading

def write_pair(tmp_path, s):
    """The published way: mask = argsort(S), score = sort(S)."""
    mask_path, score_path = str(tmp_path / "data_mask_win10_ep30.npy"), str(tmp_path / "score_win10_ep30.npy")
    np.save(mask_path, np.argsort(s))
    np.save(score_path, np.sort(s))
    return mask_path, score_path


def test_load_round_trip(tmp_path):
    s = np.random.default_rng(0).integers(0, 50, 400).astype(np.float32)  # with ties
    mask_path, score_path = write_pair(tmp_path, s)
    order, by_index = load_mask_and_score(mask_path, score_path, 400)
    np.testing.assert_array_equal(order, np.argsort(s))
    assert order.dtype == np.int64 and by_index.dtype == np.float64
    np.testing.assert_array_equal(by_index, s.astype(np.float64))
    order2, none = load_mask_and_score(mask_path, None, 400)
    assert none is None
    np.testing.assert_array_equal(order2, order)
    kept = select(order, by_index, 0.5)
    np.testing.assert_array_equal(kept, np.sort(np.argsort(s)[200:]))


def _bad(tmp_path, name, array=None, raw=None):
    p = str(tmp_path / name)
    if raw is not None:
        with open(p, "wb") as f:
            f.write(raw)
    else:
        np.save(p, array, allow_pickle=True)
    return p


def test_load_errors_name_the_file(tmp_path):
    n = 50
    s = np.random.default_rng(0).normal(size=n)
    good_mask, good_score = write_pair(tmp_path, s)
    good_npy = open(good_mask, "rb").read()
    perm = np.argsort(s)
    bad_masks = {
        "missing": (str(tmp_path / "nope.npy"), "does not exist"),
        "garbage": (_bad(tmp_path, "garbage.npy", raw=b"not a numpy file at all"), "not a readable"),
        "truncated": (_bad(tmp_path, "trunc.npy", raw=good_npy[:len(good_npy) // 2]), "not a readable"),
        "pickled": (_bad(tmp_path, "obj.npy", np.array([{"a": 1}], dtype=object)), "not a readable"),
        "2d": (_bad(tmp_path, "2d.npy", perm.reshape(5, 10)), "1-D"),
        "float": (_bad(tmp_path, "float.npy", perm.astype(np.float64)), "integer"),
        "dup": (_bad(tmp_path, "dup.npy", np.concatenate([perm[:-1], perm[:1]])), "more than once"),
        "range": (_bad(tmp_path, "range.npy", np.where(perm == 0, n, perm)), "outside"),
        "negative": (_bad(tmp_path, "neg.npy", np.where(perm == 0, -1, perm)), "outside"),
    }
    for key, (path, match) in bad_masks.items():
        with pytest.raises(UserError, match=match) as e:
            load_mask_and_score(path, good_score, n)
        assert path in str(e.value) and "\n" not in str(e.value), key

    short = _bad(tmp_path, "short_mask.npy", np.arange(40))
    with pytest.raises(UserError) as e:
        load_mask_and_score(short, None, n, dataset="CIFAR-10")
    msg = str(e.value)
    assert short in msg
    assert "mask has 40 entries but the CIFAR-10 training set has 50 samples" in msg
    assert "another data set" in msg

    bad_scores = {
        "missing": (str(tmp_path / "nope_score.npy"), "does not exist"),
        "garbage": (_bad(tmp_path, "garbage_score.npy", raw=b"\x93NUMPY junk"), "not a readable"),
        "2d": (_bad(tmp_path, "2d_score.npy", np.sort(s).reshape(5, 10)), "1-D"),
        "length": (_bad(tmp_path, "len_score.npy", np.sort(s)[:-1]), "49 entries"),
        "unsorted": (_bad(tmp_path, "unsorted_score.npy", s), "not sorted ascending"),
        "nan": (_bad(tmp_path, "nan_score.npy", np.append(np.sort(s)[:-1], np.nan)), "NaN or inf"),
        "inf": (_bad(tmp_path, "inf_score.npy", np.append(np.sort(s)[:-1], np.inf)), "NaN or inf"),
        "text": (_bad(tmp_path, "str_score.npy", np.array(["a"] * n)), "numbers"),
    }
    for key, (path, match) in bad_scores.items():
        with pytest.raises(UserError, match=match) as e:
            load_mask_and_score(good_mask, path, n)
        assert path in str(e.value) and "\n" not in str(e.value), key


def test_mask_and_score_of_two_scorings_are_refused(tmp_path):
    s = np.random.default_rng(1).normal(size=60).astype(np.float32)
    t = np.random.default_rng(2).normal(size=60).astype(np.float32)
    mask, score = write_pair(tmp_path, s)                                   # win10_ep30
    np.save(tmp_path / "score_win5_ep30.npy", np.sort(t))                   # sorted, as every score file is
    with pytest.raises(UserError, match="two different scorings \\(win10_ep30 vs win5_ep30\\)"):
        load_mask_and_score(mask, str(tmp_path / "score_win5_ep30.npy"), 60)
    np.save(tmp_path / "dataset_score_win10_ep30.npy", s)                   # what importance_evaluation.py leaves
    load_mask_and_score(mask, score, 60)                                     # the pair that belongs together
    np.save(score, np.sort(t))                                              # same name, another scoring's content
    with pytest.raises(UserError, match="is not the score of mask file"):
        load_mask_and_score(mask, score, 60)
    with pytest.raises(UserError, match="is a folder: give the data_mask_<tag>.npy"):
        load_mask_and_score(str(tmp_path), None, 60)


# ----------------------------------------------------------------------------- loss weights

def test_loss_weights_min_max():
    s = np.array([2.0, -1.0, 5.0, 0.5])
    u = loss_weights(s)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [(x - (-1.0)) / (5.0 - (-1.0)) for x in s], rtol=1e-6)
    assert u.min() == 0.0 and u.max() == 1.0
    np.testing.assert_array_equal(loss_weights(np.full(7, 3.3)), np.ones(7, dtype=np.float32))
