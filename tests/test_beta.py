"""--selection beta (DUAL's pruning-rate-adaptive Beta sampling): the weights are the formula, the draw
follows them, the same seed gives the same subset, and train_subset.py refuses what cannot work."""
import math
import os

import numpy as np
import pytest

from conftest import assert_user_error, cli
from utils.errors import UserError
from utils.science.selection import beta_weights, kept_count, select


def beta_pdf(p, a, b):
    """Beta density from its definition, one number at a time, in log space with math.lgamma."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + (a - 1) * math.log(p)
                    + (b - 1) * math.log(1 - p))


def reference_weights(score, mean_p, rate, c=4.0):
    top = sorted(range(len(score)), key=lambda i: (score[i], i))[-10:]   # stable: ties by index
    mu = sum(min(max(mean_p[i], 1e-12), 1 - 1e-12) for i in top) / 10
    b = 15 * (1 - mu) * (1 - rate ** c)
    return [beta_pdf(p, 16 - b, b) * s for p, s in zip(mean_p, score)]


@pytest.mark.parametrize("rate, c", [(0.3, 4.0), (0.9, 4.0), (0.7, 2.0)])
def test_weights_are_the_formula(rate, c):
    rng = np.random.default_rng(1)
    score = rng.random(300)
    mean_p = np.concatenate([[0.0, 1.0], rng.random(298)])   # the clip at both ends
    np.testing.assert_allclose(beta_weights(score, mean_p, rate, c), reference_weights(score, mean_p, rate, c),
                               rtol=1e-10)


def test_weights_known_density():
    """rate 0 and mu = 14/15 give b = 1, a = 15: the density is 15 p^14 (no gamma functions needed)."""
    score = np.linspace(1, 2, 50)                     # the 10 highest are the last 10
    mean_p = np.linspace(0.05, 0.95, 50)
    mean_p[-10:] = 14 / 15
    np.testing.assert_allclose(beta_weights(score, mean_p, 0.0), 15 * mean_p ** 14 * score, rtol=1e-10)


def test_draw_follows_the_weights():
    """Keeping 1 of 5, sample i is drawn with probability w_i / sum(w): frequencies over 4,000 seeds."""
    score = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    mean_p = np.array([0.2, 0.5, 0.6, 0.8, 0.9])
    w = beta_weights(score, mean_p, 0.8)
    assert kept_count(5, 0.8) == 1
    counts = np.bincount([select(None, score, 0.8, "beta", seed=s, mean_p=mean_p)[0] for s in range(4000)],
                         minlength=5)
    expected = 4000 * w / w.sum()
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected + 1)), (counts, expected)


def test_same_seed_same_subset_and_size():
    rng = np.random.default_rng(2)
    n = 1001
    score, mean_p, y = rng.random(n), rng.random(n), rng.integers(0, 7, n)
    for rate in (0.5, 0.9, 0.33):
        a = select(None, score, rate, "beta", seed=5, mean_p=mean_p)
        assert len(a) == n - math.floor(rate * n) == len(np.unique(a))
        np.testing.assert_array_equal(a, select(np.argsort(score, kind="stable"), score, rate, "beta", seed=5,
                                                mean_p=mean_p))
        assert not np.array_equal(a, select(None, score, rate, "beta", seed=6, mean_p=mean_p))
        cb = select(None, score, rate, "beta", seed=5, mean_p=mean_p, class_balanced=True, targets=y)
        assert len(cb) == len(a)
        per_class = np.bincount(y[cb], minlength=7)
        ideal = np.bincount(y, minlength=7) * len(a) / n
        assert np.all(np.abs(per_class - ideal) < 1)


def test_select_refuses():
    score, mean_p = np.linspace(0, 1, 20), np.full(20, 0.5)
    with pytest.raises(UserError, match="only 1 samples"):   # one positive score, ten to keep
        select(None, np.r_[np.zeros(19), 1.0], 0.5, "beta", mean_p=mean_p)
    with pytest.raises(UserError, match=">= 0"):
        select(None, score - 0.5, 0.5, "beta", mean_p=mean_p)
    with pytest.raises(UserError, match="mean p_y"):
        select(None, score, 0.5, "beta")
    with pytest.raises(UserError, match="--beta_c"):
        select(None, score, 0.5, "beta", mean_p=mean_p, beta_c=0)


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    """A dual-named mask/score pair for digits' 1,437 training images, without its mean_p file, and
    mean_p files of the wrong length and of the right one."""
    d = tmp_path_factory.mktemp("beta")
    s = np.random.default_rng(0).random(1437).astype(np.float32)
    order = np.argsort(s, kind="stable")
    np.save(d / "data_mask_dual_ep3.npy", order)
    np.save(d / "score_dual_ep3.npy", s[order])
    np.save(d / "short.npy", np.full(100, 0.5, np.float32))
    return d


REFUSED = [([], "mean_p_dual_ep3.npy"),                                   # not beside the mask
           (["--mean_p_path", "short.npy"], "expected (1437,)"),
           (["--mean_p_path", "short.npy", "--selection", "top"], "--selection beta only")]


def test_train_subset_refuses(masks, tmp_path):
    """One error line each, nothing written."""
    for i, (extra, fragment) in enumerate(REFUSED):
        extra = [str(masks / e) if e.endswith(".npy") else e for e in extra]
        p = cli("train_subset.py", "--dataset", "digits", "--arch", "resnet20", "--epochs", "1",
                "--ngpu", "0", "--subset_rate", "0.9", "--selection", "beta",
                "--mask_path", masks / "data_mask_dual_ep3.npy",
                "--score_path", masks / "score_dual_ep3.npy", "--save_path", tmp_path / f"run{i}",
                *extra, check=False)
        assert_user_error(p, fragment)
    assert not os.listdir(tmp_path)
