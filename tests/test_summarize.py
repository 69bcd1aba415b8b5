"""scripts/summarize.py on fake sweep trees: tables, labels, the cost ledger, the plots."""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARIZE = os.path.join(ROOT, "scripts", "summarize.py")


def load_summarize():
    spec = importlib.util.spec_from_file_location("summarize", SUMMARIZE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_metrics(out, run, **fields):
    folder = os.path.join(out, run)
    os.makedirs(folder, exist_ok=True)
    m = dict(best_acc=fields["final_acc"] + 0.5, epochs=10, num_train_samples=100, train_seconds=1.0,
             seconds=2.0, dataset="digits", arch="resnet20", seed=1, selection="top",
             class_balanced=False)
    m.update(fields)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(m, f)


# run folder -> (metrics fields, expected label)
FAKE_RUNS = {
    "full": (dict(method="full", subset_rate=0.0, final_acc=78.21, seed=42), "full"),
    "tdds/r0.5/s1": (dict(method="tdds", subset_rate=0.5, final_acc=70.1, seed=1), "tdds"),
    "tdds/r0.5/s2": (dict(method="tdds", subset_rate=0.5, final_acc=71.4, seed=2), "tdds"),
    "tdds/r0.9/s1": (dict(method="tdds", subset_rate=0.9, final_acc=54.5), "tdds"),
    "el2n/r0.5/s1": (dict(method="el2n", subset_rate=0.5, final_acc=65.0), "el2n"),
    "random/r0.5/s1": (dict(method="random", selection="random", subset_rate=0.5, final_acc=60.0), "random"),
    "el2n-random/r0.9/s1": (dict(method="el2n", selection="random", subset_rate=0.9, final_acc=47.0), "random"),
    "tdds-ccs/r0.9/s1": (dict(method="tdds", selection="ccs", subset_rate=0.9, final_acc=56.0), "tdds-ccs"),
    "tdds-cb/r0.5/s1": (dict(method="tdds", class_balanced=True, subset_rate=0.5, final_acc=69.0), "tdds-cb"),
}


@pytest.fixture
def fake_sweep(tmp_path):
    out = str(tmp_path / "sweep")
    for run, (fields, _) in FAKE_RUNS.items():
        write_metrics(out, run, **fields)
    os.makedirs(os.path.join(out, "masks"))  # folders without metrics.json are ignored
    return out


def parse_md_table(text, title="Final test accuracy"):
    """{row label: {column header: cell}} of the markdown table under the heading starting with `title`."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    header = rows[0]
    return {r[0]: dict(zip(header[1:], r[1:])) for r in rows[1:]}


def test_summarize_tree(fake_sweep, capsys):
    summarize = load_summarize()
    summarize.main([fake_sweep])
    printed = capsys.readouterr().out

    # csv: one row per run, with its label and accuracy
    with open(os.path.join(fake_sweep, "results.csv")) as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(FAKE_RUNS)
    for run, (fields, label) in FAKE_RUNS.items():
        assert rows[run]["label"] == label
        assert float(rows[run]["final_acc"]) == fields["final_acc"]
        assert float(rows[run]["subset_rate"]) == fields["subset_rate"]

    # md: mean ± sample std over the two tdds seeds, plain values elsewhere, full data as reference
    with open(os.path.join(fake_sweep, "results.md")) as f:
        md = f.read()
    assert printed == md
    a, b = 70.1, 71.4
    mean = (a + b) / 2
    std = math.sqrt(((a - mean) ** 2 + (b - mean) ** 2) / (2 - 1))
    table = parse_md_table(md)
    assert set(table) == {"tdds", "el2n", "random", "tdds-ccs", "tdds-cb"}
    assert table["tdds"]["50%"] == f"{mean:.2f} ± {std:.2f} (n=2)"
    assert table["tdds"]["90%"] == "54.50"
    assert table["el2n"] == {"50%": "65.00", "90%": "–"}
    assert table["random"] == {"50%": "60.00", "90%": "47.00"}
    assert table["tdds-ccs"]["90%"] == "56.00"
    assert table["tdds-cb"]["50%"] == "69.00"
    full_lines = [line for line in md.splitlines() if line.lower().startswith("full data")]
    assert len(full_lines) == 1 and "final 78.21" in full_lines[0] and "best 78.71" in full_lines[0]
    assert f"{len(FAKE_RUNS) - 1} finished subset runs (+ 1 full-data run)" in md
    best = parse_md_table(md, "Best test accuracy")    # write_metrics sets best = final + 0.5
    assert best["tdds"]["90%"] == "55.00" and best["random"]["50%"] == "60.50"

    # png: a real PNG image
    with open(os.path.join(fake_sweep, "accuracy_vs_pruning.png"), "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 100


def test_cost_ledger_adds_up(tmp_path):
    """Each subset run's cost = recorded dynamics epochs + its scoring call + its own training, as
    fractions of one full-data training (the full run's seconds per epoch x its --epochs)."""
    out = str(tmp_path / "sweep")
    # the dynamics run stopped after 3 of 10 epochs, 2 s each: one full training = 20 s
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=40.0, epochs=10, completed_epochs=3,
                  train_seconds=6.0, finished=False, stopped=True)
    write_metrics(out, "tdds/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=30.0, train_seconds=4.0,
                  score_info={"seconds": 1.0, "arch": "resnet20"}, scored_arch="resnet20")
    write_metrics(out, "random/r0.5/s1", method="random", selection="random", subset_rate=0.5, final_acc=29.0,
                  train_seconds=5.0)
    summarize = load_summarize()
    summarize.summarize(out)
    with open(os.path.join(out, "results.csv")) as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    t, r = rows["tdds/r0.5/s1"], rows["random/r0.5/s1"]
    assert float(t["cost_dynamics"]) == pytest.approx(6 / 20) and float(t["cost_scoring"]) == pytest.approx(1 / 20)
    assert float(t["cost_subset"]) == pytest.approx(4 / 20)
    assert float(t["cost_total"]) == pytest.approx((6 + 1 + 4) / 20)
    assert float(r["cost_dynamics"]) == 0 and float(r["cost_total"]) == pytest.approx(5 / 20)
    md = open(os.path.join(out, "results.md")).read()
    assert parse_md_table(md, "Compute (seconds)")["tdds"]["50%"] == "0.550"
    assert "after 3 of 10 epochs" in md
    assert os.path.getsize(os.path.join(out, "accuracy_vs_cost.png")) > 1000


def test_kept_flagged_fractions_table(tmp_path):
    out = str(tmp_path / "sweep")
    write_metrics(out, "tdds/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=30.0, kept_mislabeled_fraction=0.3)
    write_metrics(out, "tdds/r0.5/s2", method="tdds", subset_rate=0.5, final_acc=31.0, kept_mislabeled_fraction=0.1)
    write_metrics(out, "el2n-cnn/r0.5/s1", method="el2n", subset_rate=0.5, final_acc=31.0, arch="resnet32",
                  scored_arch="resnet20", kept_mislabeled_fraction=0.5)
    md = load_summarize().summarize(out)
    table = parse_md_table(md, "Fraction of the kept set that is mislabeled")
    assert table["tdds"]["50%"] == f"0.200 ± {math.sqrt(0.02):.3f} (n=2)"
    assert table["el2n [resnet20→resnet32]"]["50%"] == "0.500"     # cross-architecture rows apart
    assert os.path.getsize(os.path.join(out, "kept_flagged_vs_pruning.png")) > 1000


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_summarize_no_runs_is_one_line_error(tmp_path, make):
    out = tmp_path / "sweep"
    if make == "empty":
        (out / "masks").mkdir(parents=True)
    p = subprocess.run([sys.executable, SUMMARIZE, str(out)], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(out) in lines[0]
    assert not os.path.exists(out / "results.csv")


def test_run_labels_keep_variants_apart():
    label = load_summarize().run_label
    base = dict(subset_rate=0.5, method="tdds", selection="top", class_balanced=False, score_weighting=True)
    assert label(base) == "tdds"
    assert label({**base, "score_weighting": False}) == "tdds-unweighted"
    assert label({**base, "selection": "ccs", "class_balanced": True}) == "tdds-ccs-cb"
    assert label({**base, "selection": "random", "score_weighting": False}) == "random"
    assert label({"subset_rate": 0.0, "method": "full"}) == "full"


def test_runs_differing_in_more_than_the_seed_are_not_averaged(tmp_path):
    summarize = load_summarize()
    out = str(tmp_path / "sweep")
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=90.0, epochs=4, train_seconds=4.0,
                  completed_epochs=4)
    write_metrics(out, "full2", method="full", subset_rate=0.0, final_acc=91.0, epochs=4, train_seconds=8.0,
                  completed_epochs=4)
    info = {"tag": "win3_ep4", "dynamics_run": os.path.join(out, "full2"), "seconds": 0.4}
    write_metrics(out, "a/s1", method="tdds", subset_rate=0.5, final_acc=60.0, seed=1, score_info=info)
    write_metrics(out, "a/s2", method="tdds", subset_rate=0.5, final_acc=62.0, seed=2, score_info=info)
    write_metrics(out, "b/s1", method="tdds", subset_rate=0.5, final_acc=30.0, seed=1, epochs=2,
                  score_info={**info, "tag": "win3_ep3"})
    runs = {m["run"]: m for m in summarize.collect_runs(out)}
    assert runs["a/s1"]["label"] == runs["a/s2"]["label"] == "tdds (epochs=10, score=win3_ep4)"
    assert runs["b/s1"]["label"] == "tdds (epochs=2, score=win3_ep3)"
    stats = summarize.aggregate(list(runs.values()))
    assert stats[("tdds (epochs=10, score=win3_ep4)", 0.5)][:3] == (61.0, pytest.approx(2 ** 0.5), 2)
    # the dynamics charged are those of the run that was scored (full2: 8 s of 4 epochs = 1.0), not full's
    a = runs["a/s1"]
    assert a["cost_dynamics"] == pytest.approx(1.0) and a["cost_scoring"] == pytest.approx(0.4 / 8.0)


def write_run(out, run, fp, state="finished", **fields):
    """A run as train.py / train_subset.py leave it: metrics.json and folder.json with its fingerprint."""
    fields.setdefault("finished", state == "finished")
    write_metrics(out, run, **fields)
    with open(os.path.join(out, run, "folder.json"), "w") as f:
        json.dump({"state": state, "fingerprint": fp, "completed_epochs": fields.get("completed_epochs")}, f)


def test_seeds_only_when_fingerprints_differ_in_the_seed_alone(tmp_path):
    """Runs of one method and rate that differ in a setting (here the weight decay) are never averaged:
    each label names the differing setting, at every rate; unfinished runs are listed, not averaged;
    the plan's runs without results are named first; each full-data reference says its epochs."""
    out = str(tmp_path / "sweep")
    base = {"--arch": "resnet20", "--epochs": 10, "--decay": 0.0005, "--subset_rate": 0.5, "--label_noise": 0.0,
            "--noise_type": "symmetric", "content of --mask_path": None}
    def fp(**kw):
        return {**base, **{f"--{k}": v for k, v in kw.items()}}
    random = dict(method="random", selection="random")
    write_run(out, "random/r0.5/s1", fp(manualSeed=1), subset_rate=0.5, final_acc=60.0, **random)
    write_run(out, "random/r0.5/s2", fp(manualSeed=2), subset_rate=0.5, final_acc=62.0, **random)
    # the noise type has no effect at --label_noise 0: not a difference
    write_run(out, "random/r0.5/s3", fp(manualSeed=3, noise_type="asymmetric"), subset_rate=0.5, final_acc=64.0,
              **random)
    write_run(out, "random-wd/r0.5/s1", fp(manualSeed=1, decay=0.001), subset_rate=0.5, final_acc=50.0, **random)
    write_run(out, "random/r0.9/s1", fp(manualSeed=1, subset_rate=0.9), subset_rate=0.9, final_acc=40.0, **random)
    # unfinished: interrupted after 3 of 10 epochs, and a failed one; neither is averaged
    write_run(out, "random/r0.9/s2", fp(manualSeed=2, subset_rate=0.9), state="interrupted", subset_rate=0.9,
              final_acc=10.0, completed_epochs=3, **random)
    write_run(out, "random/r0.9/s3", fp(manualSeed=3, subset_rate=0.9), state="failed", subset_rate=0.9,
              final_acc=12.0, completed_epochs=5, **random)
    # two full-data runs: one finished, one stopped at T for its dynamics (other --epochs)
    full = dict(method="full", subset_rate=0.0)
    write_run(out, "full", fp(manualSeed=1, subset_rate=None), final_acc=80.0, **full)
    write_run(out, "full-T", fp(manualSeed=1, subset_rate=None, epochs=200), state="stopped", final_acc=30.0,
              completed_epochs=4, stopped=True, finished=False, **{**full, "epochs": 200})
    with open(os.path.join(out, "plan.txt"), "w") as f:
        # the plan of the study when it lived elsewhere (sweep.sh writes absolute paths and its OUT)
        f.write("# OUT=/old/place\n# stage 2\n" + "".join(
            f"python train_subset.py --save_path /old/place/random/r0.9/s{s} --resume\n" for s in (1, 2, 4)))
    md = load_summarize().summarize(out)
    table = parse_md_table(md)
    a, b, c = 60.0, 62.0, 64.0
    std = math.sqrt(((a - 62) ** 2 + (b - 62) ** 2 + (c - 62) ** 2) / 2)
    assert table == {"random (decay=0.0005)": {"50%": f"62.00 ± {std:.2f} (n=3)", "90%": "40.00"},
                     "random (decay=0.001)": {"50%": "50.00", "90%": "–"}}
    unfinished = md.split("## Unfinished runs", 1)[1].split("\n## ", 1)[0]
    assert "| random/r0.9/s2 | random | interrupted | 3 of 10 | 10.00 |" in unfinished
    assert "| random/r0.9/s3 | random | failed | 5 of 10 | 12.00 |" in unfinished
    assert md.index("## Missing runs") < md.index("## Unfinished runs") < md.index("## Final")
    missing = md.split("## Missing runs", 1)[1].split("\n## ", 1)[0]
    assert "- random/r0.9/s4" in missing and "s1" not in missing and "s2" not in missing   # s2: unfinished
    refs = [l for l in md.splitlines() if l.startswith("Full data")]
    assert refs == ["Full data (reference, epochs=10): final 80.00, best 80.50 after all 10 epochs (finished)",
                    "Full data (reference, epochs=200): final 30.00, best 30.50 after 4 of 200 epochs (stopped at T "
                    "by --stop_epoch to record the dynamics: not a fully trained model)"]
    with open(os.path.join(out, "results.csv")) as f:
        states = {r["run"]: r["state"] for r in csv.DictReader(f)}
    assert states["random/r0.9/s2"] == "interrupted" and states["full-T"] == "stopped"


def test_a_run_whose_writer_is_alive_is_running(tmp_path):
    """folder.json says running: while its lock is held the run is "running", once free "interrupted"."""
    sys.path.insert(0, ROOT)
    from utils.protocol.lock import FolderLock
    out = str(tmp_path / "sweep")
    write_run(out, "tdds/r0.5/s1", {"--manualSeed": 1}, state="running", method="tdds", subset_rate=0.5,
              final_acc=20.0, completed_epochs=2)
    lock = FolderLock(os.path.join(out, "tdds/r0.5/s1"), "--save_path").acquire(note=lambda *_: None)
    try:
        assert "| tdds/r0.5/s1 | tdds | running | 2 of 10 |" in load_summarize().summarize(out)
    finally:
        lock.release()
    assert "| tdds/r0.5/s1 | tdds | interrupted | 2 of 10 |" in load_summarize().summarize(out)


def test_runs_on_other_files_of_one_tag_never_share_a_cell(tmp_path):
    """Two scorings of one tag (the second made with --overwrite): a run trained on the replaced one is
    labelled so, and two runs whose mask contents differ are told apart even when the tag is the same."""
    out = tmp_path / "sweep"
    masks = out / "masks"
    masks.mkdir(parents=True)
    json.dump({"tag": "win5_ep10", "sha256": {"mask": "b" * 64}}, open(masks / "info_win5_ep10.json", "w"))
    def tdds(run, mask_sha, seed, acc, mask_path=str(masks / "data_mask_win5_ep10.npy")):
        write_run(str(out), run, {"--manualSeed": seed, "content of --mask_path": mask_sha}, method="tdds",
                  subset_rate=0.5, final_acc=acc, seed=seed, mask_path=mask_path,
                  score_info={"tag": "win5_ep10", "sha256": {"mask": mask_sha}})
    tdds("tdds/r0.5/s1", "a" * 64, 1, 60.0)          # trained before the scoring was replaced
    tdds("tdds/r0.5/s2", "b" * 64, 2, 70.0)          # on the current one
    tdds("tdds/r0.5/s3", "b" * 64, 3, 72.0)
    table = parse_md_table(load_summarize().summarize(str(out)))
    assert table == {"tdds": {"50%": "71.00 ± 1.41 (n=2)"}, "tdds (scores since replaced)": {"50%": "60.00"}}
    # the same tag, other contents, no info to tell which is current (e.g. folders moved): still apart
    os.remove(masks / "info_win5_ep10.json")
    load_summarize().summarize(str(out))
    labels = {r["run"]: r["label"] for r in csv.DictReader(open(out / "results.csv"))}
    assert labels["tdds/r0.5/s2"] == labels["tdds/r0.5/s3"] != labels["tdds/r0.5/s1"]
    assert labels["tdds/r0.5/s1"].startswith("tdds (scores=win5_ep10) [settings ")


def history(samples, seconds=1.0):
    """metrics.json history rows as the engine writes them: per epoch the samples trained."""
    return [{"epoch": e, "samples": n, "train_seconds": seconds, "test_acc": 50.0, "train_loss": 1.0} for e, n in
            enumerate(samples)]


def test_static_and_dynamic_runs_on_one_compute_axis(tmp_path):
    """Work = samples forwarded and backpropagated / (E N): a static run pays the T epochs of dynamics its
    scores used plus its subset run, a dynamic run (InfoBatch, RS2) the samples it trained; each row
    adds up; seconds are thread-seconds where the sweep recorded the threads."""
    out = str(tmp_path / "sweep")
    N, E = 100, 10
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=80.0, epochs=E, num_train_samples=N,
                  completed_epochs=3, finished=False, stopped=True, train_seconds=6.0, history=history([N] * 3, 2.0))
    info = {"method": "tdds", "trajectory_len": 3, "num_samples": N, "seconds": 1.0, "tag": "win3_ep3"}
    for seed, acc in ((1, 70.0), (2, 72.0)):
        write_metrics(out, f"tdds/r0.5/s{seed}", method="tdds", subset_rate=0.5, final_acc=acc, seed=seed,
                      num_train_samples=50, full_train_samples=N, score_info=info, train_seconds=5.0,
                      history=history([50] * E, 0.5))
    write_metrics(out, "random/r0.5/s1", method="random", selection="random", subset_rate=0.5, final_acc=60.0,
                  num_train_samples=50, full_train_samples=N, train_seconds=5.0, history=history([50] * E, 0.5))
    infobatch = [100] + [70] * 7 + [100, 100]            # pruned epochs, then the full tail
    # as train.py --dynamic records them: N in full_train_samples (RS2's num_train_samples: its epoch size)
    write_metrics(out, "infobatch/r0.5/s1", method="infobatch", selection="dynamic", subset_rate=0.5,
                  dynamic_ratio=0.5, final_acc=78.0, num_train_samples=N, full_train_samples=N, train_seconds=8.0,
                  history=history(infobatch, 0.8))
    write_metrics(out, "rs2/r0.5/s1", method="rs2", selection="dynamic", subset_rate=0.0, dynamic_ratio=0.5,
                  final_acc=75.0, num_train_samples=50, full_train_samples=N, train_seconds=5.0,
                  history=history([50] * E, 0.5))
    with open(os.path.join(out, "threads.json"), "w") as f:   # the full run alone (2 threads), the rest side by side
        json.dump({"full": 2, "tdds/r0.5/s1": 1, "tdds/r0.5/s2": 1, "random/r0.5/s1": 1, "infobatch/r0.5/s1": 1,
                   "rs2/r0.5/s1": 1}, f)
    summarize = load_summarize()
    md = summarize.summarize(out)
    rows = {r["run"]: r for r in csv.DictReader(open(os.path.join(out, "results.csv")))}
    expected = {"tdds/r0.5/s1": (3 / E, 500 / 1000), "random/r0.5/s1": (0.0, 0.5),
                "infobatch/r0.5/s1": (0.0, sum(infobatch) / 1000), "rs2/r0.5/s1": (0.0, 0.5)}
    for run, (dyn, sub) in expected.items():
        r = rows[run]
        assert float(r["work_dynamics"]) == pytest.approx(dyn) and float(r["work_subset"]) == pytest.approx(sub)
        assert float(r["work_total"]) == pytest.approx(float(r["work_dynamics"]) + float(r["work_subset"]) +
                                                       float(r["work_teacher"]))
    assert float(rows["full"]["work_total"]) == pytest.approx(0.3)
    assert rows["infobatch/r0.5/s1"]["dynamic_ratio"] == "0.5"
    # seconds: one full training = 2 s/epoch x 10 epochs x 2 threads = 40 thread-seconds; the dynamics (6 s)
    # and the scoring (1 s) ran alone with the full run's 2 threads, the subset runs with 1 thread each
    assert float(rows["random/r0.5/s1"]["cost_total"]) == pytest.approx(5.0 / 40)
    assert float(rows["infobatch/r0.5/s1"]["cost_total"]) == pytest.approx(8.0 / 40)
    assert float(rows["infobatch/r0.5/s1"]["cost_dynamics"]) == 0.0
    assert float(rows["tdds/r0.5/s1"]["cost_total"]) == pytest.approx((2 * 6.0 + 2 * 1.0 + 5.0) / 40)
    work = parse_md_table(md, "Compute (work)")
    assert work == {"tdds": {"50%": "0.800 ± 0.000 (n=2)"}, "random": {"50%": "0.500"},
                    "infobatch": {"50%": f"{sum(infobatch) / 1000:.3f}"}, "rs2": {"50%": "0.500"}}
    assert set(parse_md_table(md)) == {"tdds", "random", "infobatch", "rs2"}    # rows beside the static methods
    assert "thread-normalized" in md and "| infobatch/r0.5/s1 | 0.000 | 0.790 | 0.000 | 0.790 |" in md
    # the plot: one point per (method, rate); the front: rs2 (0.5, 75) and infobatch (0.79, 78); the full run
    # stopped at T is no full-data training (no star); the legend beside the axes
    fig, ax, front = summarize.cost_figure(summarize.collect_runs(out))
    assert front == [(0.5, 75.0), (pytest.approx(0.79), 78.0)]
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1                                                       # never over a point
    assert os.path.getsize(os.path.join(out, "accuracy_vs_cost.png")) > 1000


def test_threads_in_stretches_and_what_is_missing(tmp_path):
    """Issue 33.1: a run trained at 2 threads for its first 2 epochs and at 1 for the other 2 (an interrupted
    sweep resumed with other JOBS) counts 2 x 3 s + 1 x 3 s = 9 thread-seconds; where threads.json exists but
    misses runs, the note names them instead of saying there is no threads.json."""
    out = str(tmp_path / "sweep")
    E = 4
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=80.0, epochs=E, completed_epochs=E,
                  train_seconds=8.0, history=history([100] * E, 2.0))
    for run in ("random/r0.5/s1", "random/r0.5/s2"):
        write_metrics(out, run, method="random", selection="random", subset_rate=0.5, final_acc=60.0, epochs=E,
                      num_train_samples=50, full_train_samples=100, completed_epochs=E, train_seconds=6.0,
                      history=history([50] * E, 1.5))
    with open(os.path.join(out, "threads.json"), "w") as f:
        json.dump({"full": 1, "random/r0.5/s1": [[0, 2], [2, 1]]}, f)
    md = load_summarize().summarize(out)
    rows = {r["run"]: r for r in csv.DictReader(open(os.path.join(out, "results.csv")))}
    assert float(rows["random/r0.5/s1"]["threads"]) == 1.5                        # (2 x 3 s + 1 x 3 s) / 6 s
    assert float(rows["random/r0.5/s1"]["cost_total"]) == pytest.approx(6.0 * 1.5 / 8.0)
    assert rows["random/r0.5/s2"]["threads"] == ""
    assert "not thread-normalized: threads.json does not record the threads of 1 run(s) (random/r0.5/s2)" in md
    assert "no threads.json" not in md
    os.remove(os.path.join(out, "threads.json"))
    assert "not thread-normalized (no threads.json)" in load_summarize().summarize(out)


