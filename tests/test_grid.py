"""importance_evaluation.py with several (T, K, beta): one pass over the files, and each
combination's files are byte for byte those of a call with that combination alone."""
import filecmp
import json
import os

import numpy as np
import pytest

import importance_evaluation
from conftest import write_published
from utils.errors import UserError

N, C, E = 300, 7, 8


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    """Published layout: rows in a shuffled order per epoch, with Index; logits drifting over epochs."""
    rng = np.random.default_rng(0)
    z, Z = rng.standard_normal((N, C)).astype(np.float32), []
    for e in range(E):
        z = z + 0.5 * rng.standard_normal((N, C)).astype(np.float32)
        Z.append(z)
    return write_published(tmp_path_factory.mktemp("grid") / "npy", np.stack(Z), rng.integers(0, C, N), seed=1)


def _files(folder, tag):
    return [os.path.join(folder, f"{kind}_{tag}.npy") for kind in ("data_mask", "score", "dataset_score")]


def test_tdds_grid_equals_single_runs(dyn, tmp_path):
    grid = str(tmp_path / "grid")
    importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", grid, "--trajectory_len", "5", "8",
                                "--window_size", "3", "4", "6", "--decay", "0.9", "0.7", "--no_plot",
                                "--chunk_size", "64"])
    # (5, 6) is invalid (K > T) and skipped: 5 valid (T, K) pairs x 2 decays
    infos = [f for f in os.listdir(grid) if f.startswith("info_")]
    assert len(infos) == 10 and not any("win6_ep5" in f for f in infos)
    assert json.load(open(os.path.join(grid, "info_win4_ep8_decay0.7.json")))["combinations"] == 10
    for T, K, beta in ((5, 3, 0.9), (8, 4, 0.7), (8, 6, 0.9)):
        single = str(tmp_path / f"single_{T}_{K}_{beta}")
        importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", single, "--trajectory_len", str(T),
                                    "--window_size", str(K), "--decay", str(beta), "--no_plot"])
        for a, b in zip(_files(grid, f"win{K}_ep{T}_decay{beta:g}"), _files(single, f"win{K}_ep{T}")):
            assert filecmp.cmp(a, b, shallow=False), (a, b)
    md = open(os.path.join(grid, "sensitivity_tdds.md")).read()
    assert "Spearman" in md and "pruning rate 0.9" in md and "win4_ep8_decay0.7" in md
    assert open(os.path.join(grid, "sensitivity_tdds.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["el2n", "dyn_unc", "entropy"])
def test_baseline_grid_equals_single_runs(dyn, tmp_path, method):
    grid = str(tmp_path / "grid")
    importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", grid, "--method", method,
                                "--trajectory_len", "4", "7", "--window_size", "2", "3", "--no_plot"])
    for T, K in ((4, 2), (7, 3)):
        single = str(tmp_path / f"single_{T}_{K}")
        importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", single, "--method", method,
                                    "--trajectory_len", str(T), "--window_size", str(K), "--no_plot"])
        tag = f"{method}_ep{T}" + (f"_win{K}" if method == "dyn_unc" else "")
        for a, b in zip(_files(grid, tag), _files(single, f"{method}_ep{T}")):
            assert filecmp.cmp(a, b, shallow=False), (a, b)


def test_no_valid_combination_is_one_error(dyn, tmp_path):
    with pytest.raises(UserError, match="--window_size 9 must be between 3 and --trajectory_len 5"):
        importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", str(tmp_path / "m"),
                                    "--trajectory_len", "5", "--window_size", "9"])
    assert not (tmp_path / "m").exists()


def test_combinations_that_share_file_names_or_impossible_T_are_one_error(dyn, tmp_path):
    with pytest.raises(UserError, match="would write the same files \\(win3_ep5_decay0.9\\)"):
        importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", str(tmp_path / "m"), "--trajectory_len",
                                    "5", "--window_size", "3", "--decay", "0.9", "0.9000001", "0.5"])
    with pytest.raises(UserError, match="--trajectory_len 0 must be at least 1"):
        importance_evaluation.main(["--dynamics_path", dyn, "--mask_path", str(tmp_path / "m"),
                                    "--trajectory_len", "0", "--window_size", "3"])
    assert not (tmp_path / "m").exists()
