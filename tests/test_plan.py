"""The study as a plan (scripts/sweep.py -> utils/study/plan.py, in-process: PLAN=FILE, nothing trained),
held to the plans and errors the bash sweep.sh wrote (tests/plans/recorded.json), and its executors:
the local one (utils/study/executor.py: JOBS, GPUS, logs, failures, Ctrl-C, progress, plan copies) with a
stub interpreter, and scripts/slurm_array.sh with the variables SLURM would set."""
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "scripts", "sweep.sh")
SLURM = os.path.join(ROOT, "scripts", "slurm_array.sh")
REPORTED = {0.3: (90, 10), 0.5: (70, 10), 0.7: (60, 20), 0.8: (20, 10), 0.9: (10, 5)}


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep_entry", os.path.join(ROOT, "scripts", "sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SWEEP_PY = load_sweep()


class Done:
    """What a sweep run in-process left: returncode, stdout, stderr (as a CompletedProcess has)."""
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def sweep_in_process(env, cwd, capsys):
    capsys.readouterr()
    status = SWEEP_PY.main(environ=env, cwd=str(cwd))
    o = capsys.readouterr()
    return Done(status, o.out, o.err)


def read_stages(text):
    stages, cur = {}, None
    for line in text.splitlines():
        if line.startswith("# stage "):
            cur = int(line.split()[2])
        elif line and not line.startswith("#"):
            stages.setdefault(cur, []).append(line)
    return stages


@pytest.fixture
def plan(tmp_path, capsys):
    """plan(**env): write a plan in-process; returns (result, {stage: [lines]})."""
    def make(**env):
        path = tmp_path / "study.plan"
        path.unlink(missing_ok=True)
        full = {"PLAN": str(path), "NGPU": "0", "DATASET": "cifar100", "OUT": str(tmp_path / "out"), **env}
        p = sweep_in_process({k: v for k, v in full.items() if v is not None}, tmp_path, capsys)
        return p, (read_stages(path.read_text()) if p.returncode == 0 else {})
    return make


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


def test_paper_plan(tmp_path, plan):
    out = tmp_path / "out"
    p, st = plan(METHODS="tdds el2n dyn_unc random", SEEDS="1 2")
    assert p.returncode == 0, p.stderr
    assert "dynamics: 90 of 200 epochs (55% of the full-data training saved" in p.stdout
    full = flags(st[1][0])
    assert full["script"] == "train.py" and full["--batch-size"] == "100" and full["--stop_epoch"] == "90"
    assert full["--epochs"] == "200" and full["--save_path"] == f"{out}/full" and full["--manualSeed"] == "1"
    scoring = {flags(l)["--method"]: flags(l) for l in st[1][1:]}
    assert set(scoring) == {"tdds", "el2n", "dyn_unc"}                        # one pass per method
    assert sorted(map(int, scoring["tdds"]["--trajectory_len"])) == [10, 20, 60, 70, 90]
    assert all(l.startswith("python ") for l in st[1] + st[2] + st[3])       # no skip logic: the scripts decide
    assert "--overwrite" not in " ".join(st[1] + st[2])                       # only with OVERWRITE=1
    runs = [flags(l) for l in st[2]]
    saves = [r["--save_path"] for r in runs]
    assert len(saves) == len(set(saves)) == 4 * 5 * 2                          # names x rates x seeds
    for r in runs:   # the default RATE_FLAGS: a smaller batch at 0.8 and 0.9 only
        assert r["script"] == "train_subset.py" and r["--resume"] is True
        assert r["--batch-size"] == {"0.8": "64", "0.9": "32"}.get(r["--subset_rate"], "128")
        assert not {"--teacher", "--kd_alpha", "--mean_p_path"} & set(r)          # only where asked
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