def test_no_label_or_legend_hides_another(tmp_path):
    """Issue 33.8: in accuracy_vs_cost.png the rate labels of points at the same work and accuracy do not
    overlap (they stack, in their method's colour); in accuracy_vs_pruning.png the legend sits beside the
    axes, where it hides no point (it sat in the lower left, over a low point at the smallest rate)."""
    out = str(tmp_path / "sweep")
    E, N = 4, 100
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=90.0, epochs=E, num_train_samples=N,
                  completed_epochs=E, history=history([N] * E))
    for method in ("el2n", "forgetting", "aum"):            # the same work and the same accuracy
        for rate in (0.5, 0.8):
            write_metrics(out, f"{method}/r{rate}/s1", method=method, subset_rate=rate, final_acc=12.0 + rate,
                          epochs=E, num_train_samples=50, full_train_samples=N, history=history([50] * E),
                          score_info={"method": method, "trajectory_len": 2, "num_samples": N})
    summarize = load_summarize()
    runs = summarize.collect_runs(out)
    fig, ax, _ = summarize.cost_figure(runs)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 6
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    fig, ax = summarize.pruning_figure(runs)
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def test_pareto_front():
    front = load_summarize().pareto_front
    points = [(0.5, 60.0), (0.8, 71.0), (0.73, 78.0), (0.5, 75.0), (1.0, 80.0), (1.2, 80.0), (0.9, 77.0)]   # by hand
    assert front(points) == [(0.5, 75.0), (0.73, 78.0), (1.0, 80.0)]
    assert front([(1.0, 1.0)]) == [(1.0, 1.0)]


