"""scripts/summarize.py on a fake sweep tree, and scripts/sweep.sh driven by a stub interpreter.

The stub (PYTHON=<stub>) logs every call and writes the files the real scripts would write, named
as the interfaces say, so the sweep's bookkeeping (T/K per rate, clamping, score reuse, skipping
finished runs, save paths) is checked without training anything.
"""
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "scripts", "sweep.sh")
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
    assert f"{len(FAKE_RUNS) - 1} subset runs (+ 1 full-data run)" in md
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
                  train_seconds=6.0, finished=False)
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
    assert parse_md_table(md, "Compute")["tdds"]["50%"] == "0.550"
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


def test_sweep_syntax():
    subprocess.run(["bash", "-n", SWEEP], check=True)


# ---------------------------------------------------------------- sweep.sh with a stub interpreter
STUB = textwrap.dedent('''\
    """Stands in for `python`: logs the call, writes the outputs the real script would write."""
    import json, os, sys
    script, argv = os.path.basename(sys.argv[1]), sys.argv[2:]
    if script == "summarize.py":
        os.execv(sys.executable, [sys.executable] + sys.argv[1:])
    args, i = {}, 0
    while i < len(argv):
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        args[argv[i]] = argv[i + 1] if has_value else True
        i += 2 if has_value else 1
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps({"script": script, "args": args}) + "\\n")

    def metrics(path, **m):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump(dict(m, dataset=args["--dataset"], arch=args["--arch"]), f)

    if script == "train.py":
        os.makedirs(os.path.join(args["--save_path"], "npy"), exist_ok=True)
        for e in range(int(args["--epochs"])):
            open(os.path.join(args["--save_path"], "npy", f"{e}_Output.npy"), "w").close()
        metrics(args["--save_path"], method="full", subset_rate=0.0, final_acc=80.0)
    elif script == "importance_evaluation.py":
        m, t, k = args["--method"], args["--trajectory_len"], args["--window_size"]
        tag = f"win{k}" if m == "tdds" else m
        os.makedirs(args["--mask_path"], exist_ok=True)
        for kind in ("data_mask", "score"):
            open(os.path.join(args["--mask_path"], f"{kind}_{tag}_ep{t}.npy"), "w").close()
    elif script == "train_subset.py":
        rate = float(args["--subset_rate"])
        name = args["--save_path"].split("/")[-3]  # <method>[-<selection>]
        metrics(args["--save_path"], method=name.split("-")[0], selection=args["--selection"],
                subset_rate=rate, final_acc=80.0 - 20 * rate + int(args["--manualSeed"]) / 10)
    else:
        sys.exit(f"stub: unexpected script {script}")
''')

REPORTED = {0.3: (90, 10), 0.5: (70, 10), 0.7: (60, 20), 0.8: (20, 10), 0.9: (10, 5)}  # spec table


@pytest.fixture
def stub(tmp_path):
    path = tmp_path / "stub_python"
    path.write_text(f"#!{sys.executable}\n" + STUB)
    path.chmod(0o755)
    return str(path)


