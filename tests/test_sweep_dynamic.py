"""A sweep with DYNAMIC, for real, on the bundled digits on CPU: its plan puts one train.py --dynamic run
per method beside the static random run in stage 2, the runs train, and the summary gives them rows
whose compute in work is the samples each run's own records say it trained / (E N).
(The plan's variables are tested in tests/test_study.py, the work arithmetic on made-up metrics in
tests/test_summarize.py, the samplers in tests/test_dynamic.py.)"""
import csv
import importlib.util
import json
import os
import shlex
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, E, RATE = 1437, 3, 0.9      # digits' training set; InfoBatch prunes epoch 1 of 3 (e + 1 <= 0.875 E)
ENV = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": str(E), "RATES": str(RATE), "SEEDS": "1",
       "METHODS": "random", "DYNAMIC": "infobatch rs2", "NGPU": "0", "BATCH": "64", "FULL_BATCH": "64",
       "RATE_FLAGS": "", "JOBS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep_entry", os.path.join(ROOT, "scripts", "sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dynamic_sweep_plans_trains_and_summarizes(tmp_path, capsys):
    out = tmp_path / "sweep"
    env = {**os.environ, **ENV, "OUT": str(out), "PYTHON": sys.executable}
    assert load_sweep().main(environ=env, cwd=str(tmp_path)) == 0, capsys.readouterr().err

    # the plan: no stage 1 (random and dynamic runs need no dynamics); stage 2 the random subset run and
    # one full-data run per dynamic method with --dynamic_ratio = the rate, in folders named like the others
    plan = (out / "plan.txt").read_text().splitlines()
    stage2 = [shlex.split(l) for l in plan[plan.index("# stage 2") + 1:plan.index("# stage 3")]]
    assert plan[plan.index("# stage 1") + 1] == "# stage 2"
    dynamic = {a[a.index("--dynamic") + 1]: a for a in stage2 if "--dynamic" in a}
    assert set(dynamic) == {"infobatch", "rs2"} and len(stage2) == 3
    for method, argv in dynamic.items():
        assert os.path.basename(argv[1]) == "train.py" and argv[argv.index("--dynamic_ratio") + 1] == str(RATE)
        assert argv[argv.index("--save_path") + 1] == str(out / method / f"r{RATE}" / "s1")

    # each dynamic run's records: the indices it trained per epoch; its ledger counts exactly those
    trained = {}
    for method in ("infobatch", "rs2"):
        run = out / method / f"r{RATE}" / "s1"
        m = json.loads((run / "metrics.json").read_text())
        assert m["finished"] and m["dynamic_ratio"] == RATE
        sizes = [len(np.load(run / "selection" / f"{e}_Index.npy")) for e in range(E)]
        assert [h["samples"] for h in m["history"]] == sizes
        trained[method] = sum(sizes)
    ib = [len(np.load(out / "infobatch" / f"r{RATE}" / "s1" / "selection" / f"{e}_Index.npy")) for e in range(E)]
    assert ib[0] == ib[2] == N and ib[1] < N                   # pruned in epoch 1 only
    assert trained["rs2"] == E * (N - int(RATE * N))

    # the summary: dynamic rows beside the static one, work = samples trained / (E N), from the records
    rows = {r["run"]: r for r in csv.DictReader(open(out / "results.csv"))}
    expected = {f"{m}/r{RATE}/s1": trained[m] / (E * N) for m in trained}
    expected[f"random/r{RATE}/s1"] = (N - int(RATE * N)) / N  # a static random subset: no dynamics to pay for
    for run, work in expected.items():
        r = rows[run]
        assert r["state"] == "finished" and abs(float(r["work_total"]) - work) < 1e-9, (run, r["work_total"], work)
        assert float(r["work_dynamics"]) == 0.0
    assert rows[f"infobatch/r{RATE}/s1"]["dynamic_ratio"] == str(RATE)
    md = (out / "results.md").read_text()
    compute = md[md.index("Compute (work)"):]
    for method in ("random", "infobatch", "rs2"):
        line = next(l for l in compute.splitlines() if l.startswith(f"| {method} "))
        assert f"{expected[f'{method}/r{RATE}/s1']:.3f}" in line, line
    assert (out / "accuracy_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
