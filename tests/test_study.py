"""The study's planner (utils/study/plan.py through scripts/sweep.py's main, in-process): what a new user
meets: misspelled variables, the settings printed first, TAG variants, what needs WIN or TRAJ, clamped
(T, K) said, report.py at the study's rates, and DYNAMIC (dynamic pruning runs beside the static ones)."""
import importlib.util
import os
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("sweep_entry_study", os.path.join(ROOT, "scripts", "sweep.py"))
SWEEP = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SWEEP)


@pytest.fixture
def sweep(tmp_path, capsys):
    """sweep(**env) -> (status, stdout, stderr, {stage: [argv]}) of a plan written in-process."""
    def run(**env):
        path = tmp_path / "study.plan"
        path.unlink(missing_ok=True)
        full = {"PLAN": str(path), "NGPU": "0", "OUT": str(tmp_path / "out"), **env}
        capsys.readouterr()
        status = SWEEP.main(environ=full, cwd=str(tmp_path))
        o = capsys.readouterr()
        stages, cur = {}, None
        for line in path.read_text().splitlines() if path.exists() else []:
            if line.startswith("# stage "):
                cur = int(line.split()[2])
            elif line and not line.startswith("#"):
                stages.setdefault(cur, []).append(shlex.split(line))
        return status, o.out, o.err, stages
    return run


def arg(argv, flag):
    return argv[argv.index(flag) + 1]


def one_error(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("sweep.sh: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize("wrong, meant", [("EPOCH", "EPOCHS"), ("METHOD", "METHODS"), ("SEED", "SEEDS"),
                                          ("JOB", "JOBS"), ("epochs", "EPOCHS"), ("RATS", "RATES"),
                                          ("SUBSET_ARCH", "SUBSET_ARCHS"), ("DYANMIC", "DYNAMIC")])
def test_a_misspelled_variable_is_named(sweep, tmp_path, wrong, meant):
    status, out, err, _ = sweep(**{wrong: "8"})
    one_error(status, err, f"{wrong} is not a variable of the sweep: did you mean {meant}?")
    assert out == "" and not (tmp_path / "study.plan").exists()


def test_the_environment_of_a_shell_is_not_a_misspelling(sweep):
    common = {k: "x" for k in ("PATH", "HOME", "PYTHONPATH", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TERM", "PWD",
                               "OLDPWD", "SHELL", "USER", "LANG", "HOSTNAME", "TMPDIR", "SLURM_JOB_ID", "OUTPUT")}
    status, _, err, _ = sweep(**common, RATES="0.9")
    assert status == 0, err


def test_the_settings_and_the_run_counts_come_first(sweep):
    status, out, _, st = sweep(METHODS="tdds el2n random", RATES="0.5 0.9", SEEDS="1 2", EPOCHS="8", JOBS="2")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("study: cifar100 / resnet18, 8 epochs, pruning rates 0.5 0.9, seeds 1 2")
    assert f"runs: stage 1 {len(st[1])} command(s)" in lines[2] and f"stage 2 {len(st[2])} training run(s)" in lines[2]
    assert len(st[2]) == 3 * 2 * 2
    # the (T, K) used per rate, and why: reported (70, 10) and (10, 5), clamped to the 8 epochs
    assert "  rate 0.5: T=8, K=8 (T reported, K reported; clamped: T=70 exceeds the 8 epochs of the full-data run, " \
           "K=10 exceeds T=8)" in lines
    assert "  rate 0.9: T=8, K=5 (T reported, K reported; clamped: T=10 exceeds the 8 epochs of the full-data run)" \
        in lines
    assert lines.index("  rate 0.9: T=8, K=5 (T reported, K reported; clamped: T=10 exceeds the 8 epochs of the "
                       "full-data run)") < [i for i, l in enumerate(lines) if l.startswith("plan: ")][0]


def test_win_only_where_a_window_is_used(sweep):
    # EL2N alone at a rate without a reported (T, K): only T is needed
    status, _, err, _ = sweep(METHODS="el2n random", RATES="0.65")
    one_error(status, err, "set TRAJ")
    assert "WIN" not in err
    status, out, err, st = sweep(METHODS="el2n random", RATES="0.65", TRAJ="12")
    assert status == 0, err
    (el2n,) = st[1][1:]
    assert arg(el2n, "--trajectory_len") == "12" and "--window_size" not in el2n
    assert "  rate 0.65: T=12 (T from TRAJ)" in out.splitlines()
    # no window in the study: K is neither used nor clamped nor spoken of
    status, out, err, _ = sweep(METHODS="el2n", RATES="0.5", EPOCHS="5")
    assert "  rate 0.5: T=5 (T reported; clamped: T=70 exceeds the 5 epochs of the full-data run)" in out.splitlines()
    # TDDS: TRAJ given, WIN asked for alone; both missing: both
    status, _, err, _ = sweep(METHODS="tdds", RATES="0.65", TRAJ="12")
    one_error(status, err, "set WIN")
    assert "TRAJ" not in err
    status, _, err, _ = sweep(METHODS="tdds", RATES="0.65")
    one_error(status, err, "set TRAJ and WIN")


