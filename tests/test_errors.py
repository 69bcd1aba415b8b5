"""Every user mistake in the training scripts: one `error:` line, exit 2, no traceback, nothing written."""

import json

import numpy as np
import pytest

from conftest import assert_user_error, cli

CPU = ("--ngpu", "0", "--arch", "resnet20", "--epochs", "1")


def _train(data, save, *extra):
    return cli("train.py", "--data_path", data, "--dataset", "cifar10", *CPU, "--save_path", str(save),
                      *extra, check=False)


def _subset(data, save, *extra):
    return cli("train_subset.py", "--data_path", data, "--dataset", "cifar10", *CPU,
                      "--save_path", str(save), *extra, check=False)


@pytest.mark.parametrize("extra,fragments", [
    (("--batch-size", "0"), ["--batch-size must be at least 1"]),
    (("--epochs", "0"), ["--epochs must be at least 1"]),
    (("--learning_rate", "-1"), ["--learning_rate"]),
    (("--dataset", "imagenet21k"), ["invalid choice", "cifar10", "imagefolder"]),
    (("--arch", "resnet7"), ["resnet7", "resnet18", "tv_"]),
])
def test_train_bad_flags(cifar10_dir, tmp_path, extra, fragments):
    save = tmp_path / "run"
    assert_user_error(_train(cifar10_dir, save, *extra), *fragments)
    assert not save.exists()


def test_dataset_not_found(tmp_path):
    p = cli("train.py", "--data_path", str(tmp_path / "nowhere"), "--dataset", "cifar100", *CPU,
                   "--save_path", str(tmp_path / "run"), check=False)
    assert_user_error(p, "cifar100 not found", "nowhere/cifar-100-python/train", "cifar-100-python.tar.gz",
                      "unpack it into")
    assert not (tmp_path / "run").exists()   # a refused command creates no folder


def test_unwritable_output(cifar10_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(_train(cifar10_dir, blocker / "run"), "--save_path", str(blocker / "run"))


def test_existing_run_is_not_overwritten(cifar10_dir, tmp_path):
    save = tmp_path / "run"
    cli("train.py", "--data_path", cifar10_dir, "--dataset", "cifar10", *CPU, "--save_path", str(save))
    before = (save / "metrics.json").read_bytes()
    assert_user_error(_train(cifar10_dir, save, "--decay", "0.001"), "finished run", "--decay 0.0005 (now 0.001)",
                      "--overwrite")
    assert (save / "metrics.json").read_bytes() == before
    # --overwrite with the same settings: the run is done, nothing is redone or rewritten
    p = _train(cifar10_dir, save, "--overwrite")
    assert p.returncode == 0 and "already finished" in p.stdout and (save / "metrics.json").read_bytes() == before
    # --overwrite with other settings: the old run is replaced by one of the new settings
    assert _train(cifar10_dir, save, "--decay", "0.001", "--overwrite").returncode == 0
    state = json.loads((save / "folder.json").read_text())
    assert state["state"] == "finished" and state["fingerprint"]["--decay"] == 0.001
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["finished"] and metrics["run_id"] == state["run_id"] and (save / "metrics.json").read_bytes() != before
    assert json.loads((save / "args.json").read_text())["args"]["decay"] == 0.001


@pytest.fixture()
def masks(tmp_path):
    """A valid mask/score pair for the 160-sample fixture and broken variants of it."""
    n = 160
    s = np.random.default_rng(0).random(n).astype(np.float32)
    good_mask, good_score = np.argsort(s), np.sort(s)
    files = {
        "mask": good_mask, "score": good_score,
        "short_mask": good_mask[:100], "dup_mask": np.concatenate([good_mask[:-1], good_mask[:1]]),
        "range_mask": np.where(good_mask == 0, n, good_mask), "short_score": good_score[:-1],
        "unsorted_score": good_score[::-1].copy(),
    }
    for name, arr in files.items():
        np.save(tmp_path / f"{name}.npy", arr)
    return lambda name: str(tmp_path / f"{name}.npy")


@pytest.mark.parametrize("flags,fragments", [
    (lambda m: ("--subset_rate", "1.0", "--mask_path", m("mask")), ["--subset_rate", "[0, 1)"]),
    (lambda m: ("--subset_rate", "-0.1", "--mask_path", m("mask")), ["--subset_rate"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("missing"), "--no_score_weighting"), ["missing.npy"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("short_mask"), "--no_score_weighting"), ["short_mask.npy", "160"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("dup_mask"), "--no_score_weighting"), ["dup_mask.npy", "more than once"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("range_mask"), "--no_score_weighting"), ["range_mask.npy"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("mask"), "--score_path", m("short_score")),
     ["short_score.npy"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("mask"), "--score_path", m("unsorted_score")),
     ["unsorted_score.npy", "sorted"]),
    (lambda m: ("--subset_rate", "0.5"), ["--mask_path"]),
    (lambda m: ("--subset_rate", "0.5", "--mask_path", m("mask")), ["--score_path", "--no_score_weighting"]),
    (lambda m: ("--subset_rate", "0.3", "--mask_path", m("mask"), "--score_path", m("score"),
                "--selection", "ccs", "--mis_ratio", "0.5"), ["--mis_ratio"]),
])
def test_train_subset_bad_inputs(cifar10_dir, tmp_path, masks, flags, fragments):
    save = tmp_path / "sub"
    assert_user_error(_subset(cifar10_dir, save, *flags(masks)), *fragments)
    assert not save.exists()   # checks come before the first write, the folder included


def test_resume_with_other_settings_is_refused(cifar10_dir, tmp_path):
    save = tmp_path / "run"
    cli("train.py", "--data_path", cifar10_dir, "--dataset", "cifar10", *CPU, "--save_path", str(save))
    p = cli("train.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--ngpu", "0", "--arch",
                   "resnet20", "--epochs", "3", "--save_path", str(save), "--resume", check=False)
    assert_user_error(p, "--epochs 1 (now 3)", "--overwrite")
