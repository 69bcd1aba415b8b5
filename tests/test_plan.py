"""scripts/sweep.sh as a plan (PLAN=FILE, nothing trained) and its executors: the local one (JOBS,
failures) with a stub interpreter, and scripts/slurm_array.sh with the variables SLURM would set."""
import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "scripts", "sweep.sh")
SLURM = os.path.join(ROOT, "scripts", "slurm_array.sh")
REPORTED = {0.3: (90, 10), 0.5: (70, 10), 0.7: (60, 20), 0.8: (20, 10), 0.9: (10, 5)}


def plan(tmp_path, **env):
    """Write a plan; returns (completed process, {stage: [argv lists]})."""
    path = tmp_path / "study.plan"
    full = dict(os.environ, PLAN=str(path), NGPU="0", DATASET="cifar100", OUT=str(tmp_path / "out"), **env)
    p = subprocess.run(["bash", SWEEP], env=full, capture_output=True, text=True, cwd=tmp_path)
    stages, cur = {}, None
    if p.returncode == 0:
        for line in path.read_text().splitlines():
            if line.startswith("# stage "):
                cur = int(line.split()[2])
            elif line and not line.startswith("#"):
                stages.setdefault(cur, []).append(line)
    return p, stages


def flags(line):
    """{flag: value or [values] or True} of the python command in a plan line (after any guard)."""
    argv = shlex.split(line.split(" || ")[-1])
    out, i = {"script": os.path.basename(argv[1])}, 2
    while i < len(argv):
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        vals = argv[i + 1:j]
        out[argv[i]] = True if not vals else vals[0] if len(vals) == 1 else vals
        i = j
    return out


def test_paper_plan(tmp_path):
    out = tmp_path / "out"
    p, st = plan(tmp_path, METHODS="tdds el2n dyn_unc random", SEEDS="1 2")
    assert p.returncode == 0, p.stderr
    assert "dynamics: 90 of 200 epochs (55% of the full-data training saved" in p.stdout
    full = flags(st[1][0])
    assert full["script"] == "train.py" and full["--batch-size"] == "100" and full["--stop_epoch"] == "90"
    assert full["--epochs"] == "200" and full["--save_path"] == f"{out}/full" and full["--manualSeed"] == "1"
    scoring = {flags(l)["--method"]: flags(l) for l in st[1][1:]}
    assert set(scoring) == {"tdds", "el2n", "dyn_unc"}                        # one pass per method
    assert sorted(map(int, scoring["tdds"]["--trajectory_len"])) == [10, 20, 60, 70, 90]
    assert all(l.startswith("[ -f ") for l in st[1][1:])                    # idempotent: skipped when done
    runs = [flags(l) for l in st[2]]
    saves = [r["--save_path"] for r in runs]
    assert len(saves) == len(set(saves)) == 4 * 5 * 2                          # names x rates x seeds
    for r in runs:
        assert r["script"] == "train_subset.py" and r["--batch-size"] == "128" and r["--resume"] is True
        name, rate, seed = r["--save_path"][len(str(out)) + 1:].split("/")
        assert rate == f"r{r['--subset_rate']}" and seed == f"s{r['--manualSeed']}"
        T, K = REPORTED[float(r["--subset_rate"])]
        if name == "random":
            assert r["--selection"] == "random" and "--mask_path" not in r
        elif name == "tdds":
            assert r["--mask_path"] == f"{out}/masks/data_mask_win{K}_ep{T}.npy"
            assert r["--score_path"] == f"{out}/masks/score_win{K}_ep{T}.npy"
        elif name == "dyn_unc":   # several K in one call: the K is in the file name
            assert r["--mask_path"] == f"{out}/masks/data_mask_dyn_unc_ep{T}_win{K}.npy"
        else:
            assert r["--mask_path"] == f"{out}/masks/data_mask_el2n_ep{T}.npy"
    assert [flags(l)["script"] for l in st[3]] == ["summarize.py"] + (["report.py"] if os.path.exists(
        os.path.join(ROOT, "scripts", "report.py")) else [])


def test_plan_variables(tmp_path):
    p, st = plan(tmp_path, RATES="0.9", METHODS="tdds moderate random", FULL_BATCH="64", BUDGET="iterations",
                 SUBSET_ARCHS="resnet18 resnet20", TRAIN_FLAGS="--label_noise 0.2")
    assert p.returncode == 0, p.stderr
    assert "dynamics: 10 of 200 epochs (95% of the full-data training saved" in p.stdout
    full = flags(st[1][0])
    assert full["--batch-size"] == "64" and full["--stop_epoch"] == "10" and full["--label_noise"] == "0.2"
    moderate = [flags(l) for l in st[1] if "moderate" in l][0]
    assert moderate["--checkpoint"] == str(tmp_path / "out" / "full" / "checkpoint.pth.tar")
    runs = [flags(l) for l in st[2]]
    assert {r["--save_path"].split("/out/")[1] for r in runs} == {
        f"{n}-iters/{a}/r0.9/s42" for n in ("tdds", "moderate", "random") for a in ("resnet18", "resnet20")}
    assert all(r["--budget"] == "iterations" and r["--label_noise"] == "0.2" for r in runs)
    assert {r["--arch"] for r in runs} == {"resnet18", "resnet20"}
    _, st = plan(tmp_path, RATES="0.9", FULL_ACC="1")
    assert "--stop_epoch" not in flags(st[1][0])                               # trained to the end


