"""The robustness flags in the training scripts: train.py and train_subset.py see the same noisy /
corrupted training set, the run folders say which samples were touched, test data never changes,
and the kept-fraction figures are what subset_indices.npy and the boolean files say."""
import json

import numpy as np
import pytest
import torch

import train
import train_subset
from utils.training.data import load_data, read_cifar
from utils.errors import UserError

N = 160
COMMON = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "1", "--batch-size", "32", "--ngpu", "0"]
NOISE = ["--label_noise", "0.3", "--noise_seed", "5"]
CORRUPT = ["--corrupt_ratio", "0.25", "--corruption", "contrast", "--severity", "4", "--corrupt_seed", "2"]


@pytest.fixture(scope="module")
def noisy_runs(cifar10_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    base = ["--data_path", cifar10_dir, *COMMON, *NOISE, *CORRUPT]
    train.main(base + ["--dynamics", "--save_path", str(d / "full")])
    s = np.random.default_rng(0).random(N).astype(np.float32)
    np.save(d / "data_mask_x_ep1.npy", np.argsort(s, kind="stable"))
    np.save(d / "score_x_ep1.npy", np.sort(s))
    sub = base + ["--subset_rate", "0.5", "--mask_path", str(d / "data_mask_x_ep1.npy"),
                  "--score_path", str(d / "score_x_ep1.npy"), "--save_path", str(d / "sub")]
    metrics = train_subset.main(sub)
    return d, base, sub, metrics


def test_both_scripts_train_on_the_same_touched_samples(noisy_runs):
    d, *_ = noisy_runs
    flipped = np.load(d / "full" / "label_noise_mask.npy")
    corrupted = np.load(d / "full" / "corrupted_mask.npy")
    assert flipped.dtype == bool and flipped.shape == (N,) and flipped.sum() == round(0.3 * N)
    assert corrupted.dtype == bool and corrupted.sum() == round(0.25 * N)
    labels = np.load(d / "full" / "train_labels.npy")
    assert np.array_equal(np.load(d / "full" / "npy" / "targets.npy"), labels)   # what the baselines read
    for f in ("label_noise_mask.npy", "corrupted_mask.npy", "train_labels.npy"):
        assert np.array_equal(np.load(d / "sub" / f), np.load(d / "full" / f)), f


def test_labels_and_images_touched_exactly_where_flagged_and_test_set_untouched(noisy_runs, cifar10_dir):
    d, *_ = noisy_runs
    clean_x, clean_y = read_cifar(cifar10_dir, "cifar10", True)
    test_x, test_y = read_cifar(cifar10_dir, "cifar10", False)
    args = train.parse_args(["--data_path", cifar10_dir, *COMMON, *NOISE, *CORRUPT])
    data = load_data(args, torch.device("cpu"))
    flipped, corrupted = data.flipped, data.corrupted
    assert np.array_equal(data.targets != clean_y, flipped)
    changed = (data.train.images.numpy() != clean_x).reshape(N, -1).any(1)
    assert np.array_equal(changed, corrupted)
    assert np.array_equal(data.test.images.numpy(), test_x) and np.array_equal(data.test.labels.numpy(), test_y)
    # --manualSeed does not choose the noisy samples; the noise seed does
    other_run = load_data(train.parse_args(["--data_path", cifar10_dir, *COMMON, *NOISE, "--manualSeed", "9"]),
                          torch.device("cpu"))
    assert np.array_equal(other_run.flipped, flipped)
    other_noise = load_data(train.parse_args(["--data_path", cifar10_dir, *COMMON, "--label_noise", "0.3",
                                              "--noise_seed", "6"]), torch.device("cpu"))
    assert not np.array_equal(other_noise.flipped, flipped)


def test_kept_fractions_recomputed_from_the_files(noisy_runs):
    d, _, _, metrics = noisy_runs
    kept = np.load(d / "sub" / "subset_indices.npy")
    for name, f in (("mislabeled", "label_noise_mask.npy"), ("corrupted", "corrupted_mask.npy")):
        flagged = np.load(d / "sub" / f)
        assert metrics[f"kept_{name}_fraction"] == pytest.approx(flagged[kept].mean())
        assert metrics[f"{name}_kept_fraction"] == pytest.approx(flagged[kept].sum() / flagged.sum())
    m = json.loads((d / "sub" / "metrics.json").read_text())
    assert m["num_mislabeled"] == round(0.3 * N) and m["num_corrupted"] == round(0.25 * N)


def test_mask_scored_on_other_noise_settings_is_refused(noisy_runs, tmp_path):
    d, base, sub, _ = noisy_runs
    info = {"method": "x", "arch": "resnet18", "label_noise": 0.3, "noise_type": "symmetric", "noise_seed": 5,
            "corrupt_ratio": 0.25, "corruption": "contrast", "severity": 4, "corrupt_seed": 2}
    (d / "info_x_ep1.json").write_text(json.dumps({**info, "noise_seed": 6}))
    save = tmp_path / "refused"
    flags = [*sub[:-1], str(save)]
    with pytest.raises(UserError, match="--noise_seed 6, this run has --noise_seed 5"):
        train_subset.main(flags)
    assert not save.exists()
    (d / "info_x_ep1.json").write_text(json.dumps({**info, "dataset": "cifar100"}))   # same size, other data set
    with pytest.raises(UserError, match="was scored on cifar100, this run trains on --dataset cifar10"):
        train_subset.main(flags)
    assert not save.exists()
    (d / "info_x_ep1.json").write_text(json.dumps(info))     # the same settings: accepted, arch recorded
    m = train_subset.main(flags)
    assert m["scored_arch"] == "resnet18" and m["arch"] == "resnet20" and m["method"] == "x"


def test_settings_without_effect_are_not_compared_and_a_mask_without_info_gets_a_note(noisy_runs, tmp_path,
                                                                                     cifar10_dir, capsys):
    d, _, sub, _ = noisy_runs
    clean = ["--data_path", cifar10_dir, *COMMON]
    # scored on clean dynamics whose recorded noise type/seed and corruption differ: nothing to compare
    (tmp_path / "info_x_ep1.json").write_text(json.dumps(
        {"method": "x", "label_noise": 0.0, "noise_type": "asymmetric", "noise_seed": 4,
         "corrupt_ratio": 0.0, "corruption": "jpeg", "severity": 1, "corrupt_seed": 8}))
    for f in ("data_mask_x_ep1.npy", "score_x_ep1.npy"):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    mask = ["--subset_rate", "0.5", "--mask_path", str(tmp_path / "data_mask_x_ep1.npy"),
            "--score_path", str(tmp_path / "score_x_ep1.npy")]
    assert train_subset.main(clean + mask + ["--save_path", str(tmp_path / "clean")])["finished"]
    with pytest.raises(UserError, match="--label_noise 0.0, this run has --label_noise 0.3"):
        train_subset.main(clean + mask + NOISE + ["--save_path", str(tmp_path / "refused")])
    # a copied mask without its info file: trained, with a note that nothing could be checked
    (tmp_path / "info_x_ep1.json").unlink()
    capsys.readouterr()
    train_subset.main(clean + mask + NOISE + ["--save_path", str(tmp_path / "noted")])
    assert "note: no info_<tag>.json beside" in capsys.readouterr().out
