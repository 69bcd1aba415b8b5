"""The Moderate baseline: penultimate features, distances to the class median, the middle-band
score, and importance_evaluation.py --method moderate on a checkpoint of train.py."""
import json
import os

import numpy as np
import torch

from models import create_model
from utils.training.data import CIFAR_STATS, DeviceImages
from utils.science.moderate import moderate_score
from utils.training.checkpoint_features import penultimate_features
from utils.science.selection import kept_count
from conftest import assert_user_error, cli


def reference(features, targets):
    """Straight from the definition, with plain loops."""
    n = len(features)
    d = np.zeros(n)
    for i in range(n):
        same = features[targets == targets[i]]
        centre = np.array([np.median(same[:, k]) for k in range(features.shape[1])])
        d[i] = np.sqrt(((features[i] - centre) ** 2).sum())
    order = sorted(range(n), key=lambda i: (d[i], i))      # stable ascending
    rank = np.empty(n)
    rank[order] = np.arange(n)
    return d, -np.abs(rank - (n - 1) / 2)


def test_score_matches_the_definition_and_keeps_the_middle_band():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((301, 6)).astype(np.float32)
    y = rng.integers(0, 4, 301)
    d, score = moderate_score(f, y)
    d_ref, score_ref = reference(f, y)
    np.testing.assert_allclose(d, d_ref, rtol=1e-5)
    np.testing.assert_array_equal(score, score_ref.astype(np.float32))
    order = np.argsort(d, kind="stable")
    n = len(d)
    for r in (0.3, 0.5, 0.7, 0.9):
        keep = 1 - r                                       # the published band of ranks of d
        band = set(order[round(n * (0.5 - keep / 2)):round(n * (0.5 + keep / 2))].tolist())
        ours = set(np.argsort(score, kind="stable")[n - kept_count(n, r):].tolist())
        assert len(ours ^ band) <= 2, r                    # at most one sample at each edge


def test_penultimate_features_are_the_final_layers_input():
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    images = DeviceImages(np.random.default_rng(1).integers(0, 256, (37, 3, 32, 32), dtype=np.uint8),
                          np.zeros(37, dtype=np.int64), CIFAR_STATS["cifar10"], torch.device("cpu"), augment=False)
    ours = penultimate_features(model, images, 37, batch_size=16)
    model.linear = torch.nn.Identity()                     # the network without its classifier
    with torch.no_grad():
        x = next(images.batches([torch.arange(37)]))[0]
        expected = model.eval()(x).numpy()
    assert ours.shape == (37, 64)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_cli_on_a_checkpoint_of_train_py(full_run, cifar10_dir, tmp_path):
    ck = os.path.join(full_run, "checkpoint.pth.tar")
    out = tmp_path / "masks"
    cli("importance_evaluation.py", "--method", "moderate", "--checkpoint", ck, "--mask_path", out, "--no_plot")
    score = np.load(out / "dataset_score_moderate.npy")
    assert np.array_equal(np.load(out / "data_mask_moderate.npy"), np.argsort(score, kind="stable"))
    info = json.loads((out / "info_moderate.json").read_text())
    assert info["method"] == "moderate" and info["arch"] == "resnet20" and info["checkpoint_epoch"] == 5
    # the same score from the features of the saved model, computed here
    from utils.training.data import read_cifar
    x, y = read_cifar(cifar10_dir, "cifar10", True)
    model = create_model("resnet20", 10)
    model.load_state_dict(torch.load(ck, weights_only=True)["model"])
    feats = penultimate_features(model, DeviceImages(x, y, CIFAR_STATS["cifar10"], torch.device("cpu"), False), len(y))
    np.testing.assert_array_equal(score, moderate_score(feats, y)[1])
    assert_user_error(cli("importance_evaluation.py", "--method", "moderate", "--mask_path", tmp_path / "m2",
                          check=False), "--method moderate needs --checkpoint")
    # a checkpoint that is not one: a folder, an empty, a truncated or a foreign file, the weights-only
    # model_best.pth.tar: one line each, naming what to pass instead
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    data = open(ck, "rb").read()
    (tmp_path / "cut.pth.tar").write_bytes(data[:len(data) // 2])
    np.save(tmp_path / "scores.npy", np.arange(3))
    for path, fragment in ((full_run, "is a folder: give"), (tmp_path / "empty.pth.tar", "it is empty"),
                           (tmp_path / "cut.pth.tar", "not a complete checkpoint"),
                           (tmp_path / "scores.npy", "not a PyTorch checkpoint"),
                           (os.path.join(full_run, "model_best.pth.tar"), "give checkpoint.pth.tar of the same run")):
        p = cli("importance_evaluation.py", "--method", "moderate", "--checkpoint", path,
                "--mask_path", tmp_path / "refused", check=False)
        assert_user_error(p, fragment)
    assert not (tmp_path / "refused").exists()


def test_a_relative_data_path_is_found_from_the_folder_the_run_started_in(cifar10_dir, tmp_path, monkeypatch):
    """moderate and the report read the run's recorded --data_path; a relative one is resolved against
    the folder that run was started in (args.json's cwd) when it holds no data from here."""
    import shutil

    from utils.training.data import recorded_data_path
    start = tmp_path / "project"
    shutil.copytree(cifar10_dir, start / "data")
    cli("train.py", "--data_path", "./data", "--dataset", "cifar10", "--arch", "resnet20", "--epochs", "1",
        "--batch-size", "32", "--ngpu", "0", "--save_path", "runs/full", cwd=start)
    assert json.loads((start / "runs" / "full" / "args.json").read_text())["cwd"] == str(start)
    monkeypatch.chdir(tmp_path)                         # elsewhere: ./data holds nothing here
    run = str(start / "runs" / "full")
    assert recorded_data_path("cifar10", "./data", run) == os.path.join(str(start), "./data")
    assert recorded_data_path("cifar10", "/abs/data", run) == "/abs/data"            # absolute: as recorded
    assert recorded_data_path("cifar10", "./nowhere", run) == "./nowhere"            # not there either: as is
    cli("importance_evaluation.py", "--method", "moderate", "--checkpoint", f"{run}/checkpoint.pth.tar",
        "--mask_path", tmp_path / "masks", "--no_plot", cwd=tmp_path)
    assert np.load(tmp_path / "masks" / "dataset_score_moderate.npy").shape == (160,)
