"""--dataset imagefolder (ImageNet, Tiny-ImageNet, a user's own tree): train.py on a small PNG tree
records the published dynamics layout, with ImageFolder's labels and the dataset index carried
through the DataLoader to every row; with --workers 0, a run stopped in the middle of an epoch and
resumed writes the uninterrupted run's bytes (docs/PREEMPTION.md)."""
import json
import os
import signal

import numpy as np

from conftest import CLASSES, N_PER_CLASS, assert_user_error, cli, label_prior, write_image_folder

N_TRAIN = N_PER_CLASS["train"] * len(CLASSES)


def train_cmd(data, save, *extra):
    return ["train.py", "--dataset", "imagefolder", "--data_path", data, "--workers", "0", "--ngpu", "0",
            "--batch-size", "16", "--learning_rate", "0.02", "--save_path", save, *extra]


def cross_entropy(z, y):
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(1)) - z[np.arange(len(y)), y]


def npy_bytes(folder):
    """{file: bytes} of a dynamics folder, manifest.json (which names its run's id) left out."""
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder)) if f != "manifest.json"}


def test_imagefolder_dynamics_and_exact_mid_epoch_resume(image_folder, tmp_path, signal_at_step):
    import torchvision
    save = str(tmp_path / "run")
    flags = ("--arch", "resnet20", "--image_size", "32", "--epochs", "2", "--dynamics")
    cli(*train_cmd(image_folder, save, *flags))
    # 60 images, batch 16: 4 steps an epoch; SIGTERM after global step 6 = step 2 of epoch 1
    cut = str(tmp_path / "cut")
    signal_at_step(6, signal.SIGTERM)
    p = cli(*train_cmd(image_folder, cut, *flags), check=False)
    assert p.code == 143 and "SIGTERM: checkpoint at step 2 of epoch 1" in p.out, p
    p = cli(*train_cmd(image_folder, cut, *flags, "--resume"))
    assert "at epoch 1, step 2" in p.out
    assert npy_bytes(f"{cut}/npy") == npy_bytes(f"{save}/npy") and len(npy_bytes(f"{save}/npy")) == 7
    with open(f"{save}/metrics.json") as f, open(f"{cut}/metrics.json") as g:
        a, b = json.load(f), json.load(g)
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "samples", "steps")
    assert [[h[k] for k in keys] for h in a["history"]] == [[h[k] for k in keys] for h in b["history"]]
    files = sorted(os.listdir(f"{save}/npy"))
    assert files == sorted([f"{e}_{t}.npy" for e in range(2) for t in ("Output", "Loss", "Index")] +
                           ["targets.npy", "manifest.json"])

    y = np.load(f"{save}/npy/targets.npy")
    expected = torchvision.datasets.ImageFolder(os.path.join(image_folder, "train")).targets
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
    # the classes are flat colours: after 2 epochs, row i's logits predict sample i's class better than
    # the label frequencies alone can (label_prior: 1/3 and ln 3; 100% and 0.05 measured)
    prior_acc, prior_loss = label_prior(y)
    assert 100 * (out.argmax(1) == y).mean() > prior_acc and loss.mean() < prior_loss, ((out.argmax(1) == y).mean(),
                                                                                          loss.mean())


def test_imagefolder_torchvision_model(image_folder, tmp_path):
    save = str(tmp_path / "tv")
    cli(*train_cmd(image_folder, save, "--arch", "tv_resnet18", "--image_size", "64", "--epochs", "1", "--dynamics"))
    assert np.load(f"{save}/npy/0_Output.npy").shape == (N_TRAIN, 3)
    with open(f"{save}/metrics.json") as f:
        m = json.load(f)
    assert m["finished"] and m["arch"] == "tv_resnet18" and 0 <= m["final_acc"] <= 100


def test_imagefolder_without_val_folder(tmp_path):
    data = write_image_folder(str(tmp_path / "noval"), splits=("train",))
    p = cli(*train_cmd(data, str(tmp_path / "run"), "--arch", "resnet20", "--image_size", "32", "--epochs", "1"),
            check=False)
    assert_user_error(p, os.path.join(data, "val"), "not found")