def test_summary_without_a_full_data_run_says_why(tmp_path):
    """Scores from dynamics recorded elsewhere (sweep.sh DYNAMICS=): the summary says why there is no
    reference line and no seconds ledger; the work is counted all the same."""
    out = str(tmp_path / "sweep")
    info = {"method": "el2n", "trajectory_len": 4, "num_samples": 100, "dynamics_run": "/elsewhere/full"}
    write_metrics(out, "el2n/r0.5/s1", method="el2n", subset_rate=0.5, final_acc=60.0, full_train_samples=100,
                  num_train_samples=50, score_info=info, history=history([50] * 10))
    md = load_summarize().summarize(out)
    assert "No full-data run in this folder (the scores came from dynamics recorded elsewhere: /elsewhere/full" in md
    assert "no compute in seconds" in md and "Compute (seconds)" not in md
    assert parse_md_table(md, "Compute (work)")["el2n"] == {"50%": f"{4 / 10 + 0.5:.3f}"}
    assert os.path.exists(os.path.join(out, "accuracy_vs_cost.png"))


def test_score_weighting_warning(tmp_path):
    """A score-weighted method far below random at the same rate: the summary names u and the way out."""
    out = str(tmp_path / "sweep")
    write_metrics(out, "random/r0.5/s1", method="random", selection="random", subset_rate=0.5, final_acc=92.1)
    write_metrics(out, "random/r0.9/s1", method="random", selection="random", subset_rate=0.9, final_acc=60.0)
    write_metrics(out, "tdds/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=27.8, score_weighting=True,
                  mean_weight=0.077)
    write_metrics(out, "tdds/r0.9/s1", method="tdds", subset_rate=0.9, final_acc=57.0, score_weighting=True,
                  mean_weight=0.2)                                           # within 5 points: no warning
    write_metrics(out, "el2n-unweighted/r0.5/s1", method="el2n", subset_rate=0.5, final_acc=20.0,
                  score_weighting=False)                                     # unweighted: not this cause
    md = load_summarize().summarize(out)
    warning = md.split("## Warning: score weighting", 1)[1].split("\n## ", 1)[0]
    items = [l for l in warning.splitlines() if l.startswith("- ")]
    assert len(items) == 1 and items[0].startswith("- tdds at 50%: 27.80 against random's 92.10")
    assert "u = 0.077" in items[0] and "--no_score_weighting" in items[0]


