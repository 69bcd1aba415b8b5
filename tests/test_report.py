"""scripts/report.py: the grids hold the images they say, the per-class counts and the agreement
numbers match an independent computation, every picture is a real PNG, and mistakes are one line."""
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from conftest import ROOT, assert_user_error, run_script
from utils.selection import kept_count

spec = importlib.util.spec_from_file_location("report", os.path.join(ROOT, "scripts", "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)
N, RATES = 160, (0.5, 0.8)


@pytest.fixture(scope="module")
def masks(cifar10_dir, tmp_path_factory):
    """Two scores of the cifar10 fixture with info files; a dynamics folder for the TDDS one."""
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    dyn = d / "run" / "npy"
    dyn.mkdir(parents=True)
    for e in range(4):
        np.save(dyn / f"{e}_Output.npy", rng.standard_normal((N, 10)).astype(np.float32))
        np.save(dyn / f"{e}_Index.npy", np.arange(N))
    flipped = np.zeros(N, bool)
    flipped[::7] = True
    np.save(d / "run" / "label_noise_mask.npy", flipped)
    scores = {"win3_ep4": rng.random(N), "el2n_ep4": rng.integers(0, 20, N).astype(float)}   # el2n: ties
    for tag, s in scores.items():
        np.save(d / f"dataset_score_{tag}.npy", s.astype(np.float32))
        json.dump({"method": "tdds" if tag.startswith("win") else "el2n", "trajectory_len": 4, "dataset": "cifar10",
                   "data_path": cifar10_dir, "dynamics_path": str(dyn), "dynamics_run": str(d / "run")},
                  open(d / f"info_{tag}.json", "w"))
    report.main([str(d), "--rates", *map(str, RATES), "--per_row", "4"])
    return d, {k: v.astype(np.float32).astype(np.float64) for k, v in scores.items()}, flipped


def test_grids_hold_the_images_they_say(masks, cifar10_dir):
    d, scores, flipped = masks
    grids = json.load(open(d / "report" / "grids.json"))
    images = report.Images("cifar10", cifar10_dir)
    for tag, s in scores.items():
        for c in range(10):
            members = np.flatnonzero(images.labels == c)
            ranked = members[np.argsort(s[members], kind="stable")]
            cell = grids[tag][images.names[c]]
            assert cell["kept"] == ranked[::-1][:4].tolist() and cell["pruned"] == ranked[:4].tolist()
    # the pixels of a cell are that image's thumbnail; flagged samples get a coloured frame
    cells, canvas = report.grid(images, images.labels, scores["win3_ep4"], [0, 1], 4, {"mislabeled": flipped},
                                str(d / "g.png"), "t")
    cell = 48 + 6
    i = cells[images.names[1]]["pruned"][2]                      # class 1 = rows 2 (kept), 3 (pruned)
    y0, x0 = 3 * cell, 2 * cell
    assert np.array_equal(canvas[y0 + 3:y0 + 51, x0 + 3:x0 + 51], images.thumb(i))
    expected = np.asarray(Image.fromarray(images.array[i].transpose(1, 2, 0)).resize((48, 48), Image.BILINEAR))
    assert np.array_equal(images.thumb(i), expected)
    assert tuple(canvas[y0, x0]) == ((220, 30, 30) if flipped[i] else (255, 255, 255))


def test_counts_and_agreement_match_an_independent_computation(masks, cifar10_dir):
    d, scores, _ = masks
    labels = report.Images("cifar10", cifar10_dir).labels
    counts = json.load(open(d / "report" / "class_counts.json"))
    for tag, s in scores.items():
        for r in RATES:
            kept = np.argsort(s, kind="stable")[N - kept_count(N, r):]
            assert counts[tag][f"{r:g}"] == np.bincount(labels[kept], minlength=10).tolist()
    md = (d / "report" / "agreement.md").read_text()
    rows = {line.split("|")[1].strip(): [float(v) for v in line.strip().strip("|").split("|")[1:]]
            for line in md.split("### Spearman")[1].split("###")[0].splitlines() if line.startswith("| el2n")}
    rho = spearmanr(scores["el2n_ep4"], scores["win3_ep4"]).statistic
    assert rows["el2n_ep4"][1] == pytest.approx(rho, abs=5e-4)
    for r in RATES:
        part = md.split(f"pruning rate {r:g}")[1].split("###")[0]
        value = float([l for l in part.splitlines() if l.startswith("| el2n")][0].strip().strip("|").split("|")[2])
        a = set(np.argsort(scores["el2n_ep4"], kind="stable")[N - kept_count(N, r):].tolist())
        b = set(np.argsort(scores["win3_ep4"], kind="stable")[N - kept_count(N, r):].tolist())
        assert value == pytest.approx(len(a & b) / len(a | b), abs=5e-4)


def test_every_picture_is_a_png_and_the_report_links_them(masks):
    d, scores, _ = masks
    out = d / "report"
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert set(pngs) >= {f"{kind}_{t}.png" for t in scores for kind in ("grid", "classes")} | {"agreement.png"}
    assert "trajectory_win3_ep4.png" in pngs and "trajectory_el2n_ep4.png" not in pngs
    md = (out / "report.md").read_text()
    for f in pngs:
        w, h = Image.open(out / f).size
        assert w > 200 and h > 150, f
        assert f"({f})" in md, f


def test_one_line_errors(tmp_path, cifar10_dir):
    (tmp_path / "empty").mkdir()
    assert_user_error(run_script("scripts/report.py", str(tmp_path / "empty"), check=False), "no dataset_score_")
    np.save(tmp_path / "dataset_score_x.npy", np.zeros(N + 1, np.float32))
    p = run_script("scripts/report.py", str(tmp_path), "--dataset", "cifar10", "--data_path", cifar10_dir, check=False)
    assert_user_error(p, f"{N + 1} samples", "has 160")
    assert not (tmp_path / "report").exists()
