"""The sweep and its summary, for real, on the bundled digits on CPU, as small as it can be: the
dynamics run stopped at T, TDDS scores, a TDDS and a random subset run, the table and the plots; the
commands it ran are exactly its plan's; the sweep with another EPOCHS is refused and changes nothing;
the same sweep with two jobs at once, in a copy without the two subset runs, finds stage 1 done
without rewriting a file of it, trains the two side by side and gives the same metrics, exactly.
(The executor's other behaviour is tested with a stub interpreter in tests/test_plan.py.)"""
import csv
import hashlib
import json
import os
import shlex
import shutil
import sys

import numpy as np
import pytest

from conftest import run_script

ENV = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": "4", "TRAJ": "3", "WIN": "3", "RATES": "0.8",
       "METHODS": "tdds random", "NGPU": "0", "BATCH": "64", "FULL_BATCH": "64"}

# stands in for `python`: records each command line, then runs it with the real interpreter
RECORDER = """import json, os, sys
if os.path.basename(sys.argv[1]) != "sweep.py":   # the sweep itself (sweep.sh runs it with PYTHON)
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


def study_files(out):
    """{file: (sha256, mtime)} of every run and scoring file (not the sweep's logs, summary and report)."""
    return {str(f.relative_to(out)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in out.rglob("*") if f.is_file() and f.parent != out and f.suffix != ".log"
            and f.parent.name not in ("report", "plans")}


def metrics(out):
    return {str(m.parent.relative_to(out)): json.loads(m.read_text()) for m in out.rglob("metrics.json")}


def plan_commands(path):
    """[(stage, argv after the interpreter)] of a plan file, in order."""
    stage, out = None, []
    for line in path.read_text().splitlines():
        if line.startswith("# stage "):
            stage = int(line.split()[2])
        elif line and not line.startswith("#"):
            out.append((stage, shlex.split(line)[1:]))
    return out


@pytest.mark.slow
def test_sweep_end_to_end_on_digits(tmp_path):
    out = tmp_path / "sweep"
    recorder = tmp_path / "python"
    recorder.write_text(f"#!{sys.executable}\n" + RECORDER)
    recorder.chmod(0o755)
    # the sequential pass uses the thread count that each of the two parallel jobs gets below (cores / 2):
    # CPU results depend on the number of threads, so only like can be compared with like
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    env = {**ENV, "OUT": str(out), "PYTHON": str(recorder), "RECORD": str(tmp_path / "ran.jsonl"),
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    run_script("bash", "scripts/sweep.sh", env={**env, "PLAN": str(tmp_path / "study.plan")})
    p = run_script("bash", "scripts/sweep.sh", env=env)
    assert "dynamics: 3 of 4 epochs" in p.stdout

    # the sequential sweep ran exactly its plan: the same commands (flags, save folders), in order
    ran = [json.loads(l) for l in (tmp_path / "ran.jsonl").read_text().splitlines()]
    planned = plan_commands(tmp_path / "study.plan")
    assert ran == [argv for _, argv in planned]
    assert [s for s, _ in planned] == [1, 1, 2, 2, 3, 3]   # full run, TDDS; 2 subset runs; summary, report
    assert (out / "plan.txt").read_text() == (tmp_path / "study.plan").read_text()
    for _, argv in planned:
        if "--save_path" in argv:   # what each run recorded as its own command line
            save = argv[argv.index("--save_path") + 1]
            assert json.loads(open(f"{save}/args.json").read())["args"]["save_path"] == save

    assert (out / "masks" / "data_mask_win3_ep3.npy").exists() and (out / "masks" / "info_win3_ep3.json").exists()
    runs = metrics(out)
    assert runs["full"]["completed_epochs"] == 3 and runs["full"]["stopped"] and not runs["full"]["finished"]
    n_kept = 1437 - int(0.8 * 1437)
    for run, m in runs.items():
        if run != "full":
            assert m["finished"] and m["num_train_samples"] == n_kept and m["subset_rate"] == 0.8, run
            assert len(np.load(out / run / "subset_indices.npy")) == n_kept
            assert "done:" in (out / f"{run}.log").read_text()          # each run's output, beside it
    assert {r.split("/")[0] for r in runs} == {"full", "tdds", "random"}
    assert json.loads((out / "threads.json").read_text()) == {r: int(threads) for r in runs}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(runs) and all(r["cost_total"] for r in rows)
    table = (out / "results.md").read_text()
    for label in ("tdds", "random"):
        assert f"| {label} " in table, table
    assert (out / "accuracy_vs_pruning.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "accuracy_vs_cost.png").read_bytes()[:4] == b"\x89PNG"

    # issue 33.6: the finished study run again answers from the folders' records: no process for the
    # full-data run, the scoring or a subset run, and the summary and report, up to date, are not redone
    (tmp_path / "ran.jsonl").unlink()
    before = study_files(out)
    p = run_script("bash", "scripts/sweep.sh", env=env)
    assert not (tmp_path / "ran.jsonl").exists(), (tmp_path / "ran.jsonl").read_text()   # not one command started
    assert p.stdout.count("; from its records, no process started") == 4, p.stdout     # full, TDDS, 2 subset runs
    assert "2 already done (nothing rewritten; 2 of them from their records" in p.stdout
    assert p.stdout.count("up to date: nothing it reads changed") == 2
    assert study_files(out) == before

    # another EPOCHS: the full-data run is refused (listing the difference), the sweep stops, nothing changes
    before = study_files(out)
    p = run_script("bash", "scripts/sweep.sh", env={**env, "EPOCHS": "5"}, check=False)
    assert p.returncode == 1 and "1 command(s) refused" in p.stderr and "--epochs 4 (now 5)" in p.stderr, p.stderr
    assert "OVERWRITE=1" in p.stderr
    assert study_files(out) == before

    # the same sweep again with two jobs at once (cores split), in a copy of the study without the
    # subset runs: every command runs; the full-data run (stopped at T) and the scores are found done
    # and not one of their files is rewritten; the two subset runs train side by side and give the
    # same metrics as the sequential sweep (the same thread count), exactly
    two = tmp_path / "two"
    shutil.copytree(out, two)
    for run in ("tdds", "random"):
        shutil.rmtree(two / run)
    kept = study_files(two)
    p = run_script("bash", "scripts/sweep.sh", env=ENV | {"OUT": str(two), "JOBS": "2", "PYTHON": sys.executable})
    lines = p.stdout.splitlines()
    assert "already stopped after epoch 3" in p.stdout and "already scored" in p.stdout   # full, scoring
    assert "stage 2: 2 runs: 2 trained, 0 already done (nothing rewritten), 0 refused, 0 failed" in p.stdout
    after = study_files(two)
    assert {f: after[f] for f in kept} == kept                    # sha256 and mtime of every file that was there
    launched = [l for l in lines if l.startswith("+ ") and "train_subset.py" in l]
    assert len(launched) == 2 and all(f"OMP_NUM_THREADS={threads}" in l for l in launched), launched
    parallel = metrics(two)
    assert set(parallel) == set(runs)
    for run in ("tdds/r0.8/s42", "random/r0.8/s42"):
        a, b = runs[run], parallel[run]
        assert a["final_acc"] == b["final_acc"], run
        for key in ("train_loss", "test_loss", "test_acc", "samples"):
            assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], (run, key)
    assert any(l.startswith("+ ") and "summarize.py" in l for l in lines)
    assert (two / "results.md").stat().st_mtime > (out / "results.md").stat().st_mtime   # the summary rewritten