def sweep(stub, tmp_path, **env):
    """Run sweep.sh with the stub; returns (completed process, list of logged calls)."""
    log = tmp_path / "calls.jsonl"
    if log.exists():
        log.unlink()
    full_env = dict(os.environ, PYTHON=stub, STUB_LOG=str(log), NGPU="0", DATASET="digits",
                    ARCH="resnet20", DATA_PATH=str(tmp_path / "data"), **env)
    p = subprocess.run(["bash", SWEEP], cwd=tmp_path, env=full_env, capture_output=True, text=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p, calls


def of(calls, script):
    return [c["args"] for c in calls if c["script"] == script]


def test_sweep_table_clamp_reuse_and_resume(stub, tmp_path):
    out = str(tmp_path / "sweep")
    rates, epochs, seeds = [0.3, 0.7, 0.8, 0.9], 15, [1, 2]
    env = dict(OUT=out, EPOCHS=str(epochs), RATES="0.3 0.7 0.8 0.9", METHODS="tdds el2n dyn_unc random",
               SELECTIONS="top random", SEEDS="1 2")  # selection random of any method = the one random run
    p, calls = sweep(stub, tmp_path, **env)
    assert p.returncode == 0, p.stderr

    # (T, K) expected per rate: the spec table, T clamped to the recorded epochs, K to T
    tk = {r: (min(REPORTED[r][0], epochs), min(REPORTED[r][1], min(REPORTED[r][0], epochs))) for r in rates}
    notes = [line for line in p.stdout.splitlines() if line.startswith("note:")]
    assert {line.split()[2].rstrip(":") for line in notes} == {"0.3", "0.7", "0.8"}  # T=90, 60, 20 > 15
    assert any("T=90" in line and "T=15" in line for line in notes)
    assert any("rate 0.7" in line and "K=20" in line and "K=15" in line for line in notes)

    # one full-data run with dynamics, seeded with the first seed
    (full,) = of(calls, "train.py")
    assert full["--dynamics"] is True and full["--save_path"] == f"{out}/full"
    assert full["--manualSeed"] == "1" and full["--epochs"] == str(epochs) and full["--ngpu"] == "0"

    # scores: once per (method, T, K); K is irrelevant to el2n
    evals = [(a["--method"], int(a["--trajectory_len"]), int(a["--window_size"])) for a in of(calls, "importance_evaluation.py")]
    assert len(evals) == len(set(evals))
    assert {(t, k) for m, t, k in evals if m == "tdds"} == set(tk.values())
    assert {(t, k) for m, t, k in evals if m == "dyn_unc"} == set(tk.values())
    assert sorted(t for m, t, k in evals if m == "el2n") == sorted({t for t, k in tk.values()})
    assert all(a["--dynamics_path"] == f"{out}/full/npy" and a["--decay"] == "0.9"
               for a in of(calls, "importance_evaluation.py"))

    # subset runs: every (name, rate, seed) once, scored ones pointing at the right T/K files
    subsets = of(calls, "train_subset.py")
    names = ["tdds", "el2n", "dyn_unc", "random"]
    expected = {f"{out}/{n}/r{r}/s{s}" for n in names for r in rates for s in seeds}
    assert sorted(a["--save_path"] for a in subsets) == sorted(expected)
    for a in subsets:
        name, rate = a["--save_path"].split("/")[-3:-1]
        t, k = tk[float(rate[1:])]
        assert a["--subset_rate"] == rate[1:] and a["--epochs"] == str(epochs)
        if name == "random":
            assert a["--selection"] == "random" and "--mask_path" not in a
            continue
        assert a["--selection"] == "top"
        assert os.path.isfile(a["--mask_path"]) and os.path.isfile(a["--score_path"])
        assert a["--mask_path"].endswith(f"_ep{t}.npy")
        if name.startswith("tdds"):
            assert a["--mask_path"] == f"{out}/masks/data_mask_win{k}_ep{t}.npy"
            assert a["--score_path"] == f"{out}/masks/score_win{k}_ep{t}.npy"
        if name.startswith("dyn_unc"):
            assert f"win{k}" in a["--mask_path"]

    # every command printed before it ran; the summary ran at the end
    assert sum(line.startswith("+ ") for line in p.stdout.splitlines()) == len(calls) + 1  # + summarize
    assert "| tdds |" in p.stdout and os.path.isfile(f"{out}/results.md")
    assert os.path.isfile(f"{out}/accuracy_vs_pruning.png")

    # resume: only the run whose metrics.json is gone is redone; no training or scoring otherwise
    os.remove(f"{out}/tdds/r0.8/s2/metrics.json")
    p, calls = sweep(stub, tmp_path, **env)
    assert p.returncode == 0, p.stderr
    assert [c["script"] for c in calls] == ["train_subset.py"]
    assert calls[0]["args"]["--save_path"] == f"{out}/tdds/r0.8/s2"
    assert "skip full-data run" in p.stdout


def test_sweep_given_dynamics_and_overrides(stub, tmp_path):
    dyn = tmp_path / "recorded" / "npy"
    dyn.mkdir(parents=True)
    for e in range(6):
        (dyn / f"{e}_Output.npy").touch()
    out = str(tmp_path / "sweep")
    p, calls = sweep(stub, tmp_path, OUT=out, DYNAMICS=str(dyn), TRAJ="6", WIN="3", RATES="0.50 0.65",
                     METHODS="tdds forgetting", SELECTIONS="top ccs", SEEDS="5 3", TRAIN_FLAGS="--amp",
                     EVAL_FLAGS="--decay 0.8")
    assert p.returncode == 0, p.stderr
    assert not of(calls, "train.py") and "note:" not in p.stdout
    evals = of(calls, "importance_evaluation.py")
    assert sorted((a["--method"], a["--trajectory_len"], a["--window_size"]) for a in evals) == \
        [("forgetting", "6", "3"), ("tdds", "6", "3")]
    assert all(a["--dynamics_path"] == str(dyn) and a["--decay"] == "0.8" for a in evals)
    subsets = of(calls, "train_subset.py")
    assert sorted(a["--save_path"] for a in subsets) == sorted(
        f"{out}/{m}{sel}/r{r}/s{s}" for m in ("tdds", "forgetting") for sel in ("", "-ccs")
        for r in ("0.5", "0.65") for s in (5, 3))
    for a in subsets:
        assert a["--amp"] is True and a["--mask_path"].endswith("_ep6.npy")
        assert a["--selection"] == ("ccs" if "-ccs/" in a["--save_path"] else "top")
        assert a["--manualSeed"] == a["--save_path"].rsplit("/s", 1)[1]


@pytest.mark.parametrize("env, message", [
    (dict(RATES="0.65"), "set TRAJ and WIN"),
    (dict(METHODS="tdds grand"), "grand"),
    (dict(RATES="1.5"), "1.5"),
])
def test_sweep_rejects_bad_settings_before_training(stub, tmp_path, env, message):
    p, calls = sweep(stub, tmp_path, OUT=str(tmp_path / "sweep"), EPOCHS="4", **env)
    assert p.returncode == 2 and message in p.stderr and calls == []


def test_run_labels_keep_variants_apart():
    label = load_summarize().run_label
    base = dict(subset_rate=0.5, method="tdds", selection="top", class_balanced=False, score_weighting=True)
    assert label(base) == "tdds"
    assert label({**base, "score_weighting": False}) == "tdds-unweighted"
    assert label({**base, "selection": "ccs", "class_balanced": True}) == "tdds-ccs-cb"
    assert label({**base, "selection": "random", "score_weighting": False}) == "random"
    assert label({"subset_rate": 0.0, "method": "full"}) == "full"
