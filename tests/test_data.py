"""Batched on-device augmentation and the CIFAR reader."""
import numpy as np
import pytest
import torch

from utils.training.data import DeviceImages, make_batches, read_cifar
from utils.errors import UserError
from conftest import write_cifar


def test_augmentation_is_a_padded_crop_or_its_mirror():
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, size=(64, 3, 8, 8), dtype=np.uint8)  # no zeros: padding is recognisable
    d = DeviceImages(imgs, np.zeros(64, dtype=np.int64), ([0, 0, 0], [1, 1, 1]), torch.device("cpu"),
                     augment=True, flip=True, pad=2)
    gen = torch.Generator().manual_seed(0)
    x, _, idx = next(d.batches([torch.arange(64)], gen))
    x = x.round().to(torch.uint8).numpy()
    flips = 0
    for i in range(64):
        padded = np.pad(imgs[i], ((0, 0), (2, 2), (2, 2)))
        windows = [padded[:, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        plain = any(np.array_equal(x[i], w) for w in windows)
        mirrored = any(np.array_equal(x[i], w[:, :, ::-1]) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54  # about half are flipped
    # the same generator state gives the same batch: augmentation is reproducible
    x2, _, _ = next(d.batches([torch.arange(64)], torch.Generator().manual_seed(0)))
    assert np.array_equal(x2.round().to(torch.uint8).numpy(), x)


def test_normalisation_and_no_augmentation_for_test():
    imgs = np.full((4, 3, 4, 4), 100, dtype=np.uint8)
    d = DeviceImages(imgs, np.arange(4), ([50, 100, 150], [10, 20, 50]), torch.device("cpu"), augment=False)
    x, y, idx = next(d.batches([torch.tensor([2, 0])]))
    assert torch.allclose(x[:, 0], torch.tensor(5.0)) and torch.allclose(x[:, 1], torch.tensor(0.0))
    assert torch.allclose(x[:, 2], torch.tensor(-1.0))
    assert y.tolist() == [2, 0] and idx.tolist() == [2, 0]


@pytest.mark.parametrize("n,bs,world", [(10, 3, 1), (101, 50, 2), (100, 32, 3), (65, 16, 4), (7, 4, 2)])
def test_make_batches_visits_every_index_once(n, bs, world):
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    parts = []
    for r in range(world):
        gen.set_state(state)  # every rank draws the same permutation
        parts.append(make_batches(torch.arange(n), bs, gen, r, world))
    assert len({len(p) for p in parts}) == 1
    assert all(len(b) > 0 for p in parts for b in p)
    allidx = torch.cat([b for p in parts for b in p]).sort().values
    assert torch.equal(allidx, torch.arange(n))


def test_cifar_reader_any_size_and_missing(tmp_path):
    write_cifar(str(tmp_path), "cifar100", 13, 7)
    x, y = read_cifar(str(tmp_path), "cifar100", train=True)
    assert x.shape == (13, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (13,)
    with pytest.raises(UserError, match="cifar10 not found: .*data_batch_1 is missing"):
        read_cifar(str(tmp_path), "cifar10", train=True)
