"""utils/training/robustness.py against its definition: exact counts, the maps, determinism from its own
seed only, corruption only where flagged and equal to torchvision's functional transforms."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import io

from PIL import Image

from utils.errors import UserError
from utils.training.robustness import (CIFAR10_ASYMMETRIC, CORRUPTIONS, SEVERITY, apply_corruption, apply_label_noise)

Y = np.random.default_rng(0).integers(0, 10, 5000)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.37, 0.8])
def test_symmetric_noise_flips_exactly_and_never_to_the_true_class(rate):
    noisy, flipped = apply_label_noise(Y, 10, rate, "symmetric", seed=3)
    assert flipped.sum() == round(rate * len(Y))
    assert np.array_equal(noisy != Y, flipped)           # every flipped label changed, nothing else
    if rate:   # the new label is uniform over the 9 other classes, for every true class
        assert (noisy[flipped] != Y[flipped]).all()
        assert pearson_other_classes(Y[flipped], noisy[flipped]) < CHI2_80_999


def pearson_other_classes(y, new, k=10):
    """Pearson's statistic of the (true, new) label counts against a uniform choice among the k - 1
    other classes per true class: k (k - 2) degrees of freedom."""
    pairs = np.zeros((k, k))
    np.add.at(pairs, (y, new), 1)
    expected = pairs.sum(1, keepdims=True) / (k - 1)
    return (((pairs - expected) ** 2 / expected)[~np.eye(k, dtype=bool)]).sum()


# the 99.9% quantile of chi-square with 80 degrees of freedom (Wilson-Hilferty, z = 3.0902)
CHI2_80_999 = 80 * (1 - 2 / 720 + 3.0902 * np.sqrt(2 / 720)) ** 3


def test_the_uniformity_check_can_fail():
    """A label map that sends a third of each class to the next class is far beyond the bound; the
    bound is the chi-square table's 124.84."""
    y = np.repeat(np.arange(10), 100)
    i = np.arange(1000)
    skewed = np.where(i % 3 == 0, (y + 1) % 10, (y + 1 + i % 9) % 10)
    assert pearson_other_classes(y, skewed) > 2 * CHI2_80_999
    assert abs(CHI2_80_999 - 124.84) < 0.6


def test_asymmetric_noise_follows_the_maps():
    noisy, flipped = apply_label_noise(Y, 10, 0.4, "asymmetric", seed=1, dataset="cifar10")
    eligible = np.isin(Y, list(CIFAR10_ASYMMETRIC))
    assert flipped.sum() == round(0.4 * eligible.sum()) and not flipped[~eligible].any()
    assert all(noisy[i] == CIFAR10_ASYMMETRIC[Y[i]] for i in np.flatnonzero(flipped))
    noisy, flipped = apply_label_noise(Y, 10, 0.25, "asymmetric", seed=1, dataset="cifar100")
    assert flipped.sum() == round(0.25 * len(Y)) and np.array_equal(noisy[flipped], (Y[flipped] + 1) % 10)


def test_noise_depends_on_its_own_seed_only():
    a = apply_label_noise(Y, 10, 0.3, seed=5)
    np.random.seed(123)
    torch.manual_seed(123)
    b = apply_label_noise(Y, 10, 0.3, seed=5)
    c = apply_label_noise(Y, 10, 0.3, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


X = np.random.default_rng(1).integers(0, 256, (200, 3, 16, 16), dtype=np.uint8)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_exact_count_and_untouched_rest(kind):
    out, mask = apply_corruption(X, 0.3, kind, 3, seed=2)
    assert out.dtype == np.uint8 and out.shape == X.shape and mask.sum() == round(0.3 * len(X))
    assert np.array_equal(out[~mask], X[~mask])
    assert (out[mask] != X[mask]).reshape(mask.sum(), -1).any(1).all()
    again, mask2 = apply_corruption(X, 0.3, kind, 3, seed=2)
    assert np.array_equal(again, out) and np.array_equal(mask2, mask)
    other, mask3 = apply_corruption(X, 0.3, kind, 3, seed=3)
    assert not np.array_equal(mask3, mask)
    changes = [np.abs(apply_corruption(X, 1.0, kind, s, seed=2)[0].astype(int) - X).mean() for s in (1, 5)]
    assert changes[1] > changes[0]                        # severity 5 changes the images more than 1


def test_corruptions_are_torchvisions():
    img = torch.from_numpy(X[:1].copy())
    out, _ = apply_corruption(img, 1.0, "contrast", 2, seed=0)
    assert torch.equal(out, TF.adjust_contrast(img, SEVERITY["contrast"][1]))
    out, _ = apply_corruption(img, 1.0, "gaussian_blur", 5, seed=0)
    assert torch.equal(out, TF.gaussian_blur(img, [7, 7], [1.0, 1.0]))
    out, _ = apply_corruption(img, 1.0, "jpeg", 1, seed=0)
    buf = io.BytesIO()
    Image.fromarray(X[0].transpose(1, 2, 0)).save(buf, format="JPEG", quality=80)
    assert np.array_equal(out[0].numpy().transpose(1, 2, 0), np.array(Image.open(buf)))


def test_kept_flagged_fractions_and_flag_errors():
    """train_subset.kept_flagged: of 4 kept samples 2 are flagged (0.5), 2 of the 3 flagged were kept."""
    from types import SimpleNamespace
    from train_subset import kept_flagged
    flagged = np.zeros(10, dtype=bool)
    flagged[[1, 2, 3]] = True
    lines = []
    f = kept_flagged(np.array([0, 1, 2, 9]), SimpleNamespace(flipped=flagged, corrupted=None), lines.append)
    assert f == {"kept_mislabeled_fraction": 0.5, "mislabeled_kept_fraction": 2 / 3}
    assert lines == ["mislabeled: 2 of the 4 kept samples (50.0%); 2 of all 3 mislabeled samples kept"]
    f = kept_flagged(np.array([0, 1, 2, 9]), SimpleNamespace(flipped=None, corrupted=flagged), lines.append)
    assert f == {"kept_corrupted_fraction": 0.5, "corrupted_kept_fraction": 2 / 3}
    assert lines[1] == "corrupted: 2 of the 4 kept samples (50.0%); 2 of all 3 corrupted samples kept"
    with pytest.raises(UserError, match="--severity"):
        apply_corruption(X, 0.1, "contrast", 6)
    with pytest.raises(UserError, match="--corruption"):
        apply_corruption(X, 0.1, "fog", 1)
    with pytest.raises(UserError, match="--label_noise"):
        apply_label_noise(Y, 10, 1.5)