def test_plan_variables(tmp_path, plan):
    p, st = plan(RATES="0.9", METHODS="tdds random", FULL_BATCH="64", BUDGET="iterations",
                 SUBSET_ARCHS="resnet18 resnet20", TRAIN_FLAGS="--label_noise 0.2")
    assert p.returncode == 0, p.stderr
    assert "dynamics: 10 of 200 epochs (95% of the full-data training saved" in p.stdout
    full = flags(st[1][0])
    assert full["--batch-size"] == "64" and full["--stop_epoch"] == "10" and full["--label_noise"] == "0.2"
    runs = [flags(l) for l in st[2]]
    assert {r["--save_path"].split("/out/")[1] for r in runs} == {
        f"{n}-iters/{a}/r0.9/s42" for n in ("tdds", "random") for a in ("resnet18", "resnet20")}
    assert all(r["--budget"] == "iterations" and r["--label_noise"] == "0.2" for r in runs)
    assert {r["--arch"] for r in runs} == {"resnet18", "resnet20"}
    _, st = plan(RATES="0.9", FULL_ACC="1", NGPU="")
    assert "--stop_epoch" not in flags(st[1][0])                               # trained to the end
    assert {flags(l)["--ngpu"] for l in st[1][:1] + st[2]} == {"1"}           # a plan: CUDA where it runs
    # moderate scores the trained full-data model: the full-data run goes to the end
    p, st = plan(RATES="0.9", METHODS="moderate")
    assert "--stop_epoch" not in flags(st[1][0]) and "moderate scores the trained" in p.stdout
    moderate = flags(st[1][1])
    assert moderate["--checkpoint"] == str(tmp_path / "out" / "full" / "checkpoint.pth.tar")
    assert moderate["--dataset"] == "cifar100"
    assert [flags(l)["--mask_path"] for l in st[2]] == [str(tmp_path / "out" / "masks" / "data_mask_moderate.npy")]
    # random alone needs no dynamics: no full-data run, no scores, no T for an unlisted rate
    p, st = plan(RATES="0.65", METHODS="random")
    assert p.returncode == 0, p.stderr
    assert 1 not in st and [flags(l)["--selection"] for l in st[2]] == ["random"]


def test_plan_aggressive_pruning(tmp_path, plan):
    """dual, beta, the teacher and the per-rate flags appear in the plan where asked, and only there."""
    out = tmp_path / "out"
    p, st = plan(METHODS="tdds dual random", SELECTIONS="top beta", RATES="0.5 0.9")
    assert p.returncode == 0, p.stderr
    assert "rate 0.9: subset runs add --batch-size 32 (RATE_FLAGS; BATCH=128 elsewhere)" in p.stdout
    scoring = {flags(l)["--method"]: flags(l) for l in st[1][1:]}
    assert set(scoring) == {"tdds", "dual"} and scoring["dual"]["--window_size"] == ["10", "5"]
    assert "--decay" not in scoring["dual"]
    runs = {r["--save_path"][len(str(out)) + 1:]: r for r in map(flags, st[2])}
    assert set(runs) == {f"{n}/r{r}/s42" for n in ("tdds", "tdds-beta", "dual", "dual-beta", "random")
                         for r in ("0.5", "0.9")}
    for name, r in runs.items():
        T, K = REPORTED[float(r["--subset_rate"])]
        assert r["--batch-size"] == ("32" if "r0.9" in name else "128") and "--teacher" not in r
        assert r["--selection"] == ("beta" if "-beta/" in name else "random" if name.startswith("random") else "top")
        # beta on TDDS takes dual's mean p_y of the same T; dual's own sits beside its mask
        assert r.get("--mean_p_path") == (f"{out}/masks/mean_p_dual_ep{T}_win{K}.npy" if "tdds-beta" in name else None)
        if name.startswith("dual"):
            assert r["--mask_path"] == f"{out}/masks/data_mask_dual_ep{T}_win{K}.npy"
    # beta with another score: dual is scored for its mean p_y, but no dual subset runs are trained
    p, st = plan(METHODS="tdds", SELECTIONS="beta", RATES="0.9", RATE_FLAGS="")
    assert p.returncode == 0 and "RATE_FLAGS" not in p.stdout
    assert [flags(l)["--method"] for l in st[1][1:]] == ["tdds", "dual"]
    (r,) = map(flags, st[2])
    assert r["--batch-size"] == "128" and r["--mean_p_path"] == f"{out}/masks/mean_p_dual_ep10.npy"
    # KD=1: the full-data run to the end; its best model teaches every subset run, alpha per rate
    p, st = plan(KD="1", KD_ALPHA="0.5:0.5 0.9:1.0", METHODS="random tdds", RATES="0.5 0.9",
                 RATE_FLAGS="0.9:--batch-size 16 --no_score_weighting")
    assert p.returncode == 0, p.stderr
    assert "--stop_epoch" not in flags(st[1][0]) and "KD=1" in p.stdout
    runs = {r["--save_path"][len(str(out)) + 1:]: r for r in map(flags, st[2])}
    assert set(runs) == {f"{n}-kd/r{r}/s42" for n in ("random", "tdds") for r in ("0.5", "0.9")}
    for name, r in runs.items():
        assert r["--teacher"] == f"{out}/full/model_best.pth.tar"
        assert r["--kd_alpha"] == ("1.0" if "r0.9" in name else "0.5")
        assert r["--batch-size"] == ("16" if "r0.9" in name else "128")
        assert ("--no_score_weighting" in r) == ("r0.9" in name)
    assert st[2][0].count("--batch-size") == 1


