"""--dynamics_format contrib (N floats per epoch, for ImageNet) and --dynamics_dtype float16 give the
scores the published logits layout gives: the same seeded CPU run recorded three ways, then scored
by importance_evaluation.py from each folder."""
import json
import os
import time

import numpy as np
import pytest

import importance_evaluation
from conftest import FULL_RUN, cli, read_published, ref_tdds

N_TRAIN, EPOCHS, T, K = 160, 5, 4, 3       # full_run: 160 images, 5 epochs; K = 3: two TDDS windows
BASELINES = ("el2n", "forgetting", "aum", "entropy", "dyn_unc")


def score(dyn, masks, method="tdds"):
    """importance_evaluation.py (its main, in this process) -> (dataset-order score, mask)."""
    t0 = time.time()
    importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", masks, "--method", method,
                                "--trajectory_len", str(T), "--window_size", str(K), "--decay", "0.9",
                                "--no_plot", "--device", "cpu"])
    tag = f"win{K}_ep{T}" if method == "tdds" else f"{method}_ep{T}"
    seconds = json.loads(open(f"{masks}/info_{tag}.json").read())["seconds"]
    assert 0 < seconds <= time.time() - t0      # a call from Python counts itself, not the process's age
    return np.load(f"{masks}/dataset_score_{tag}.npy"), np.load(f"{masks}/data_mask_{tag}.npy")


@pytest.fixture(scope="module")
def runs(full_run, full_run_contrib, cifar10_dir, tmp_path_factory):
    """The shared full_run's training recorded three ways: logits, contrib and float16 logits."""
    root = tmp_path_factory.mktemp("contrib")
    cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--dynamics_dtype", "float16",
        "--save_path", str(root / "float16"))
    return {"logits": f"{full_run}/npy", "contrib": f"{full_run_contrib}/npy", "float16": str(root / "float16" / "npy"),
            "masks": str(root / "masks")}


def test_contrib_layout(runs):
    files = set(os.listdir(runs["contrib"]))
    tags = ("Loss", "Index", "El2n", "Correct", "Margin", "Entropy", "TargetProb")
    expected = {f"{e}_{t}.npy" for e in range(EPOCHS) for t in tags} | \
               {f"{e}_Contrib.npy" for e in range(1, EPOCHS)} | {"targets.npy", "manifest.json"}
    assert files == expected
    for name in files - {"targets.npy", "manifest.json"}:
        a = np.load(os.path.join(runs["contrib"], name))
        assert a.shape == (N_TRAIN,) and a.dtype == (np.int64 if "Index" in name else np.float32), name
    np.testing.assert_array_equal(np.load(f"{runs['contrib']}/targets.npy"), np.load(f"{runs['logits']}/targets.npy"))
    for e in range(EPOCHS):   # the same training: the per-sample losses are the same bytes
        assert open(f"{runs['contrib']}/{e}_Loss.npy", "rb").read() == open(f"{runs['logits']}/{e}_Loss.npy", "rb").read()


def test_tdds_from_contrib_equals_tdds_from_logits(runs, tmp_path):
    s_log, m_log = score(runs["logits"], str(tmp_path / "l"))
    s_con, m_con = score(runs["contrib"], str(tmp_path / "c"))
    assert s_log.shape == (N_TRAIN,) and (s_log > 0).all()
    ref = ref_tdds(read_published(runs["logits"], T), T, K, 0.9)   # rows put back in dataset order by Index
    np.testing.assert_allclose(s_log, ref, rtol=1e-4)                          # anchor: the formulas themselves
    np.testing.assert_allclose(s_con, s_log, rtol=1e-4)
    np.testing.assert_array_equal(m_con, m_log)                                # the same ranking


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_from_contrib_equals_baseline_from_logits(runs, tmp_path, method):
    s_log, m_log = score(runs["logits"], str(tmp_path / "l"), method)
    s_con, m_con = score(runs["contrib"], str(tmp_path / "c"), method)
    np.testing.assert_allclose(s_con, s_log, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m_con, m_log)


def test_float16_dynamics(runs, tmp_path):
    for e in range(EPOCHS):   # the dtype touches only the files: the logits are the float32 ones, rounded
        o16, o32 = np.load(f"{runs['float16']}/{e}_Output.npy"), np.load(f"{runs['logits']}/{e}_Output.npy")
        assert o16.dtype == np.float16 and o16.shape == o32.shape == (N_TRAIN, 10)
        np.testing.assert_array_equal(o16, o32.astype(np.float16))
    s16, _ = score(runs["float16"], str(tmp_path / "h"))
    s32, _ = score(runs["logits"], str(tmp_path / "l"))
    ref16 = ref_tdds(read_published(runs["float16"], T), T, K, 0.9)
    np.testing.assert_allclose(s16, ref16, rtol=1e-4)                          # float16 files read right
    # Rounding a logit to float16 moves it by up to |z| * 2^-11 (~2e-3 at |z| = 4), whatever the
    # sample's score: the error per sample is absolute, a few 1e-3 of a typical score, so a sample
    # with a small score can move by 1e-2 of its own. The scores as a whole move by less than 1e-3
    # (relative L2 norm), the typical sample by less than 1e-3 of its score.
    err, typical = np.abs(s16 - s32), np.median(np.abs(s32))
    assert np.linalg.norm(s16 - s32) / np.linalg.norm(s32) <= 1e-3
    assert err.max() <= 1e-2 * typical and np.median(err / np.abs(s32)) <= 1e-3, (err.max(), typical)