def test_missing_runs_of_a_tagged_variant(tmp_path):
    out = tmp_path / "sweep"
    write_metrics(str(out), "random/r0.5/s1", method="random", selection="random", subset_rate=0.5, final_acc=60.0)
    (out / "plan.txt").write_text(f"# OUT={out}\n# stage 2\npython t.py --save_path {out}/random/r0.5/s1\n")
    (out / "plan-bs64.txt").write_text(f"# OUT={out}\n# stage 2\npython t.py --save_path {out}/random-bs64/r0.5/s1\n")
    md = load_summarize().summarize(str(out))
    missing = md.split("## Missing runs", 1)[1].split("\n## ", 1)[0]
    assert "- random-bs64/r0.5/s1" in missing and "- random/r0.5/s1" not in missing


def test_a_variant_is_shown_beside_the_runs_it_shares(tmp_path):
    """Issue 33.3: the runs a TAG variant did not plan (its flags act on nothing there: plan-<TAG>.txt lists
    them as "# shared: VARIANT STUDY") are shown beside the variant's own runs, with the study's values;
    a shared run the study lacks is missing."""
    out = str(tmp_path / "sweep")
    for run, fields in {"tdds/r0.5/s1": dict(method="tdds", final_acc=70.0),
                        "random/r0.5/s1": dict(method="random", selection="random", final_acc=60.0),
                        "rs2/r0.5/s1": dict(method="rs2", selection="dynamic", dynamic_ratio=0.5, final_acc=65.0),
                        "tdds-unweighted/r0.5/s1": dict(method="tdds", score_weighting=False, final_acc=72.0)}.items():
        write_metrics(out, run, subset_rate=0.5, **fields)
    moved = "/elsewhere/out"   # the plan was written for another OUT: its paths move along
    with open(os.path.join(out, "plan-unweighted.txt"), "w") as f:
        f.write(f"# OUT={moved}\n# shared: {moved}/random-unweighted/r0.5/s1 {moved}/random/r0.5/s1\n"
                f"# shared: {moved}/rs2-unweighted/r0.5/s1 {moved}/rs2/r0.5/s1\n"
                f"# shared: {moved}/rs2-unweighted/r0.5/s2 {moved}/rs2/r0.5/s2\n# stage 2\n"
                f"python train_subset.py --save_path {moved}/tdds-unweighted/r0.5/s1 --resume\n")
    md = load_summarize().summarize(out)
    variant = parse_md_table(md, "Variant unweighted")
    assert variant == {"tdds-unweighted": {"50%": "72.00"}, "random (shared)": {"50%": "60.00"},
                       "rs2 (shared)": {"50%": "65.00"}}
    assert "Its flags act on nothing in 3 run(s) of the study (random, rs2)" in md
    assert "- rs2/r0.5/s2" in md.split("## Missing runs")[1].split("##")[0]
    assert set(parse_md_table(md)) == {"tdds", "random", "rs2", "tdds-unweighted"}   # the main table as before


