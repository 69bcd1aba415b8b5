"""--dataset imagefolder (ImageNet, Tiny-ImageNet, a user's own tree): train.py on a small PNG tree
records the published dynamics layout, with ImageFolder's labels and the dataset index carried
through the DataLoader to every row."""
import json
import os

import numpy as np
import pytest

from conftest import assert_user_error, run_script

CLASSES = ("cat", "dog", "eel")                      # ImageFolder sorts class folders: 0, 1, 2
COLOURS = ((220, 40, 40), (40, 220, 40), (40, 40, 220))
N_PER_CLASS = {"train": 20, "val": 6}
N_TRAIN = N_PER_CLASS["train"] * len(CLASSES)


def write_image_folder(root, splits=("train", "val"), size=32, seed=0):
    """root/<split>/<class>/<k>.png: flat class colour plus noise, RGB PNGs written with PIL."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in splits:
        for name, colour in zip(CLASSES, COLOURS):
            os.makedirs(os.path.join(root, split, name))
            for k in range(N_PER_CLASS[split]):
                img = np.clip(np.array(colour) + rng.integers(-30, 31, (size, size, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, split, name, f"{k:03d}.png"))
    return root


def train_cmd(data, save, *extra):
    return ["train.py", "--dataset", "imagefolder", "--data_path", data, "--workers", "0", "--ngpu", "0",
            "--batch-size", "16", "--learning_rate", "0.02", "--save_path", save, *extra]


def cross_entropy(z, y):
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(1)) - z[np.arange(len(y)), y]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("imgs")))


def test_imagefolder_dynamics(folder, tmp_path):
    import torchvision
    save = str(tmp_path / "run")
    run_script(*train_cmd(folder, save, "--arch", "resnet20", "--image_size", "32", "--epochs", "2", "--dynamics"),
               env={"OMP_NUM_THREADS": "1"})
    files = sorted(os.listdir(f"{save}/npy"))
    assert files == sorted([f"{e}_{t}.npy" for e in range(2) for t in ("Output", "Loss", "Index")] +
                           ["targets.npy", "manifest.json"])

    y = np.load(f"{save}/npy/targets.npy")
    expected = torchvision.datasets.ImageFolder(os.path.join(folder, "train")).targets
    assert y.dtype == np.int64 and y.tolist() == expected == [c for c in range(3) for _ in range(20)]
    for e in range(2):
        out, loss, idx = (np.load(f"{save}/npy/{e}_{t}.npy") for t in ("Output", "Loss", "Index"))
        assert out.shape == (N_TRAIN, 3) and loss.shape == (N_TRAIN,)
        assert np.array_equal(np.sort(idx), np.arange(N_TRAIN))          # a permutation: each sample once
        out, loss = out[np.argsort(idx)], loss[np.argsort(idx)]           # rows by dataset index
        assert (out != 0).any(1).all() and (loss > 0).all()               # every row was written
        # row i carries sample i: its loss was computed with sample i's own label (the rows are
        # visited shuffled, so a row filled from the batch position instead of the carried index
        # would pair logits and labels of different samples)
        np.testing.assert_allclose(cross_entropy(out, y), loss, rtol=1e-4, atol=1e-6)
    with open(f"{save}/metrics.json") as f:
        m = json.load(f)
    assert m["finished"] and m["num_train_samples"] == N_TRAIN and m["history"][-1]["samples"] == N_TRAIN
    # the classes are flat colours: after 2 epochs, row i's logits predict sample i's class
    assert (out.argmax(1) == y).mean() > 0.6, (out.argmax(1) == y).mean()


def test_imagefolder_torchvision_model(folder, tmp_path):
    save = str(tmp_path / "tv")
    run_script(*train_cmd(folder, save, "--arch", "tv_resnet18", "--image_size", "64", "--epochs", "1", "--dynamics"),
               env={"OMP_NUM_THREADS": "1"})
    assert np.load(f"{save}/npy/0_Output.npy").shape == (N_TRAIN, 3)
    with open(f"{save}/metrics.json") as f:
        m = json.load(f)
    assert m["finished"] and m["arch"] == "tv_resnet18" and 0 <= m["final_acc"] <= 100


def test_imagefolder_without_val_folder(tmp_path):
    data = write_image_folder(str(tmp_path / "noval"), splits=("train",))
    p = run_script(*train_cmd(data, str(tmp_path / "run"), "--arch", "resnet20", "--image_size", "32",
                              "--epochs", "1"), check=False)
    assert_user_error(p, os.path.join(data, "val"), "not found")