def test_plan_does_not_depend_on_files(tmp_path, plan):
    """The plan follows from the variables alone: the same before and after the files exist."""
    env = dict(RATES="0.5 0.9", METHODS="tdds el2n random", SEEDS="3")
    p, before = plan(**env)
    out = tmp_path / "out"
    for d in ("full/npy", "masks", "tdds/r0.5/s3"):
        (out / d).mkdir(parents=True)
    (out / "full" / "metrics.json").write_text('{"finished": false, "completed_epochs": 70}')
    for e in range(70):
        (out / "full" / "npy" / f"{e}_Output.npy").touch()
    p2, after = plan(**env)
    assert p.returncode == p2.returncode == 0 and before == after


@pytest.mark.parametrize("env, message", [
    (dict(RATES="0.65"), "set TRAJ and WIN"),
    (dict(METHODS="tdds grand"), "grand"),
    (dict(RATES="1.5"), "1.5"),
    (dict(BUDGET="steps"), "BUDGET"),
    (dict(JOBS="0"), "JOBS"),
    (dict(RATES="0.5", TRAJ="6", WIN="2"), "K >= 3"),
    (dict(FULL_ACC="yes"), "FULL_ACC"),
    (dict(BATCH="0"), "BATCH"),
    (dict(SEEDS="1 x"), "SEEDS"),
    (dict(SELECTIONS="best"), "best"),
    (dict(TRAJ="-3"), "TRAJ"),
    (dict(GPUS="0 1"), "NGPU=1"),
    (dict(METHODS="moderate", DYNAMICS="/nonexistent/npy"), "DYNAMICS"),
    (dict(KD="1"), "KD_ALPHA"),
    (dict(KD_ALPHA="0.5"), "KD=1"),
    (dict(KD="1", KD_ALPHA="0.5:0.5", RATES="0.5 0.9"), "pruning rate 0.9"),
    (dict(RATE_FLAGS="--batch-size 32"), "RATE_FLAGS"),
    (dict(RATE_FLAGS="0.9:--batch-size x"), "RATE_FLAGS"),
    (dict(METHODS="dual", RATES="0.5", TRAJ="6", WIN="1"), "K >= 2"),
])
def test_plan_rejects_bad_settings(tmp_path, plan, env, message):
    p, _ = plan(**env)
    assert p.returncode == 2 and message in p.stderr and not (tmp_path / "study.plan").exists()
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep.sh: error: "), p.stderr


