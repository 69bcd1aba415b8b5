"""The three published command lines, end to end, on small files in the real CIFAR layouts, and a
ResNet-20 on real digit images reaching the accuracy one expects of it."""
import json

import numpy as np
import pytest

from conftest import run_script


@pytest.mark.slow
def test_published_commands_cifar100(cifar100_dir, tmp_path):
    """The published README's lines, with --epochs, the paths and (for CPU time) the arch changed."""
    full, masks, pruned = tmp_path / "all-dataset", tmp_path / "generated_mask", tmp_path / "pruned-dataset"
    p = run_script("train.py", "--data_path", cifar100_dir, "--dataset", "cifar100", "--arch", "resnet20",
                   "--epochs", "30", "--learning_rate", "0.1", "--batch-size", "100", "--dynamics",
                   "--save_path", f"{full}/")
    assert "no CUDA device" in p.stdout  # the published default --ngpu 1 falls back to the CPU
    npy = full / "npy"
    for e in range(30):
        out = np.load(npy / f"{e}_Output.npy")
        assert out.shape == (200, 100) and out.dtype == np.float32
        assert np.array_equal(np.load(npy / f"{e}_Index.npy"), np.arange(200))
        assert np.load(npy / f"{e}_Loss.npy").shape == (200,)
    assert not (npy / "30_Output.npy").exists()
    assert np.load(npy / "targets.npy").shape == (200,)
    m = json.loads((full / "metrics.json").read_text())
    for key in ("best_acc", "final_acc", "epochs", "num_train_samples", "train_seconds", "seconds"):
        assert key in m
    assert m["epochs"] == 30 and m["num_train_samples"] == 200 and 0 < m["train_seconds"] <= m["seconds"]
    assert (full / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (full / "log_seed_42.txt").exists() and (full / "model_best.pth.tar").exists()

    run_script("importance_evaluation.py", "--dynamics_path", f"{npy}/", "--mask_path", f"{masks}/",
               "--trajectory_len", "30", "--window_size", "10", "--decay", "0.9")
    mask = np.load(masks / "data_mask_win10_ep30.npy")
    score = np.load(masks / "score_win10_ep30.npy")
    assert mask.dtype == np.int64 and np.array_equal(np.sort(mask), np.arange(200))
    assert np.all(np.diff(score) >= 0)

    run_script("train_subset.py", "--data_path", cifar100_dir, "--dataset", "cifar100", "--arch", "resnet20",
               "--epochs", "2", "--learning_rate", "0.1", "--batch-size", "128", "--save_path", str(pruned),
               "--subset_rate", "0.9", "--mask_path", str(masks / "data_mask_win10_ep30.npy"),
               "--score_path", str(masks / "score_win10_ep30.npy"))
    kept = np.load(pruned / "subset_indices.npy")
    assert np.array_equal(kept, np.sort(mask[int(0.9 * 200):]))  # the published slice
    m = json.loads((pruned / "metrics.json").read_text())
    assert m["num_train_samples"] == 20 and m["method"] == "tdds" and m["subset_rate"] == 0.9
    assert "mean weight u of the kept set" in (pruned / "log_seed_42.txt").read_text()


def test_published_commands_cifar10_resnet18(cifar10_dir, tmp_path):
    """CIFAR-10 layout (five data_batch files), the published resnet18 (4 epochs: CPU time), T=4, K=3."""
    full, masks = tmp_path / "all", tmp_path / "masks"
    run_script("train.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet18",
               "--epochs", "4", "--batch-size", "100", "--dynamics", "--save_path", str(full), "--ngpu", "0")
    assert len(list((full / "npy").glob("*_Output.npy"))) == 4
    run_script("importance_evaluation.py", "--dynamics_path", str(full / "npy"), "--mask_path", str(masks),
               "--trajectory_len", "4", "--window_size", "3")
    run_script("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet18",
               "--epochs", "1", "--save_path", str(tmp_path / "sub"), "--subset_rate", "0.5", "--ngpu", "0",
               "--mask_path", str(masks / "data_mask_win3_ep4.npy"),
               "--score_path", str(masks / "score_win3_ep4.npy"), "--no_score_weighting")
    m = json.loads((tmp_path / "sub" / "metrics.json").read_text())
    assert m["num_train_samples"] == 80 and m["score_weighting"] is False


def test_digits_resnet20_learns(tmp_path):
    """Real handwritten digits: a ResNet-20 reaches >= 90% test accuracy in 10 epochs on CPU."""
    run_script("train.py", "--dataset", "digits", "--arch", "resnet20", "--epochs", "10", "--batch-size", "64",
               "--ngpu", "0", "--save_path", str(tmp_path / "d"))
    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m["final_acc"] >= 90.0, m["final_acc"]
    assert m["num_train_samples"] == 1437 and len(m["history"]) == 10
