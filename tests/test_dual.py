"""--method dual against a plain numpy computation of DUAL (Cho et al., ICML 2025) on dynamics in the
published shuffled layout and in the contrib layout, its mean_p_<tag>.npy, and a grid's single figure."""
import json
import os

import numpy as np
import pytest

import importance_evaluation
from conftest import write_published
from utils.science.scores import Dynamics, compute_score

N, C, E = 240, 6, 8


def reference_dual(p_y, T, J):
    """DUAL from (E, N) true-label probabilities, float64 loops: per window 10 * std(ddof 1) * (1 - mean),
    averaged over the T - J + 1 windows; and mean p_y over epochs 0..T-1."""
    score = np.zeros(p_y.shape[1])
    for i in range(p_y.shape[1]):
        terms = [10 * np.std(p_y[k:k + J, i], ddof=1) * (1 - np.mean(p_y[k:k + J, i])) for k in range(T - J + 1)]
        score[i] = sum(terms) / len(terms)
    return score, p_y[:T].mean(0)


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    """Logits drifting over epochs, rows shuffled per epoch (Index), targets.npy; also the same p_y as a
    contrib-layout folder. Returns (logits folder, contrib folder, (E, N) float64 p_y)."""
    base = tmp_path_factory.mktemp("dual")
    logits, contrib = base / "npy", base / "contrib"
    contrib.mkdir()
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, N)
    z = rng.standard_normal((N, C)).astype(np.float32)
    Z, p_y = [], np.empty((E, N))
    for e in range(E):
        z = z + 0.7 * rng.standard_normal((N, C)).astype(np.float32)
        z[np.arange(N), y] += 0.4        # learning: the true class gains over the epochs
        Z.append(z.copy())
        z64 = z.astype(np.float64)
        p = np.exp(z64 - z64.max(1, keepdims=True))
        p_y[e] = (p / p.sum(1, keepdims=True))[np.arange(N), y]
        perm = rng.permutation(N)        # the contrib folder's own visiting order
        np.save(contrib / f"{e}_TargetProb.npy", p_y[e, perm].astype(np.float32))
        np.save(contrib / f"{e}_Index.npy", perm)
    write_published(logits, np.stack(Z), y, seed=1)
    return str(logits), str(contrib), p_y


@pytest.mark.parametrize("T, J", [(8, 4), (5, 2), (6, 6)])
def test_dual_equals_numpy(dyn, T, J):
    """Agreement to float32 rounding: the project computes p_y in float32 (the reference in float64),
    the windows in float64, and stores float32."""
    logits, contrib, p_y = dyn
    ref, _ = reference_dual(p_y, T, J)
    got = compute_score(Dynamics(logits, T), "dual", T, J, None, progress=False)
    assert got.dtype == np.float32 and ref.std() > 0.1
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)
    # from the contrib layout's <e>_TargetProb.npy (p_y stored in float32, rows shuffled)
    ref32, _ = reference_dual(p_y.astype(np.float32).astype(np.float64), T, J)
    np.testing.assert_allclose(compute_score(Dynamics(contrib, T), "dual", T, J, None, progress=False), ref32,
                               rtol=1e-6, atol=1e-7)


def test_cli_grid_writes_mean_p_and_one_histogram(dyn, tmp_path):
    logits, _, p_y = dyn
    out = str(tmp_path / "masks")
    importance_evaluation.main(["--dynamics_path", logits, "--mask_path", out, "--method", "dual",
                                "--trajectory_len", "5", "8", "--window_size", "2", "4", "--chunk_size", "100"])
    for T, J in ((5, 2), (5, 4), (8, 2), (8, 4)):
        tag = f"dual_ep{T}_win{J}"
        info = json.load(open(os.path.join(out, f"info_{tag}.json")))
        assert info["files"]["mean_p"] == f"mean_p_{tag}.npy" and info["window_size"] == J
        ref, mean_p = reference_dual(p_y, T, J)
        np.testing.assert_allclose(np.load(os.path.join(out, f"dataset_score_{tag}.npy")), ref, rtol=2e-5, atol=1e-6)
        got_p = np.load(os.path.join(out, f"mean_p_{tag}.npy"))
        assert got_p.dtype == np.float32
        np.testing.assert_allclose(got_p, mean_p, rtol=1e-5, atol=1e-7)
        mask = np.load(os.path.join(out, f"data_mask_{tag}.npy"))
        np.testing.assert_array_equal(np.sort(mask), np.arange(N))
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == ["score_hist_dual_grid.png", "sensitivity_dual.png"]   # one figure, not four


def test_single_call_names_its_files_like_the_baselines(dyn, tmp_path):
    logits, _, p_y = dyn
    out = str(tmp_path / "one")
    importance_evaluation.main(["--dynamics_path", logits, "--mask_path", out, "--method", "dual",
                                "--trajectory_len", "6", "--window_size", "3", "--no_plot"])
    assert sorted(f for f in os.listdir(out) if f != ".lock") == sorted(f"{k}_dual_ep6.{x}" for k, x in (
        ("data_mask", "npy"), ("score", "npy"), ("dataset_score", "npy"), ("mean_p", "npy"), ("info", "json")))
    np.testing.assert_allclose(np.load(os.path.join(out, "mean_p_dual_ep6.npy")), p_y[:6].mean(0), rtol=1e-5)