RECORDED = json.load(open(os.path.join(ROOT, "tests", "plans", "recorded.json")))
_record = importlib.util.spec_from_file_location("record", os.path.join(ROOT, "tests", "plans", "record.py"))
record = importlib.util.module_from_spec(_record)
_record.loader.exec_module(record)   # its make_dynamics: the very folders the recorded plans were made with
# the one recorded error that changed on purpose: the bash sweep named the number printf made of the word
FIXED_ERRORS = {"rate_not_number": "sweep.sh: error: RATES: 'abc' is not a number\n"}
# a recorded plan that is now refused on purpose: every line is parsed by its script's parser at plan
# time, and importance_evaluation.py has no --ngpu (the bash sweep wrote the line; the scorer refused it)
REFUSED_NOW = {"eval_flags": "sweep.sh: error: EVAL_FLAGS: importance_evaluation.py refuses '--chunk_size 4096 "
                             "--ngpu 0': unrecognized arguments: --ngpu 0\n"}


@pytest.fixture(scope="module")
def recorded_tmp(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("recorded"))
    record.make_dynamics(tmp)
    return tmp


def without_eval_schedule(plan):
    """A plan less the other change since the recordings: under BUDGET=iterations the default RATE_FLAGS
    evaluate on a schedule (--eval_every, issue 33.10)."""
    from utils.study.variables import ITERATION_RATE_DEFAULTS, RATE_DEFAULTS
    return re.sub(r" --eval_every \d+", "", plan.replace(ITERATION_RATE_DEFAULTS, RATE_DEFAULTS))


def with_report_rates(plan, rates):
    """A recorded plan with the one flag stage 3 gained: report.py shows the study's own rates."""
    return "\n".join(l + " --rates " + rates if "/scripts/report.py " in l else l for l in plan.split("\n"))


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_plans_and_errors_are_unchanged(name, recorded_tmp, capsys):
    """The Python planner writes the plans the bash sweep.sh wrote, byte for byte (stage 3's report.py
    line gains --rates), prints the same lines (the clamping notes moved into the settings), and
    refuses the same bad configurations with the same line, exit 2, nothing written."""
    case = RECORDED[name]
    sub = lambda s: s.replace("{ROOT}", ROOT).replace("{TMP}", recorded_tmp)
    cwd = sub(case["cwd"])
    os.makedirs(cwd, exist_ok=True)
    plan_file = os.path.join(cwd, "study.plan")
    if os.path.exists(plan_file):
        os.remove(plan_file)
    env = {"PLAN": plan_file, "OUT": "/study/out", **{k: sub(v) for k, v in case["env"].items()}}
    p = sweep_in_process(env, cwd, capsys)
    if name in REFUSED_NOW:
        assert p.returncode == 2 and p.stderr == REFUSED_NOW[name] and not os.path.exists(plan_file)
        return
    assert p.returncode == case["status"], p.stderr
    if case["status"]:
        assert p.stderr == FIXED_ERRORS.get(name, sub(case["stderr"])) and p.stdout == ""
        assert not os.path.exists(plan_file)
        return
    text = open(plan_file).read()
    rates = text.split("RATES='", 1)[1].split("'", 1)[0]
    stdout = p.stdout
    if case["env"].get("BUDGET") == "iterations" and "RATE_FLAGS" not in case["env"]:
        assert " --eval_every " in text
        text, stdout = without_eval_schedule(text), without_eval_schedule(stdout)
    assert text == with_report_rates(sub(case["plan"]), rates)
    old = sub(case["stdout"]).splitlines()
    new = stdout.splitlines()
    kept = [l for l in old if not l.startswith("note: ")]
    assert [l for l in new if l in kept] == kept                       # the same lines, in the same order
    for note in (l for l in old if l.startswith("note: ")):          # "note: rate 0.5: T=70 exceeds ...; using T=6"
        rate, what = note[len("note: rate "):].split(": ", 1)
        setting = [l for l in new if l.startswith(f"  rate {rate}: ")]
        assert len(setting) == 1 and what.split("; using ")[0] in setting[0] and "clamped" in setting[0], new
        assert what.split("; using ")[1] in setting[0]                # the value used