@pytest.mark.parametrize("env, message", [
    (dict(RATES="0.65"), "set TRAJ and WIN"),
    (dict(METHODS="tdds grand"), "grand"),
    (dict(RATES="1.5"), "1.5"),
    (dict(BUDGET="steps"), "BUDGET"),
    (dict(JOBS="0"), "JOBS"),
    (dict(RATES="0.5", TRAJ="6", WIN="2"), "K >= 3"),
])
def test_plan_rejects_bad_settings(tmp_path, env, message):
    p, _ = plan(tmp_path, **env)
    assert p.returncode == 2 and message in p.stderr and not (tmp_path / "study.plan").exists()


STUB = textwrap.dedent('''\
    """Stands in for `python`: writes what the scripts would, fails for seed 13."""
    import json, os, sys, time
    script, argv = os.path.basename(sys.argv[1]), sys.argv[2:]
    def arg(name):
        return argv[argv.index(name) + 1]
    if script in ("summarize.py", "report.py"):
        sys.exit(0)
    if script == "importance_evaluation.py":
        os.makedirs(arg("--mask_path"), exist_ok=True)
        for t in argv[argv.index("--trajectory_len") + 1:argv.index("--window_size")]:
            open(os.path.join(arg("--mask_path"), f"info_el2n_ep{t}.json"), "w").close()
        sys.exit(0)
    if "--manualSeed" in argv and arg("--manualSeed") == "13":
        sys.exit("stub: seed 13 fails")
    time.sleep(0.3)
    os.makedirs(arg("--save_path"), exist_ok=True)
    with open(os.path.join(arg("--save_path"), "metrics.json"), "w") as f:
        json.dump({"finished": True, "threads": os.environ.get("OMP_NUM_THREADS")}, f, indent=2)
''')


def test_local_executor_jobs_failures_and_skips(tmp_path):
    stub = tmp_path / "stub_python"
    stub.write_text(f"#!{sys.executable}\n" + STUB)
    stub.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(stub), NGPU="0", DATASET="digits", OUT=str(out), EPOCHS="4", TRAJ="4",
               WIN="3", RATES="0.5 0.8", METHODS="el2n random", SEEDS="1 13 2", JOBS="2")
    p = subprocess.run(["bash", SWEEP], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1
    failed = [l for l in p.stderr.splitlines() if l.startswith("  ")]
    assert len(failed) == 4 and all("--manualSeed 13" in l and ".log)" in l for l in failed)  # 2 names x 2 rates
    done = sorted(str(m.parent.relative_to(out)) for m in out.rglob("metrics.json"))
    assert done == sorted(["full"] + [f"{n}/r{r}/s{s}" for n in ("el2n", "random") for r in (0.5, 0.8) for s in (1, 2)])
    cores = os.cpu_count()
    threads = {json.loads((out / d / "metrics.json").read_text())["threads"] for d in done if d != "full"}
    assert threads == {str(max(1, cores // 2))}                               # cores split between the 2 jobs
    assert "stub: seed 13 fails" in (out / "el2n" / "r0.5" / "s13.log").read_text()
    again = subprocess.run(["bash", SWEEP], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert again.stdout.count("skip ") == 1 + 1 + 8 and again.returncode == 1   # full, scoring, 8 finished runs


def test_slurm_array_runs_the_right_line(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    plan_file = tmp_path / "p.plan"
    plan_file.write_text("# stage 1\n" + "".join(f"echo {i} >> {marks}/stage1\n" for i in range(2)) +
                         "# stage 2\n" + "".join(f"touch {marks}/line{i}\n" for i in range(3)) +
                         "# stage 3\nfalse\necho never > " + str(marks / "after") + "\n")
    def slurm(stage, task=None):
        env = dict(os.environ, **({"SLURM_ARRAY_TASK_ID": str(task)} if task is not None else {}))
        return subprocess.run(["bash", SLURM, str(plan_file), str(stage)], env=env, capture_output=True, text=True)
    assert slurm(2, 1).returncode == 0 and sorted(os.listdir(marks)) == ["line1"]
    assert slurm(2, 0).returncode == 0 and sorted(os.listdir(marks)) == ["line0", "line1"]
    assert slurm(1).returncode == 0 and (marks / "stage1").read_text() == "0\n1\n"   # in order
    assert slurm(3).returncode != 0 and not (marks / "after").exists()             # stops at a failure
    bad = slurm(2, 3)
    assert bad.returncode == 2 and "lines 0..2" in bad.stderr
    assert slurm(2).returncode == 2
