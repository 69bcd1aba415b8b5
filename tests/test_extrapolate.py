"""Score extrapolation (docs/METHODS.md, "Score extrapolation"): the kNN against a plain-loop reference
on data with a known answer (ties by index included); train.py --train_fraction and importance_evaluation.py
end to end on the small CIFAR-10 fixture (files of all N samples, S's scores those of scoring S alone,
the others the reference kNN in the run's own features); f = 1 changes nothing; a proxy's scoring used by
a deeper subset run records both architectures."""
import json
import os

import numpy as np
import pytest
import torch
from conftest import FULL_RUN, assert_user_error, cli, folder_digest, write_published

from utils.errors import UserError
from utils.science.extrapolate import extend, knn_extrapolate, nearest
from utils.training.fraction import fraction_indices


def reference(values, subset, features, k):
    """The definition in plain loops: for i outside S, the mean of s_j over the k samples j of S with the
    smallest ||h_i - h_j||, equal distances in ascending order of j."""
    n = len(features)
    out = np.empty(n, dtype=np.float64)
    out[subset] = values
    for i in range(n):
        if i in set(subset.tolist()):
            continue
        d = [(float(np.sqrt(((features[i].astype(np.float64) - features[j]) ** 2).sum())), int(j), p)
             for p, j in enumerate(subset)]
        d.sort()                                             # by distance, then by index j
        out[i] = sum(values[p] for _, _, p in d[:k]) / k
    return out


def test_ties_go_to_the_lower_index():
    """1-D features on a grid, so every distance is exact: sample 1 (h = 1) is at distance 1 from samples 0
    (h = 2) and 4 (h = 0) of S; with k = 1 the lower index, 0, gives its score, whatever the values."""
    h = np.array([[2.0], [1.0], [5.0], [3.0], [0.0], [9.0]], dtype=np.float32)
    S = np.array([0, 4, 5])
    s = np.array([10.0, 20.0, 30.0], dtype=np.float32)
    out = knn_extrapolate(s, S, h, k=1)
    # sample 1: tie 0|4 -> 0; sample 2 (h 5): 0 at 3, 4 at 5, 5 at 4 -> 0; sample 3 (h 3): 0 at 1
    assert out.tolist() == [10.0, 10.0, 10.0, 10.0, 20.0, 30.0]
    two = knn_extrapolate(s, S, h, k=2)
    # sample 1: {0, 4}; sample 2: 0 (3) and 5 (4); sample 3: 0 (1) and then 4 and 5 tie at 3 -> 4
    assert two.tolist() == [10.0, 15.0, 20.0, 15.0, 20.0, 30.0]
    others, pos = nearest(h, S, k=2)
    assert others.tolist() == [1, 2, 3] and pos.tolist() == [[0, 1], [0, 2], [0, 1]]   # positions in S
    for k in (1, 2, 3):
        assert np.array_equal(knn_extrapolate(s, S, h, k=k), reference(s, S, h, k).astype(np.float32))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_against_the_plain_loop_reference(k):
    rng = np.random.default_rng(k)
    n, d = 120, 7
    h = rng.normal(size=(n, d)).astype(np.float32)
    h[5] = h[17]                                             # a duplicate: exact ties among neighbours
    h[40] = h[17]
    S = np.sort(rng.choice(n, 30, replace=False))
    S = np.union1d(S, [17, 40])
    s = rng.random(len(S)).astype(np.float32)
    want = reference(s, S, h, k)
    got = knn_extrapolate(s, S, h, k=k)
    assert got.dtype == np.float32 and np.array_equal(got[S], s)          # S keeps its own scores, bit for bit
    np.testing.assert_allclose(got, want, rtol=1e-6)
    small = knn_extrapolate(s, S, h, k=k, chunk_bytes=8 * len(S) * 3)     # 3 samples per chunk: the same
    assert np.array_equal(small, got)
    both = knn_extrapolate(np.stack([s, 2 * s], 1), S, h, k=k)            # several values at once
    np.testing.assert_allclose(both[:, 1], 2 * got, rtol=1e-6)