def test_default_plan_is_fast_to_write(tmp_path):
    """The default plan in one process (no interpreter started per score file): just that it works
    through the real entry point; its time is in the docs, measured, not asserted."""
    p = subprocess.run(["bash", SWEEP], env=dict(os.environ, PLAN=str(tmp_path / "p"), OUT=str(tmp_path / "o"),
                                                 PYTHON=sys.executable),
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(read_stages((tmp_path / "p").read_text())[2]) == 7 * 5


STUB = textwrap.dedent('''\
    """Stands in for `python`: records each call and behaves as the scripts do towards their folders: the
    same settings on done work -> "already ...", nothing written; other settings -> refused (exit 2)
    unless --overwrite. Seed 13 fails, seed 99 hangs. The sweep itself (scripts/sweep.py) runs for real."""
    import json, os, sys, time
    if os.path.basename(sys.argv[1]) == "sweep.py":
        os.execv(sys.executable, [sys.executable] + sys.argv[1:])
    script, argv = os.path.basename(sys.argv[1]), sys.argv[2:]
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), **{k: os.environ.get(k) for k in
                            ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}) + "\\n")
    def arg(name):
        return argv[argv.index(name) + 1]
    if script in ("summarize.py", "report.py"):
        sys.exit(0)
    settings = [a for a in argv if a not in ("--resume", "--overwrite")]   # (paths as given: run from one cwd)
    def settle(record):
        """exit if the work recorded in `record` is done (same settings) or of other settings"""
        if os.path.exists(record):
            if json.load(open(record)) == settings:
                print(f"already finished: {record}; nothing rewritten")
                sys.exit(0)
            if "--overwrite" not in argv:
                print(f"error: {record} holds work of other settings: --overwrite to replace it", file=sys.stderr)
                sys.exit(2)
    if script == "importance_evaluation.py":
        os.makedirs(arg("--mask_path"), exist_ok=True)
        settle(os.path.join(arg("--mask_path"), "info_stub.json"))
        json.dump(settings, open(os.path.join(arg("--mask_path"), "info_stub.json"), "w"))
        sys.exit(0)
    seed = arg("--manualSeed")
    settle(os.path.join(arg("--save_path"), "metrics.json"))
    if seed == "13":
        sys.exit("stub: seed 13 fails")
    if seed == "99":   # a job's last words on SIGTERM, as train.py prints them (where it stopped, how to resume)
        import signal
        def stop(signum, frame):
            print("SIGTERM: stub checkpoint at step 1 of epoch 0; run again with --resume", flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
    time.sleep(60 if seed == "99" else 0.3)
    os.makedirs(arg("--save_path"), exist_ok=True)
    json.dump(settings, open(os.path.join(arg("--save_path"), "metrics.json"), "w"))
''')
STUDY = dict(NGPU="0", DATASET="digits", EPOCHS="6", TRAJ="4", WIN="3", RATES="0.5 0.8", METHODS="el2n random")


def stub_sweep(tmp_path, plan_file=None, **env):
    """Run the sweep with the stub as PYTHON; returns (result, [recorded calls])."""
    stub = tmp_path / "stub_python"
    if not stub.exists():
        stub.write_text(f"#!{sys.executable}\n" + STUB)
        stub.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    full = dict(os.environ, PYTHON=str(stub), STUB_LOG=str(log), OUT=str(tmp_path / "out"), **{**STUDY, **env})
    if plan_file:
        full["PLAN"] = str(plan_file)
    out, err = io.StringIO(), io.StringIO()   # the sweep in-process (its commands are processes)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = SWEEP_PY.main(environ=full, cwd=str(tmp_path))
    calls = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    return Done(status, out.getvalue(), err.getvalue()), calls


def plan_argv(tmp_path, **env):
    """{stage: [argv after the interpreter]} of the plan for the same study."""
    p, _ = stub_sweep(tmp_path, plan_file=tmp_path / "study.plan", **env)
    assert p.returncode == 0, p.stderr
    stages, cur = {}, None
    for line in (tmp_path / "study.plan").read_text().splitlines():
        if line.startswith("# stage "):
            cur = int(line.split()[2])
        elif line and not line.startswith("#"):
            stages.setdefault(cur, []).append(shlex.split(line)[1:])
    return stages


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_local_executor_runs_the_plan(tmp_path, jobs):
    """The sweep runs exactly the plan's commands; a failing run does not stop the others; the sweep
    then exits 1 and lists it with its log; a second sweep runs every command again, and the scripts
    say what is already done; one with other settings is refused, listed with how to go on."""
    plan = plan_argv(tmp_path, SEEDS="1 13 2")
    p, calls = stub_sweep(tmp_path, SEEDS="1 13 2", JOBS=jobs)
    assert p.returncode == 1, p.stderr
    ran = [c["argv"] for c in calls]
    assert ran[:len(plan[1])] == plan[1] and ran[-len(plan[3]):] == plan[3]       # stages 1 and 3, in order
    stage2 = ran[len(plan[1]):-len(plan[3])]
    assert (stage2 if jobs == "1" else sorted(stage2)) == (plan[2] if jobs == "1" else sorted(plan[2]))
    assert len(plan[2]) == 2 * 2 * 3                                                  # names x rates x seeds
    failed = [l for l in p.stderr.splitlines() if l.startswith("  ") and l.strip()]
    assert len(failed) == 4 and all("--manualSeed 13" in l and ".log)" in l for l in failed)  # 2 names x 2 rates
    out = tmp_path / "out"
    done = sorted(str(m.parent.relative_to(out)) for m in out.rglob("metrics.json"))
    assert done == sorted(["full"] + [f"{n}/r{r}/s{s}" for n in ("el2n", "random") for r in (0.5, 0.8) for s in (1, 2)])
    assert "stub: seed 13 fails" in (out / "el2n" / "r0.5" / "s13.log").read_text()
    assert (out / "plan.txt").read_text() == (tmp_path / "study.plan").read_text()   # the plan it ran
    threads = {c["OMP_NUM_THREADS"] for c in calls if os.path.basename(c["argv"][0]) == "train_subset.py"}
    mkl = {c["MKL_NUM_THREADS"] for c in calls if os.path.basename(c["argv"][0]) == "train_subset.py"}
    cores = len(os.sched_getaffinity(0))
    if jobs == "2":   # the cores split between the two jobs; a live progress line (tqdm) on stderr
        assert threads == mkl == {str(max(1, cores // 2))}
        final = [l for l in p.stderr.split("\r") if "stage 2:" in l][-1]
        assert "12/12" in final and "running 0, failed 4, refused 0" in final, final
    else:             # one job: the environment as it is
        assert threads == {os.environ.get("OMP_NUM_THREADS")}
    # again: every command runs; the full-data run, the scores and the 8 finished runs are already done
    logs = {f: f.read_text() for f in out.rglob("*.log")}
    again, calls = stub_sweep(tmp_path, SEEDS="1 13 2", JOBS=jobs)
    lines = again.stdout.splitlines()
    assert again.returncode == 1 and sum(l.startswith("already finished") for l in lines) >= 2, again.stdout
    assert sum(l.startswith("already done ") for l in lines) == 8                    # the runs, from their logs
    assert [c["argv"] for c in calls if "train_subset.py" not in c["argv"][0]] == plan[1] + plan[3]
    assert len([c for c in calls if "train_subset.py" in c["argv"][0]]) == len(plan[2])
    assert "8 already done (nothing rewritten), 0 refused, 4 failed" in again.stdout
    assert all((out / f).read_text().startswith(text) for f, text in logs.items())   # logs appended to
    # other settings: refused, listed with the reason and how to go on; nothing is run after stage 1
    other, calls = stub_sweep(tmp_path, SEEDS="1 13 2", JOBS=jobs, EPOCHS="7")
    assert other.returncode == 1 and len(calls) == 1, other.stdout                 # stage 1 stops at the refusal
    assert "1 command(s) refused" in other.stderr and "holds work of other settings" in other.stderr
    assert "OVERWRITE=1" in other.stderr and "another OUT" in other.stderr
    # OVERWRITE=1 puts --overwrite on every command and the sweep goes through (but for seed 13)
    over, calls = stub_sweep(tmp_path, SEEDS="1 13 2", JOBS=jobs, EPOCHS="7", OVERWRITE="1")
    assert over.returncode == 1 and "0 refused, 4 failed" in over.stdout, over.stdout
    assert all("--overwrite" in c["argv"] for c in calls if "summarize.py" not in c["argv"][0]
               and "report.py" not in c["argv"][0])


def test_local_executor_pins_gpus_round_robin(tmp_path):
    plan = plan_argv(tmp_path, NGPU="1", SEEDS="1 2")
    p, calls = stub_sweep(tmp_path, NGPU="1", SEEDS="1 2", JOBS="3", GPUS="3 5")
    assert p.returncode == 0, p.stderr
    device = {c["argv"][c["argv"].index("--save_path") + 1]: c["CUDA_VISIBLE_DEVICES"] for c in calls
              if "--save_path" in c["argv"]}
    saves = [a[a.index("--save_path") + 1] for a in plan[2]]
    assert [device[s] for s in saves] == ["3", "5"] * (len(saves) // 2)              # launch order, round-robin
    assert device[str(tmp_path / "out" / "full")] == "3"                              # stage 1: the first device
    assert all(a[a.index("--ngpu") + 1] == "1" for a in plan[2])


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupt_stops_the_jobs(tmp_path, jobs):
    """SIGTERM (as Ctrl-C) reaches the sweep; it stops exactly the jobs it started, in the foreground
    (JOBS=1) or beside each other (JOBS=2), and exits 130."""
    stub_env = dict(SEEDS="1 99", RATES="0.5", JOBS=str(jobs))   # the first seed also seeds the full-data run
    stub_sweep(tmp_path, **{**stub_env, "SEEDS": "1"})                # the full run and scores, quickly
    log = tmp_path / "calls.jsonl"
    log.unlink()
    env = dict(os.environ, PYTHON=str(tmp_path / "stub_python"), STUB_LOG=str(log), OUT=str(tmp_path / "out"),
               **{**STUDY, **stub_env})
    sweep = subprocess.Popen(["bash", SWEEP], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    deadline = time.time() + 30
    hanging = lambda: [json.loads(l)["pid"] for l in log.read_text().splitlines() if '"99"' in l]
    while time.time() < deadline and (not log.exists() or len(hanging()) < jobs):
        time.sleep(0.1)
    time.sleep(0.3)
    pids = hanging()
    assert len(pids) == jobs                                                           # el2n (and random), hanging
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=20)
    assert sweep.returncode == 130 and f"stopping {jobs} running job(s)" in err
    # issue 33.2: each stopped job's own interruption line reaches its log, and the terminal in the foreground
    last_words = "SIGTERM: stub checkpoint at step 1 of epoch 0"
    logs = [f.read_text() for f in (tmp_path / "out").rglob("*.log") if "s99" in str(f)]
    assert len(logs) == jobs and all(last_words in text for text in logs), logs
    assert (last_words in out) == (jobs == 1), out
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "/s99" in (tmp_path / "out" / "plan.txt").read_text()                      # stage 2 had begun
    # issue 33.1: the threads of what the stopped jobs trained are recorded, as for the runs that ended
    threads = json.loads((tmp_path / "out" / "threads.json").read_text())
    given = int(env.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))) if jobs == 1 else \
        max(1, len(os.sched_getaffinity(0)) // 2)
    stopped = [n for n in ("el2n/r0.5/s99", "random/r0.5/s99") if n in threads]
    assert len(stopped) == jobs and all(threads[n] == given for n in stopped), threads


def test_threads_of_a_run_trained_in_stretches():
    """Issue 33.1: a run half trained at 2 threads and resumed at 1 is recorded as both stretches, not as 1;
    a run started afresh at epoch 0 is one number again."""
    from utils.study.executor import merge_threads
    assert merge_threads(None, 0, 2) == 2
    assert merge_threads(2, 3, 1) == [[0, 2], [3, 1]]
    assert merge_threads([[0, 2], [3, 1]], 5, 1) == [[0, 2], [3, 1]]     # the same threads go on
    assert merge_threads([[0, 2], [3, 1]], 2, 4) == [[0, 2], [2, 4]]     # epochs 2.. retrained (resumed from 2)
    assert merge_threads([[0, 2], [3, 1]], 0, 1) == 1                    # afresh
    assert merge_threads(None, 3, 1) == [[3, 1]]                         # epochs 0..2 of unknown threads


def test_slurm_array_runs_the_plan_line_of_its_task(tmp_path):
    """Stage 2 task i runs the i-th command of the plan (0-based); stages 1 and 3 run every line in order."""
    plan = plan_argv(tmp_path, SEEDS="1 2")
    env = dict(os.environ, STUB_LOG=str(tmp_path / "calls.jsonl"))
    count = subprocess.run(["bash", SLURM, str(tmp_path / "study.plan"), "2", "--count"], capture_output=True,
                           text=True, env=env)
    assert count.stdout.strip() == str(len(plan[2])) == "8"
    for stage, task in ((1, None), (2, 5), (2, 0), (3, None)):
        (tmp_path / "calls.jsonl").unlink(missing_ok=True)
        task_env = dict(env, **({"SLURM_ARRAY_TASK_ID": str(task)} if task is not None else {}))
        p = subprocess.run(["bash", SLURM, str(tmp_path / "study.plan"), str(stage)], capture_output=True,
                           text=True, env=task_env)
        assert p.returncode == 0, p.stderr
        ran = [json.loads(l)["argv"] for l in (tmp_path / "calls.jsonl").read_text().splitlines()]
        assert ran == (plan[stage] if task is None else [plan[2][task]])
        assert p.stdout.splitlines()[-1 if task is not None else 0].startswith("+ ")


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


def test_each_sweep_keeps_its_plan_and_plan_txt_is_what_is_there(tmp_path):
    """Every sweep leaves a dated copy of its plan in OUT/plans; plan.txt is rewritten only by a sweep
    that OUT did not refuse, so that it keeps describing the runs in the folder; a TAG has its own."""
    out = tmp_path / "out"
    p, _ = stub_sweep(tmp_path, RATES="0.5")
    assert p.returncode == 0, p.stderr
    first = (out / "plan.txt").read_text()
    refused, _ = stub_sweep(tmp_path, RATES="0.5", EPOCHS="7")            # the full-data run: other settings
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert (out / "plan.txt").read_text() == first
    assert "plan.txt not rewritten" not in refused.stdout                  # stage 1 stopped the sweep before
    tagged, _ = stub_sweep(tmp_path, RATES="0.5", TAG="bs64", BATCH="64")
    assert tagged.returncode == 0, tagged.stderr
    copies = sorted((out / "plans").iterdir(), key=lambda f: f.stat().st_mtime_ns)
    assert len(copies) == 3 and copies[-1].name.endswith("-bs64.txt")
    texts = [c.read_text() for c in copies]
    assert texts[0] == first and "--epochs 7" in texts[1] and texts[2] == (out / "plan-bs64.txt").read_text()
    assert (out / "plan.txt").read_text() == first and "/random-bs64/r0.5/s42" in texts[2]
