"""The sweep and its summary, for real, on the bundled digits on CPU: scores of several methods,
top and ccs selection, the random baseline, then the table and the plot."""
import csv
import json

import numpy as np

from conftest import run_script


def test_sweep_end_to_end_on_digits(tmp_path):
    out = tmp_path / "sweep"
    env = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": "3", "TRAJ": "3", "WIN": "3", "RATES": "0.8",
           "METHODS": "tdds el2n random", "SELECTIONS": "top ccs", "OUT": str(out), "NGPU": "0",
           "BATCH": "64"}
    p = run_script("bash", "scripts/sweep.sh", env=env)
    assert (out / "masks" / "data_mask_win3_ep3.npy").exists() and (out / "masks" / "score_el2n_ep3.npy").exists()
    runs = {str(m.parent.relative_to(out)): json.loads(m.read_text()) for m in out.rglob("metrics.json")}
    n_kept = 1437 - int(0.8 * 1437)
    for run, m in runs.items():
        assert m["finished"], run
        if run != "full":
            assert m["num_train_samples"] == n_kept and m["subset_rate"] == 0.8, run
            assert len(np.load(out / run / "subset_indices.npy")) == n_kept
    assert {r.split("/")[0] for r in runs} == {"full", "tdds", "tdds-ccs", "el2n", "el2n-ccs", "random"}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(runs)
    table = (out / "results.md").read_text()
    for label in ("tdds", "tdds-ccs", "el2n", "random"):
        assert f"| {label} " in table, table
    assert (out / "accuracy_vs_pruning.png").read_bytes()[:4] == b"\x89PNG"
    assert "tdds" in p.stdout
    # running it again trains nothing: every run is skipped, the summary is rewritten
    again = run_script("bash", "scripts/sweep.sh", env=env).stdout.splitlines()
    commands = [l for l in again if l.startswith("+ ")]
    assert not [c for c in commands if "train.py" in c or "train_subset.py" in c], commands
    assert sum(l.startswith("skip ") for l in again) == len(runs)
    assert any("summarize.py" in c for c in commands)