def test_tag_names_a_variant_beside_the_study(sweep, tmp_path):
    out = tmp_path / "out"
    _, _, _, plain = sweep(METHODS="tdds random", RATES="0.9", DYNAMIC="rs2")
    status, printed, err, tagged = sweep(METHODS="tdds random", RATES="0.9", DYNAMIC="rs2", TAG="unweighted",
                                         SUBSET_FLAGS="--no_score_weighting")
    assert status == 0, err
    assert tagged[1] == plain[1] and tagged[3] == plain[3]                 # one full-data run, one scoring
    assert [arg(a, "--save_path") for a in tagged[2]] == [
        f"{out}/tdds-unweighted/r0.9/s42", f"{out}/random-unweighted/r0.9/s42", f"{out}/rs2-unweighted/r0.9/s42"]
    assert [arg(a, "--save_path") for a in plain[2]] == [f"{out}/tdds/r0.9/s42", f"{out}/random/r0.9/s42",
                                                         f"{out}/rs2/r0.9/s42"]
    assert "TAG=unweighted" in printed
    for bad in ("a/b", "-x", "with space"):
        status, _, err, _ = sweep(TAG=bad)
        one_error(status, err, "TAG")


def test_report_shows_the_study_rates(sweep):
    _, _, _, st = sweep(METHODS="el2n", RATES="0.25 0.6", TRAJ="5")
    report = [a for a in st[3] if a[1].endswith("report.py")][0]
    assert report[report.index("--rates") + 1:] == ["0.25", "0.6"]


def test_dynamic_runs_in_stage_two(sweep, tmp_path):
    """DYNAMIC: one full-data train.py run per (method, rate, architecture, seed), --dynamic_ratio = the
    rate, folders named like the others; they need no dynamics (random + DYNAMIC: no stage 1)."""
    out = tmp_path / "out"
    status, printed, err, st = sweep(METHODS="random", DYNAMIC="infobatch rs2 rs2", RATES="0.3 0.7", SEEDS="1 2",
                                     FULL_BATCH="64", TRAIN_FLAGS="--label_noise 0.1", SUBSET_FLAGS="--class_balanced")
    assert status == 0, err
    assert 1 not in st and "dynamic infobatch rs2" in printed
    dynamic = [a for a in st[2] if a[1].endswith("/train.py")]
    assert len(dynamic) == 2 * 2 * 2 and len(st[2]) == len(dynamic) + 2 * 2
    for a in dynamic:
        method, rate, seed = (arg(a, f) for f in ("--dynamic", "--dynamic_ratio", "--manualSeed"))
        assert arg(a, "--save_path") == f"{out}/{method}/r{rate}/s{seed}"
        assert arg(a, "--batch-size") == "64" and arg(a, "--label_noise") == "0.1" and "--resume" in a
        assert "--dynamics" not in a and "--class_balanced" not in a and "--subset_rate" not in a
    # several architectures: kept apart like the subset runs
    _, _, _, st = sweep(METHODS="random", DYNAMIC="infobatch", RATES="0.5", SUBSET_ARCHS="resnet18 resnet20")
    assert {arg(a, "--save_path") for a in st[2] if "--dynamic" in a} == {
        f"{out}/infobatch/resnet18/r0.5/s42", f"{out}/infobatch/resnet20/r0.5/s42"}
    status, _, err, _ = sweep(DYNAMIC="infobatch grand")
    one_error(status, err, "DYNAMIC", "grand")


def test_arguments_are_refused_not_ignored(tmp_path, capsys):
    """`sweep.sh --epochs 8` would otherwise run the default study (hours): one line, exit 2."""
    assert SWEEP.main(environ={"PLAN": str(tmp_path / "p")}, cwd=str(tmp_path), argv=["--epochs", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unrecognized arguments: --epochs 8")
    assert not (tmp_path / "p").exists()
    assert SWEEP.main(environ={}, cwd=str(tmp_path), argv=["--help"]) == 0
    assert "RATE_FLAGS [0.8:--batch-size 64 0.9:--batch-size 32]" in capsys.readouterr().out.replace("\n", " ")


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status = SWEEP.main(environ={"OUT": str(tmp_path / "file" / "out"), "NGPU": "0", "RATES": "0.9"},
                        cwd=str(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("sweep.sh: error: cannot create OUT "), err