def test_bad_input():
    h = np.zeros((5, 2), np.float32)
    with pytest.raises(UserError, match="--extrapolate_k 4 must lie in 1..3"):
        nearest(h, np.array([0, 1, 2]), k=4)
    h[3, 1] = np.nan
    with pytest.raises(UserError, match="1 samples are NaN"):
        nearest(h, np.array([0, 1, 2]), k=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        nearest(np.zeros((5, 2)), np.array([2, 1]), k=1)
    assert extend(np.array([1.0]), np.array([0]), np.array([1]), np.array([[0]])).tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------------------- end to end
FRACTION = 0.5


@pytest.fixture(scope="module")
def fraction_run(cifar10_dir, tmp_path_factory):
    """train.py FULL_RUN --train_fraction 0.5 (80 of the 160 images, resnet20, 5 epochs) and its TDDS
    scoring with T = 5, K = 3: (run folder, mask folder)."""
    d = tmp_path_factory.mktemp("fraction")
    run, masks = d / "run", d / "masks"
    cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--train_fraction", FRACTION, "--save_path", run)
    cli("importance_evaluation.py", "--dynamics_path", run / "npy", "--mask_path", masks, "--trajectory_len", 5,
        "--window_size", 3, "--no_plot")
    return run, masks


def test_the_run_trains_and_records_only_its_fraction(fraction_run):
    run, _ = fraction_run
    S = np.load(run / "train_indices.npy")
    assert S.dtype == np.int64 and len(S) == round(FRACTION * 160) and (np.diff(S) > 0).all()
    assert np.array_equal(S, np.sort(np.random.default_rng(42).choice(160, 80, replace=False)))   # --manualSeed
    assert np.array_equal(S, fraction_indices(160, FRACTION, 42))
    for e in range(5):
        assert np.array_equal(np.load(run / "npy" / f"{e}_Index.npy"), S)                  # rows of S, in order
        assert np.load(run / "npy" / f"{e}_Output.npy").shape == (80, 10)
    assert len(np.load(run / "npy" / "targets.npy")) == 160
    m = json.loads((run / "metrics.json").read_text())
    assert (m["num_train_samples"], m["full_train_samples"], m["train_fraction"], m["method"]) == (80, 160, 0.5, "fraction")
    assert json.loads((run / "folder.json").read_text())["fingerprint"]["--train_fraction"] == 0.5


def own_features(run, cifar10_dir):
    """(160, 64) penultimate features of the run's final model, taken here with a hook on its Linear:
    eval mode, the training images without augmentation."""
    import train
    from models import create_model
    from utils.training.data import load_data, make_batches
    data = load_data(train.parse_args(["--data_path", cifar10_dir, *FULL_RUN]), torch.device("cpu"))
    data.train.augment = False
    model = create_model("resnet20", 10)
    model.load_state_dict(torch.load(run / "checkpoint.pth.tar", map_location="cpu", weights_only=True)["model"])
    model.eval()
    got = {}
    model.linear.register_forward_hook(lambda m, inp, out: got.setdefault("h", []).append(inp[0]))
    with torch.no_grad():
        for x, _, _ in data.train.batches(make_batches(torch.arange(160), 64)):   # in dataset order
            model(x)
    return torch.cat(got["h"]).numpy()


def test_scores_of_all_samples_from_the_fraction(fraction_run, cifar10_dir, tmp_path):
    from utils.protocol.fingerprint import file_sha256
    from utils.science.scores import Dynamics, compute_score
    run, masks = fraction_run
    S = np.load(run / "train_indices.npy")
    score = np.load(masks / "dataset_score_win3_ep5.npy")
    mask, sorted_score = np.load(masks / "data_mask_win3_ep5.npy"), np.load(masks / "score_win3_ep5.npy")
    assert score.shape == mask.shape == sorted_score.shape == (160,) and mask.dtype == np.int64   # the published layout
    assert np.array_equal(mask, np.argsort(score, kind="stable")) and np.array_equal(sorted_score, score[mask])
    # S: the plain scoring of S's dynamics, laid out as a data set of 80 samples of its own
    Z = np.stack([np.load(run / "npy" / f"{e}_Output.npy") for e in range(5)])              # (5, 80, 10)
    alone = write_published(tmp_path / "alone", Z, y=np.load(run / "npy" / "targets.npy")[S])
    assert np.array_equal(score[S], compute_score(Dynamics(alone, 5), "tdds", 5, 3, 0.9))
    # the others: the reference kNN (k = 10) in the features of the run's final model
    want = reference(score[S], S, own_features(run, cifar10_dir), 10)
    others = np.setdiff1d(np.arange(160), S)
    np.testing.assert_allclose(score[others], want[others], rtol=1e-5)
    info = json.loads((masks / "info_win3_ep5.json").read_text())
    assert (info["train_fraction"], info["extrapolate_k"], info["scored_samples"], info["num_samples"]) == (0.5, 10, 80, 160)
    assert info["feature_passes"] == 160 and info["feature_arch"] == info["arch"] == "resnet20"
    src = info["feature_source"]
    assert src["checkpoint"] == str(run / "checkpoint.pth.tar") and src["sha256"] == file_sha256(src["checkpoint"])
    assert info["scoring"]["extrapolation"]["k"] == 10


def test_k_and_method_change_the_files_and_dual_extends_its_mean_p(fraction_run, tmp_path):
    run, masks = fraction_run
    p = cli("importance_evaluation.py", "--dynamics_path", run / "npy", "--mask_path", masks, "--trajectory_len", 5,
            "--window_size", 3, "--no_plot", "--extrapolate_k", 3, check=False)
    assert_user_error(p, "records a scoring with extrapolation")                # another k: other files
    out = tmp_path / "dual"
    cli("importance_evaluation.py", "--dynamics_path", run / "npy", "--mask_path", out, "--trajectory_len", 5,
        "--window_size", 3, "--method", "dual", "--extrapolate_k", 1, "--no_plot")
    S = np.load(run / "train_indices.npy")
    mean_p, score = np.load(out / "mean_p_dual_ep5.npy"), np.load(out / "dataset_score_dual_ep5.npy")
    assert mean_p.shape == score.shape == (160,)
    # k = 1: every sample outside S carries the values of one sample of S, the same one for both files
    others = np.setdiff1d(np.arange(160), S)
    for i in others[:10]:
        j = S[np.flatnonzero(score[S] == score[i])]
        assert len(j) and any(mean_p[jj] == mean_p[i] for jj in j)


def test_refusals(fraction_run, full_run, tmp_path, cifar10_dir):
    run, _ = fraction_run
    score = ["importance_evaluation.py", "--mask_path", tmp_path / "m", "--trajectory_len", 5, "--window_size", 3]
    assert_user_error(cli(*score, "--dynamics_path", os.path.join(full_run, "npy"), "--extrapolate_k", 5, check=False),
                      "--extrapolate_k", "cover every sample")
    assert_user_error(cli(*score, "--dynamics_path", run / "npy", "--method", "random", check=False), "--method random")
    assert_user_error(cli(*score, "--dynamics_path", run / "npy", "--extrapolate_k", 81, check=False), "1..80")
    assert_user_error(cli(*score, "--dynamics_path", run / "npy", "--checkpoint",
                          os.path.join(full_run, "checkpoint.pth.tar"), check=False), "is of run")
    assert not (tmp_path / "m").exists()
    train = ["train.py", "--data_path", cifar10_dir, *FULL_RUN, "--save_path", tmp_path / "t"]
    for bad, what in (("0", "(0, 1]"), ("1.5", "(0, 1]"), ("0.001", "keeps 0 of the 160")):
        assert_user_error(cli(*train, "--train_fraction", bad, check=False), what)
    assert_user_error(cli(*train, "--train_fraction", "0.5", "--dynamic", "rs2", check=False), "--dynamic")
    assert not (tmp_path / "t").exists()


def test_fraction_one_changes_nothing(full_run, cifar10_dir, tmp_path):
    """--train_fraction 1 is the run without the flag: the same fingerprint (a finished run of it is already
    done) and the same files, byte for byte."""
    import shutil
    done = tmp_path / "done"
    shutil.copytree(full_run, done)
    before = folder_digest(done)
    p = cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--train_fraction", "1", "--save_path", done)
    assert "already" in p.out and folder_digest(done) == before
    again = tmp_path / "again"
    cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--train_fraction", "1.0", "--save_path", again)
    assert not (again / "train_indices.npy").exists()
    for f in sorted(os.listdir(os.path.join(full_run, "npy"))):
        if f != "manifest.json":                                             # (it names the run's id)
            assert (again / "npy" / f).read_bytes() == open(os.path.join(full_run, "npy", f), "rb").read(), f
    load = lambda d: torch.load(os.path.join(d, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    a, b = load(full_run), load(again)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["fingerprint"] == b["fingerprint"] and "--train_fraction" not in a["fingerprint"]
    m = json.loads((again / "metrics.json").read_text())
    assert "train_fraction" not in m and m["method"] == "full" and m["num_train_samples"] == 160


def test_a_proxy_scoring_trains_a_deeper_subset(fraction_run, cifar10_dir, tmp_path):
    """Scored by resnet20 (from its fraction's dynamics), trained as resnet56: metrics.json records both."""
    _, masks = fraction_run
    save = tmp_path / "sub"
    cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet56", "--epochs", "1",
        "--batch-size", "40", "--ngpu", "0", "--subset_rate", "0.5", "--mask_path", masks / "data_mask_win3_ep5.npy",
        "--score_path", masks / "score_win3_ep5.npy", "--save_path", save)
    m = json.loads((save / "metrics.json").read_text())
    assert (m["arch"], m["scored_arch"]) == ("resnet56", "resnet20")
    assert m["score_info"]["train_fraction"] == 0.5 and m["score_info"]["feature_arch"] == "resnet20"
    assert m["num_train_samples"] == 80 and m["full_train_samples"] == 160