def test_seconds_charge_the_epochs_the_scores_used(tmp_path):
    """A full-data run trained to the end (FULL_ACC=1) charges a static method in seconds only the
    epochs 0 .. T-1 its scores used, as work does; a teacher that is that run pays the rest."""
    out = str(tmp_path / "sweep")
    E, seconds = 4, [1.0, 2.0, 3.0, 6.0]                   # one full training: 12 s
    write_metrics(out, "full", method="full", subset_rate=0.0, final_acc=90.0, epochs=E, train_seconds=12.0,
                  completed_epochs=E, num_train_samples=100, history=[dict(h, train_seconds=s) for h, s in
                                                                      zip(history([100] * E), seconds)])
    info = {"method": "tdds", "trajectory_len": 2, "num_samples": 100, "seconds": 0.6, "tag": "win3_ep2",
            "dynamics_run": os.path.join(out, "full")}
    write_metrics(out, "tdds/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=80.0, num_train_samples=50,
                  full_train_samples=100, epochs=E, score_info=info, train_seconds=3.0, history=history([50] * E))
    write_metrics(out, "tdds-kd/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=81.0, num_train_samples=50,
                  full_train_samples=100, epochs=E, score_info=info, train_seconds=3.0, history=history([50] * E),
                  teacher=os.path.join(out, "full", "model_best.pth.tar"), teacher_run=os.path.join(out, "full"),
                  teacher_train_seconds=12.0)
    runs = {m["run"]: m for m in load_summarize().collect_runs(out)}
    t, kd = runs["tdds/r0.5/s1"], runs["tdds-kd/r0.5/s1"]
    assert t["cost_dynamics"] == pytest.approx(3.0 / 12) and t["work_dynamics"] == pytest.approx(2 / E)
    assert t["cost_total"] == pytest.approx((3.0 + 0.6 + 3.0) / 12)
    assert kd["cost_dynamics"] == pytest.approx(3.0 / 12) and kd["cost_teacher"] == pytest.approx(9.0 / 12)
