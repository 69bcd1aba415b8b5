"""The sweep and its summary, for real, on the bundled digits on CPU: the dynamics run stopped at T,
TDDS scores, top and ccs selection, the random baseline, the table and the plots;
then the same plan with two jobs at once gives the same metrics."""
import csv
import json
import shutil

import numpy as np
import pytest

from conftest import run_script

ENV = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": "4", "TRAJ": "3", "WIN": "3", "RATES": "0.8",
       "METHODS": "tdds random", "SELECTIONS": "top ccs", "NGPU": "0", "BATCH": "64", "FULL_BATCH": "64"}


def metrics(out):
    return {str(m.parent.relative_to(out)): json.loads(m.read_text()) for m in out.rglob("metrics.json")}


@pytest.mark.slow
def test_sweep_end_to_end_on_digits(tmp_path):
    out = tmp_path / "sweep"
    p = run_script("bash", "scripts/sweep.sh", env={**ENV, "OUT": str(out)})
    assert "dynamics: 3 of 4 epochs" in p.stdout
    assert (out / "masks" / "data_mask_win3_ep3.npy").exists() and (out / "masks" / "info_win3_ep3.json").exists()
    runs = metrics(out)
    assert runs["full"]["completed_epochs"] == 3 and runs["full"]["stopped"] and not runs["full"]["finished"]
    n_kept = 1437 - int(0.8 * 1437)
    for run, m in runs.items():
        if run != "full":
            assert m["finished"] and m["num_train_samples"] == n_kept and m["subset_rate"] == 0.8, run
            assert len(np.load(out / run / "subset_indices.npy")) == n_kept
    assert {r.split("/")[0] for r in runs} == {"full", "tdds", "tdds-ccs", "random"}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(runs) and all(r["cost_total"] for r in rows)
    table = (out / "results.md").read_text()
    for label in ("tdds", "tdds-ccs", "random"):
        assert f"| {label} " in table, table
    assert (out / "accuracy_vs_pruning.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "accuracy_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
    # running it again trains nothing: every run is skipped, the summary is rewritten
    again = run_script("bash", "scripts/sweep.sh", env={**ENV, "OUT": str(out)}).stdout.splitlines()
    commands = [l for l in again if l.startswith("+ ")]
    assert not [c for c in commands if "train.py" in c or "train_subset.py" in c], commands
    assert sum(l.startswith("skip ") for l in again) == len(runs) + 1       # + the scoring call
    assert any("summarize.py" in c for c in commands)

    # the same study with two jobs at once (threads split): the same metrics
    two = tmp_path / "two"
    shutil.copytree(out / "full", two / "full")
    shutil.copytree(out / "masks", two / "masks")
    run_script("bash", "scripts/sweep.sh", env={**ENV, "OUT": str(two), "JOBS": "2"})
    parallel = metrics(two)
    assert set(parallel) == set(runs)
    for run in runs:
        a, b = runs[run], parallel[run]
        assert a["final_acc"] == pytest.approx(b["final_acc"], abs=1e-9), run
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                        rel=1e-5), run
