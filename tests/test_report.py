"""scripts/report.py and utils/science/agreement.py: the grids hold the images they say (indices and pixels),
the per-class counts, the agreement numbers and the trajectories match independent computations,
every picture is a real PNG linked from report.md, and mistakes are one line with nothing written.

Data: the CIFAR-10 layout (write_cifar, with a batches.meta of class names), digits (read_digits),
a tiny ImageFolder tree of one-colour PNGs; scores from importance_evaluation.py on synthetic
dynamics (shuffled rows, two decays: tags with a _decay suffix) and written directly."""
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import (ROOT, assert_user_error, ref_contributions, ref_tdds_from_contributions, run_script,
                      write_cifar, write_published)
from utils.science import agreement
from utils.errors import UserError

spec = importlib.util.spec_from_file_location("report", os.path.join(ROOT, "scripts", "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

N, T, K, RATES = 160, 4, 3, (0.5, 0.8)
NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------ independent references
def brute_spearman(a, b):
    """Spearman's rho from its definition: rank = #smaller + (#equal - 1) / 2, counted pairwise
    (O(N^2)), then the Pearson correlation of the ranks."""
    def rank(x):
        return (x[None, :] < x[:, None]).sum(1) + ((x[None, :] == x[:, None]).sum(1) - 1) / 2
    return np.corrcoef(rank(np.asarray(a)), rank(np.asarray(b)))[0, 1]


def kept_by_sorting(s, rate):
    """Kept set from Python's sort on (score, index): the top N - int(rate N)."""
    ranked = sorted(range(len(s)), key=lambda i: (s[i], i))
    return set(ranked[int(rate * len(s)):])


def read_tables(md):
    """{section title: {row label: {column label: value}}} of the markdown tables of agreement.md."""
    out = {}
    for part in md.split("### ")[1:]:
        title, *lines = part.splitlines()
        rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines if l.startswith("|")]
        header = rows[0][1:]
        out[title] = {r[0]: dict(zip(header, map(float, r[1:]))) for r in rows[2:]}
    return out


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CIFAR-10 fixture with class names; a training run with shuffled dynamics, label noise and
    corruption; TDDS scored by importance_evaluation.py at two decays; an el2n-like score with ties."""
    d = tmp_path_factory.mktemp("report")
    data = write_cifar(str(d / "data"), "cifar10", N, 20, seed=3)
    with open(d / "data" / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({"label_names": NAMES}, f)
    rng = np.random.default_rng(0)
    run, dyn = d / "run", d / "run" / "npy"
    logits = (3 * rng.standard_normal((T, N, 10))).astype(np.float32)          # (T, N, C) in dataset order
    write_published(dyn, logits, seed=1)                                       # shuffled rows, as published
    flipped, corrupted = np.zeros(N, bool), np.zeros(N, bool)
    flipped[rng.choice(N, 30, replace=False)] = True
    corrupted[rng.choice(N, 30, replace=False)] = True
    from utils.training.data import read_cifar
    clean = read_cifar(data, "cifar10", True)[1]
    noisy = np.where(flipped, (clean + 1) % 10, clean)
    np.save(run / "label_noise_mask.npy", flipped)
    np.save(run / "corrupted_mask.npy", corrupted)
    np.save(run / "train_labels.npy", noisy)
    json.dump({"args": {"dataset": "cifar10", "data_path": data, "arch": "resnet20", "save_path": str(run)}},
              open(run / "args.json", "w"))
    masks = d / "masks"
    run_script("importance_evaluation.py", "--dynamics_path", str(dyn), "--mask_path", str(masks),
               "--trajectory_len", str(T), "--window_size", str(K), "--decay", "0.9", "0.8", "--device", "cpu")
    ties = rng.integers(0, 12, N).astype(np.float32)                            # many ties
    np.save(masks / "dataset_score_el2n_ep4.npy", ties)
    json.dump({"method": "el2n", "tag": "el2n_ep4", "trajectory_len": T, "window_size": None, "decay": None,
               "num_samples": N, "num_classes": 10, "dynamics_path": str(dyn), "dynamics_run": str(run),
               "dataset": "cifar10", "data_path": data, "arch": None, "seconds": 0.1, "device": "cpu"},
              open(masks / "info_el2n_ep4.json", "w"))
    report.main([str(masks), "--rates", *map(str, RATES), "--per_row", "4", "--thumb", "32"])
    scores = {t: np.load(masks / f"dataset_score_{t}.npy").astype(np.float64)
              for t in ("win3_ep4_decay0.9", "win3_ep4_decay0.8", "el2n_ep4")}
    return dict(d=d, data=data, masks=masks, out=masks / "report", scores=scores, logits=logits,
                labels=noisy, flipped=flipped, corrupted=corrupted)


# ------------------------------------------------------------------------------ agreement (known answers)
def test_agreement_known_answers():
    s = np.arange(10.0)
    labels, rho = agreement.spearman_matrix({"a": s, "same order": 2 * s + 1, "reversed": -s})
    assert labels == ["a", "same order", "reversed"]
    assert np.allclose(rho, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]])
    _, jac = agreement.jaccard_matrix({"a": s, "reversed": -s}, 0.5)       # top 5 vs bottom 5
    assert np.allclose(jac, [[1, 0], [0, 1]])
    _, jac = agreement.jaccard_matrix({"a": s, "b": np.r_[s[:8], 9, 8]}, 0.7)   # {7,8,9} vs {7,8,9}
    assert jac[0, 1] == 1
    _, jac = agreement.jaccard_matrix({"a": s, "b": np.r_[0, 9, s[2:9], 1]}, 0.8)   # {8,9} vs {1,8}
    assert jac[0, 1] == pytest.approx(1 / 3)
    ties = np.array([3, 1, 3, 2, 3, 1.0])
    assert np.array_equal(agreement.ranks(ties), [4, 0.5, 4, 2, 4, 0.5])   # ties share their mean rank


def test_agreement_tables_match_brute_force(cifar, tmp_path):
    md = (cifar["out"] / "agreement.md").read_text()
    tables = read_tables(md)
    scores = cifar["scores"]
    rho = tables["Spearman correlation of the scores"]
    for a in scores:
        for b in scores:
            assert rho[a][b] == pytest.approx(brute_spearman(scores[a], scores[b]), abs=6e-4), (a, b)
    for r in RATES:
        jac = tables[f"Jaccard overlap of the kept sets at pruning rate {r:g}"]
        for a in scores:
            for b in scores:
                A, B = kept_by_sorting(scores[a], r), kept_by_sorting(scores[b], r)
                assert jac[a][b] == pytest.approx(len(A & B) / len(A | B), abs=6e-4), (a, b, r)
    # the function importance_evaluation.py calls: returns what it writes, draws a real PNG
    text = agreement.write_agreement(scores, RATES, tmp_path / "a.md", tmp_path / "a.png", title="t")
    assert text == (tmp_path / "a.md").read_text() and read_tables(text) == tables
    assert Image.open(tmp_path / "a.png").size[0] > 300


# ------------------------------------------------------------------------------ grids
def test_grids_hold_the_images_they_say(cifar):
    grids = json.load(open(cifar["out"] / "grids.json"))
    labels = cifar["labels"]                                   # grouped by the labels trained on
    assert set(grids) == set(cifar["scores"])
    for tag, s in cifar["scores"].items():
        assert sorted(grids[tag]) == sorted(NAMES)             # class names from batches.meta (JSON sorts keys)
        for c, name in enumerate(NAMES):
            members = np.flatnonzero(labels == c)
            ranked = members[np.argsort(s[members], kind="stable")]
            assert grids[tag][name]["kept"] == ranked[::-1][:4].tolist()
            assert grids[tag][name]["pruned"] == ranked[:4].tolist()


def test_grid_pixels_are_the_source_images_and_flags_are_framed(cifar, tmp_path):
    from utils.training.data import read_cifar
    raw = read_cifar(cifar["data"], "cifar10", True)[0]       # (N, 3, 32, 32) uint8
    images = report.Images("cifar10", cifar["data"])
    s = cifar["scores"]["win3_ep4_decay0.9"]
    flags = {"mislabeled": cifar["flipped"], "corrupted": cifar["corrupted"]}
    order = np.argsort(s, kind="stable")
    cells, canvas = report.grid(images, cifar["labels"], order, [0, 1, 2], 4, 32, flags, str(tmp_path / "g.png"), "t")
    assert cells == {k: v for k, v in json.load(open(cifar["out"] / "grids.json"))["win3_ep4_decay0.9"].items()
                     if k in NAMES[:3]}
    cell, gap = 32 + 2 * report.PAD, (32 + 2 * report.PAD) // 4
    seen = set()
    for r, name in enumerate(NAMES[:3]):
        for j, kind in enumerate(("kept", "pruned")):
            for k, i in enumerate(cells[name][kind]):
                y0, x0 = r * (2 * cell + gap) + j * cell, k * cell
                inner = canvas[y0 + report.PAD:y0 + report.PAD + 32, x0 + report.PAD:x0 + report.PAD + 32]
                assert np.array_equal(inner, raw[i].transpose(1, 2, 0))        # thumb 32 = the raw image
                red, orange, white = (220, 30, 30), (255, 150, 0), (255, 255, 255)
                flipped, corrupted = cifar["flipped"][i], cifar["corrupted"][i]     # both: left red, right orange
                assert tuple(canvas[y0, x0]) == (red if flipped else orange if corrupted else white)
                assert tuple(canvas[y0, x0 + cell - 1]) == (orange if corrupted else red if flipped else white)
                seen.add("corrupted" if cifar["corrupted"][i] else "mislabeled" if cifar["flipped"][i] else "clean")
    assert seen == {"corrupted", "mislabeled", "clean"}        # the fixture exercised every kind of cell


def test_corrupted_runs_are_shown_as_trained(cifar):
    """A run with --corrupt_ratio: the grids show its corrupted images, replayed from the recorded
    settings and checked against the run's corrupted_mask.npy."""
    from types import SimpleNamespace

    from utils.training.robustness import apply_corruption
    settings = {"corrupt_ratio": 0.2, "corruption": "contrast", "severity": 5, "corrupt_seed": 3}
    images = report.Images("cifar10", cifar["data"])
    raw = images.array.copy()
    expected, mask = apply_corruption(raw, 0.2, "contrast", 5, seed=3)
    images.corrupt_as_trained({"t": SimpleNamespace(info=settings)}, mask)
    assert np.array_equal(images.array, expected)
    assert np.array_equal((images.array != raw).reshape(len(raw), -1).any(1), mask)   # only the flagged ones
    i = int(np.flatnonzero(mask)[0])
    assert np.array_equal(images.thumb(i, 32), expected[i].transpose(1, 2, 0))
    with pytest.raises(report.UserError, match="corrupted_mask.npy"):
        report.Images("cifar10", cifar["data"]).corrupt_as_trained({"t": SimpleNamespace(info=settings)}, ~mask)
    clean = report.Images("cifar10", cifar["data"])                 # no corruption recorded: untouched
    clean.corrupt_as_trained({"t": SimpleNamespace(info={"corrupt_ratio": None})}, None)
    assert np.array_equal(clean.array, raw)


def test_digits_from_published_files_without_info(tmp_path):
    """The published script's pair (data_mask + score, no dataset_score, no info): --dataset digits."""
    from utils.training.data import read_digits
    _, labels = read_digits(True)
    n = len(labels)
    rng = np.random.default_rng(1)
    score = rng.random(n).astype(np.float32)
    mask = np.argsort(score, kind="stable")
    np.save(tmp_path / "data_mask_forgetting_ep3.npy", mask)
    np.save(tmp_path / "score_forgetting_ep3.npy", score[mask])
    report.main([str(tmp_path), "--dataset", "digits", "--rates", "0.3", "--classes", "3", "--per_row", "5"])
    out = tmp_path / "report"
    grids = json.load(open(out / "grids.json"))["forgetting_ep3"]
    assert sorted(grids) == ["0", "1", "2"]
    for c in range(3):
        members = np.flatnonzero(labels == c)
        ranked = members[np.argsort(score[members], kind="stable")]
        assert grids[str(c)] == {"kept": ranked[::-1][:5].tolist(), "pruned": ranked[:5].tolist()}
    counts = json.load(open(out / "class_counts.json"))["forgetting_ep3"]["0.3"]
    assert counts["kept"] == np.bincount(labels[mask[int(0.3 * n):]], minlength=10).tolist()
    assert not (out / "agreement.png").exists() and not (out / "trajectories.json").exists()


def test_imagefolder_opens_only_the_images_it_shows(tmp_path, monkeypatch):
    """Every training image is one colour (and another size): a cell must be exactly that colour."""
    root = tmp_path / "tree"
    colours = {}
    for c, cls in enumerate(["ants", "bees", "wasps"]):
        for j in range(6):
            (root / "train" / cls).mkdir(parents=True, exist_ok=True)
            colour = (40 * c + 5 * j, 200 - 30 * j, 17 * c + 3)
            Image.new("RGB", (20 + j, 12 + 2 * c), colour).save(root / "train" / cls / f"{j}.png")
    images = report.Images("imagefolder", str(root))
    assert images.names == ["ants", "bees", "wasps"] and len(images.labels) == 18
    for i, p in enumerate(images.paths):
        colours[i] = Image.open(p).getpixel((0, 0))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    score = np.random.default_rng(2).random(18)
    order = np.argsort(score, kind="stable")
    cells, canvas = report.grid(images, images.labels, order, [0, 1, 2], 2, 16, {}, str(tmp_path / "g.png"), "t")
    assert len(opened) == 3 * 2 * 2                             # 3 classes x 2 rows x 2 cells, nothing else
    cell, gap = 16 + 2 * report.PAD, (16 + 2 * report.PAD) // 4
    for r, cls in enumerate(images.names):
        members = np.flatnonzero(images.labels == r)
        ranked = members[np.argsort(score[members], kind="stable")]
        assert cells[cls] == {"kept": ranked[::-1][:2].tolist(), "pruned": ranked[:2].tolist()}
        for j, kind in enumerate(("kept", "pruned")):
            for k, i in enumerate(cells[cls][kind]):
                y0, x0 = r * (2 * cell + gap) + j * cell + report.PAD, k * cell + report.PAD
                assert (canvas[y0:y0 + 16, x0:x0 + 16] == colours[i]).all()
    # the whole script on the tree (scores written directly, with an info file naming the data by the
    # relative path the training run was given in tmp_path: found through the run's args.json)
    masks, run = tmp_path / "masks", tmp_path / "runs" / "full"
    masks.mkdir()
    run.mkdir(parents=True)
    json.dump({"args": {"save_path": "./runs/full", "data_path": "tree"}}, open(run / "args.json", "w"))
    np.save(masks / "dataset_score_aum_ep5.npy", score.astype(np.float32))
    json.dump({"method": "aum", "dataset": "imagefolder", "data_path": "tree", "trajectory_len": 5,
               "dynamics_path": None, "dynamics_run": str(run)}, open(masks / "info_aum_ep5.json", "w"))
    assert not os.path.exists("tree")
    report.main([str(masks), "--rates", "0.5", "--thumb", "16"])
    assert sorted(json.load(open(masks / "report" / "grids.json"))["aum_ep5"]) == ["ants", "bees", "wasps"]


# ------------------------------------------------------------------------------ counts, trajectories, pictures
def test_counts_match_bincount_and_the_balanced_budget(cifar):
    counts = json.load(open(cifar["out"] / "class_counts.json"))
    labels = cifar["labels"]
    sizes = np.bincount(labels, minlength=10)
    for tag, s in cifar["scores"].items():
        for r in RATES:
            kept = np.array(sorted(kept_by_sorting(s, r)))
            got = counts[tag][f"{r:g}"]
            assert got["kept"] == np.bincount(labels[kept], minlength=10).tolist()
            budget = np.array(got["balanced"])
            assert budget.sum() == len(kept) and (np.abs(budget - sizes * len(kept) / N) < 1).all()


def test_trajectories_are_the_contributions_the_score_is_made_of(cifar):
    traj = json.load(open(cifar["out"] / "trajectories.json"))
    assert set(traj) == {"win3_ep4_decay0.9", "win3_ep4_decay0.8"}            # TDDS tags only
    c = ref_contributions(cifar["logits"])                                     # (T-1, N)
    for tag, beta in (("win3_ep4_decay0.9", 0.9), ("win3_ep4_decay0.8", 0.8)):
        s = cifar["scores"][tag]
        order = np.argsort(s, kind="stable")
        assert [x["index"] for x in traj[tag]["kept"]] == order[::-1][:5].tolist()
        assert [x["index"] for x in traj[tag]["pruned"]] == order[:5].tolist()
        for kind in ("kept", "pruned"):
            for x in traj[tag][kind]:
                assert np.allclose(x["c"], c[:, x["index"]], rtol=1e-4, atol=1e-6)
                # and they are what the score summarises: S recomputed from them is the score file's
                S = ref_tdds_from_contributions(np.array(x["c"]), K, beta)
                assert S == pytest.approx(s[x["index"]], rel=1e-4, abs=1e-7)


def test_trajectories_from_the_contrib_layout(cifar, tmp_path):
    """train.py --dynamics_format contrib stores <e>_Contrib.npy = c_{e-1} (rows shuffled here too)."""
    from utils.science.scores import Dynamics
    c = ref_contributions(cifar["logits"]).astype(np.float32)                  # (T-1, N)
    rng = np.random.default_rng(5)
    for e in range(T):
        rows = rng.permutation(N)
        np.save(tmp_path / f"{e}_Index.npy", rows)
        if e:
            np.save(tmp_path / f"{e}_Contrib.npy", c[e - 1][rows])
    dyn = Dynamics(str(tmp_path), T)
    assert dyn.fmt == "contrib"
    idx = np.array([7, 0, N - 1, 42])
    assert np.array_equal(report.contributions(dyn, T, idx), c[:, idx])


def test_every_picture_is_a_png_and_the_report_links_them(cifar):
    out = cifar["out"]
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    tags = list(cifar["scores"])
    assert set(pngs) == ({f"{k}_{t}.png" for t in tags for k in ("grid", "classes")} | {"agreement.png"}
                         | {f"trajectory_{t}.png" for t in tags if t.startswith("win")})
    md = (out / "report.md").read_text()
    for f in pngs:
        with Image.open(out / f) as img:
            img.verify()                                      # a complete PNG
        w, h = Image.open(out / f).size
        assert 200 < w < 4000 and 150 < h < 4000, (f, w, h)
        assert f"]({f})" in md, f
    assert "30 mislabeled, 30 corrupted" in md


def test_missing_dynamics_is_a_note_not_an_error(cifar, tmp_path):
    masks = tmp_path / "m"
    masks.mkdir()
    tag = "win3_ep4_decay0.9"
    for f in (f"dataset_score_{tag}.npy", f"info_{tag}.json"):
        (masks / f).write_bytes((cifar["masks"] / f).read_bytes())
    info = json.load(open(masks / f"info_{tag}.json"))
    json.dump({**info, "dynamics_path": str(tmp_path / "moved"), "dynamics_run": None}, open(masks / f"info_{tag}.json", "w"))
    report.main([str(masks), "--rates", "0.5"])
    md = (masks / "report" / "report.md").read_text()
    assert "Trajectories skipped" in md and not (masks / "report" / "trajectories.json").exists()
    # named explicitly, a wrong dynamics folder is the user's mistake
    with pytest.raises(UserError, match="does not exist"):
        report.main([str(masks), "--dynamics_path", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert not (tmp_path / "r2").exists()


# ------------------------------------------------------------------------------ mistakes
def test_one_line_errors_and_nothing_written(tmp_path, cifar):
    (tmp_path / "empty").mkdir()
    assert_user_error(run_script("scripts/report.py", str(tmp_path / "empty"), check=False), "no score files")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "dataset_score_x_ep3.npy", np.zeros(N + 1, np.float32))
    json.dump({"method": "x"}, open(bad / "info_x_ep3.json", "w"))                # a finished scoring
    p = run_script("scripts/report.py", str(bad), "--dataset", "cifar10", "--data_path", cifar["data"], check=False)
    assert_user_error(p, f"{N + 1} samples", f"has {N}")
    for argv, fragment in (([str(bad)], "--dataset"),                                  # nothing says which data
                           ([str(bad), "--dataset", "cifar10", "--data_path", str(tmp_path / "none")], "not found"),
                           ([str(bad), "--dataset", "digits", "--rates", "1.0"], "--rates")):
        with pytest.raises(UserError, match=fragment):
            report.main(argv)
    np.save(bad / "dataset_score_y_ep3.npy", np.zeros(N, np.float32))
    json.dump({"method": "y"}, open(bad / "info_y_ep3.json", "w"))
    with pytest.raises(UserError, match="different lengths"):
        report.main([str(bad), "--dataset", "cifar10", "--data_path", cifar["data"]])
    assert sorted(os.listdir(bad)) == ["dataset_score_x_ep3.npy", "dataset_score_y_ep3.npy", "info_x_ep3.json",
                                       "info_y_ep3.json"]   # no report/
    published = tmp_path / "published"                          # the published pair, a broken mask
    published.mkdir()
    np.save(published / "data_mask_win5_ep10.npy", np.zeros((4, 4), np.int64))
    np.save(published / "score_win5_ep10.npy", np.zeros(4, np.float32))
    with pytest.raises(UserError, match="1-D"):
        report.main([str(published), "--dataset", "digits"])
    assert not (published / "report").exists()
    assert not (tmp_path / "empty" / "report").exists()


def test_only_finished_scorings_are_shown(cifar, tmp_path, capsys):
    """A scoring cut short (arrays, no info_<tag>.json) and one whose arrays changed after it was scored
    are skipped with a note; a folder that a scoring is writing now is refused; with no finished
    scoring left, one line."""
    from utils.protocol.lock import FolderLock
    masks = tmp_path / "m"
    masks.mkdir()
    good, cut, changed = "win3_ep4_decay0.9", "win3_ep4_decay0.8", "el2n_ep4"
    for tag in (good, changed):
        for f in (f"dataset_score_{tag}.npy", f"info_{tag}.json"):
            (masks / f).write_bytes((cifar["masks"] / f).read_bytes())
    (masks / f"dataset_score_{cut}.npy").write_bytes((cifar["masks"] / f"dataset_score_{cut}.npy").read_bytes())
    info = json.load(open(masks / f"info_{changed}.json"))                       # vouches for its arrays
    json.dump({**info, "files": {"dataset_score": f"dataset_score_{changed}.npy"},
               "sha256": {"dataset_score": "0" * 64}}, open(masks / f"info_{changed}.json", "w"))
    report.main([str(masks), "--rates", "0.5"])
    err = capsys.readouterr().err
    assert f"note: {cut}: skipped: no info_{cut}.json: a scoring that did not finish" in err
    assert f"note: {changed}: skipped: dataset_score_{changed}.npy is not the file info_{changed}.json vouches for" in err
    assert set(json.load(open(masks / "report" / "grids.json"))) == {good}
    lock = FolderLock(str(masks), "--mask_path").acquire(note=lambda *_: None)   # a scoring writing the folder
    try:
        p = run_script("scripts/report.py", str(masks), "--out", str(tmp_path / "r2"), check=False)
        assert_user_error(p, "MASK_DIR")
    finally:
        lock.release()
    assert not (tmp_path / "r2").exists()
    os.remove(masks / f"info_{good}.json")
    with pytest.raises(UserError, match="no finished scoring"):
        report.main([str(masks), "--out", str(tmp_path / "r3")])
