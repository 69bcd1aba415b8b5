"""What the robustness experiments do to the training set before training: label noise and image
corruption (docs/METHODS.md, "Robustness settings").

Both are pure functions of (the data set, their own flags and their own seed) — never of
--manualSeed — so train.py (the dynamics run) and every train_subset.py run of a sweep see exactly
the same noisy / corrupted training set. Test data is never passed here.
"""
import numpy as np
import torch

from utils.errors import UserError
from utils.methods import CORRUPTIONS, NOISE_TYPES

# CIFAR-10's asymmetric noise map (Patrini et al. 2017): truck->automobile, bird->airplane,
# deer->horse, cat<->dog; classes not listed keep their labels.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# Severity 1..5 of each corruption (its parameter and unit are declared in utils/methods.py)
SEVERITY = {name: c.severity for name, c in CORRUPTIONS.items()}
_NOISE_STREAM, _CORRUPTION_STREAM = 0x6E6F697365, 0x636F7272   # fixed spawn keys: "noise", "corr"
_BATCH = 1024   # images corrupted at a time: bounded memory whatever N


def _rng(seed, stream):
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _count(rate, n, flag):
    if not 0 <= rate <= 1:
        raise UserError(f"{flag} must lie in [0, 1], got {rate}")
    return int(round(rate * n))


def asymmetric_map(num_classes, dataset):
    """{class: new class} of asymmetric noise: CIFAR-10's map, else c -> c+1 mod C."""
    if num_classes < 2:
        raise UserError("--noise_type asymmetric needs at least 2 classes")
    if dataset == "cifar10":
        return dict(CIFAR10_ASYMMETRIC)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def apply_label_noise(targets, num_classes, rate, kind="symmetric", seed=0, dataset=""):
    """(noisy (N,) int64, flipped (N,) bool). symmetric: exactly round(rate*N) samples, chosen
    uniformly, each relabelled uniformly among the other C-1 classes. asymmetric: exactly
    round(rate*M) of the M samples whose class has a mapping (M = N for the c -> c+1 map) take the
    mapped class."""
    y = np.asarray(targets, dtype=np.int64)
    if kind not in NOISE_TYPES:
        raise UserError(f"--noise_type {kind!r} is not one of {', '.join(NOISE_TYPES)}")
    rng = _rng(seed, _NOISE_STREAM)
    noisy, flipped = y.copy(), np.zeros(len(y), dtype=bool)
    if kind == "symmetric":
        if num_classes < 2:
            raise UserError("--label_noise needs at least 2 classes")
        chosen = rng.choice(len(y), size=_count(rate, len(y), "--label_noise"), replace=False)
        shift = rng.integers(1, num_classes, size=len(chosen))       # 1..C-1: never the true class
        noisy[chosen] = (y[chosen] + shift) % num_classes
    else:
        mapping = asymmetric_map(num_classes, dataset)
        eligible = np.flatnonzero(np.isin(y, list(mapping)))
        chosen = rng.choice(eligible, size=_count(rate, len(eligible), "--label_noise"), replace=False)
        noisy[chosen] = [mapping[c] for c in y[chosen]]
    flipped[chosen] = True
    return noisy, flipped


def _corrupt_batch(x, kind, level, gen):
    """x (B, 3, H, W) uint8 tensor -> corrupted uint8 tensor of the same shape."""
    import torchvision.transforms.functional as TF
    if kind == "gaussian_noise":
        noise = torch.randn(x.shape, generator=gen) * (level * 255)
        return (x.float() + noise).round().clamp(0, 255).to(torch.uint8)
    if kind == "gaussian_blur":
        k = 2 * int(np.ceil(3 * level)) + 1
        return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[level, level])
    if kind == "contrast":
        return TF.adjust_contrast(x, level)
    return torch.stack([_jpeg(img, level) for img in x])


def _jpeg(img, quality):
    """One (3, H, W) uint8 image through a JPEG encode/decode at `quality` (Pillow, as torchvision uses)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)


def apply_corruption(images, ratio, kind="gaussian_noise", severity=3, seed=0):
    """(corrupted copy, corrupted (N,) bool): exactly round(ratio*N) images, chosen uniformly, get
    `kind` at `severity` (1..5, SEVERITY); the others are byte-identical. images: (N, 3, H, W)
    uint8, numpy or a CPU tensor (the result has the same type)."""
    if kind not in CORRUPTIONS:
        raise UserError(f"--corruption {kind!r} is not one of {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise UserError(f"--severity must be 1..5, got {severity}")
    is_numpy = isinstance(images, np.ndarray)
    x = torch.from_numpy(images) if is_numpy else images
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"apply_corruption takes (N, 3, H, W) uint8 images, got {x.dtype} {tuple(x.shape)}")
    rng = _rng(seed, _CORRUPTION_STREAM)
    chosen = np.sort(rng.choice(len(x), size=_count(ratio, len(x), "--corrupt_ratio"), replace=False))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    out = x.clone()
    level = SEVERITY[kind][severity - 1]
    for a in range(0, len(chosen), _BATCH):
        idx = torch.from_numpy(chosen[a:a + _BATCH])
        out[idx] = _corrupt_batch(x[idx], kind, level, gen)
    mask = np.zeros(len(x), dtype=bool)
    mask[chosen] = True
    return (out.numpy() if is_numpy else out), mask
