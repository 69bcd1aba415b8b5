"""The study's planner (utils/study/plan.py through scripts/sweep.py's main, in-process): what a new user
meets: misspelled variables, the settings printed first, TAG variants, what needs WIN or TRAJ, clamped
(T, K) said, report.py at the study's rates, and DYNAMIC (dynamic pruning runs beside the static ones)."""
import os

import pytest

from conftest import ROOT, load_sweep

SWEEP = load_sweep()


@pytest.fixture
def sweep(sweep_plan):
    """sweep(**env) -> (status, stdout, stderr, {stage: [argv]}) of a plan written in-process (conftest.sweep_plan)."""
    return lambda **env: sweep_plan(**env)[:4]


def arg(argv, flag):
    return argv[argv.index(flag) + 1]


def one_error(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("sweep.sh: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize("wrong, meant", [("EPOCH", "EPOCHS"), ("METHOD", "METHODS"), ("SEED", "SEEDS"),
                                          ("JOB", "JOBS"), ("epochs", "EPOCHS"), ("RATS", "RATES"),
                                          ("SUBSET_ARCH", "SUBSET_ARCHS"), ("DYANMIC", "DYNAMIC"),
                                          # issue 33.5: a known name plus (or less) a suffix, two slips in a long one
                                          ("DYNAMIC_RATIO", "DYNAMIC_RATIOS"), ("DYNAMIC_RATE", "DYNAMIC_RATIOS"),
                                          ("DYNAMIC_DELTAS", "DYNAMIC_DELTA"), ("BATCH_SIZE", "BATCH"),
                                          ("KD_TEMPERATURE", "KD"), ("SUBSETFLAGS", "SUBSET_FLAGS"),
                                          ("DYNAMICS_RATIO", "DYNAMIC_RATIOS"), ("TAGS", "TAG")])
def test_a_misspelled_variable_is_named(sweep, tmp_path, wrong, meant):
    status, out, err, _ = sweep(**{wrong: "8"})
    one_error(status, err, f"{wrong} is not a variable of the sweep: did you mean {meant}?")
    assert out == "" and not (tmp_path / "study.plan").exists()


def test_the_environment_of_a_shell_is_not_a_misspelling(sweep):
    common = {k: "x" for k in ("PATH", "HOME", "PYTHONPATH", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TERM", "PWD",
                               "OLDPWD", "SHELL", "USER", "LANG", "HOSTNAME", "TMPDIR", "SLURM_JOB_ID", "OUTPUT",
                               "CUDA_PATH", "LD_LIBRARY_PATH", "MAKEFLAGS", "CXXFLAGS", "LDFLAGS", "PYTHON_GIL",
                               "PYTHON_COLORS", "PYTHONUNBUFFERED", "MKL_NUM_THREADS", "SLURM_ARRAY_TASK_ID",
                               "CONDA_PREFIX", "VIRTUAL_ENV", "MASTER_ADDR", "WORLD_SIZE", "LOCAL_RANK", "MANPATH",
                               "INFOPATH", "LS_COLORS", "DISPLAY", "TORCH_HOME", "HF_HOME", "MPLBACKEND", "LOGNAME")}
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
    status, printed, err, tagged = sweep(METHODS="tdds random", RATES="0.9", DYNAMIC="rs2", TAG="bs64", BATCH="64")
    assert status == 0, err
    assert tagged[1] == plain[1] and tagged[3] == plain[3]                 # one full-data run, one scoring
    assert [arg(a, "--save_path") for a in tagged[2]] == [
        f"{out}/tdds-bs64/r0.9/s42", f"{out}/random-bs64/r0.9/s42", f"{out}/rs2-bs64/r0.9/s42"]
    assert [arg(a, "--save_path") for a in plain[2]] == [f"{out}/tdds/r0.9/s42", f"{out}/random/r0.9/s42",
                                                         f"{out}/rs2/r0.9/s42"]
    assert "TAG=bs64" in printed and "not planned" not in printed       # no flag variable: nothing to judge by
    for bad in ("a/b", "-x", "with space"):
        status, _, err, _ = sweep(TAG=bad)
        one_error(status, err, "TAG")


def test_a_variant_plans_only_the_runs_its_flags_change(sweep, tmp_path):
    """Issue 33.3: TAG=unweighted SUBSET_FLAGS=--no_score_weighting on a study of TDDS, random, InfoBatch and
    RS2 plans the 4 TDDS runs only: the flag acts on nothing with random selection (the run folders'
    identity rule, utils.args.without_unused) and does not reach the dynamic runs; the plan says so and
    lists the 12 shared runs."""
    out = tmp_path / "out"
    study = dict(METHODS="tdds random", DYNAMIC="infobatch rs2", RATES="0.7 0.9", SEEDS="1 2")
    _, _, _, plain = sweep(**study)
    assert len(plain[2]) == 16
    status, printed, err, tagged = sweep(**study, TAG="unweighted", SUBSET_FLAGS="--no_score_weighting")
    assert status == 0, err
    assert sorted(arg(a, "--save_path") for a in tagged[2]) == sorted(
        f"{out}/tdds-unweighted/r{r}/s{s}" for r in ("0.7", "0.9") for s in (1, 2))
    note = next(l for l in printed.splitlines() if l.startswith("TAG=unweighted: "))
    assert "12 of 16 runs not planned" in note and "4 run(s): --no_score_weighting acts on nothing with " \
        "--selection random" in note and "8 run(s): SUBSET_FLAGS do not reach train.py's dynamic runs" in note, note
    assert "stage 2 4 training run(s)" in printed
    text = (tmp_path / "study.plan").read_text()
    shared = [l.split()[2:] for l in text.splitlines() if l.startswith("# shared: ")]
    assert len(shared) == 12 and [f"{out}/random-unweighted/r0.7/s1", f"{out}/random/r0.7/s1"] in shared
    assert [f"{out}/rs2-unweighted/r0.9/s2", f"{out}/rs2/r0.9/s2"] in shared
    # a flag that acts on every subset run, not on the dynamic ones
    status, printed, err, tagged = sweep(**study, TAG="wd", SUBSET_FLAGS="--decay 0.001")
    assert status == 0 and len(tagged[2]) == 8 and "8 of 16 runs not planned" in printed, err
    # TRAIN_FLAGS reach every run: nothing is shared
    status, printed, err, tagged = sweep(**study, TAG="noisy", TRAIN_FLAGS="--label_noise 0.2")
    assert status == 0 and len(tagged[2]) == 16 and "not planned" not in printed, err
    # a flag that is no run's identity (how often it logs) changes no run at all
    status, printed, _, tagged = sweep(**study, TAG="quiet", TRAIN_FLAGS="--print_freq 5")
    assert status == 0 and 2 not in tagged and "16 of 16 runs not planned" in printed
    assert "--print_freq is not part of a run's identity" in printed


def test_flags_per_script(sweep, tmp_path):
    """Issue 33.4: FULL_FLAGS reach the full-data run only, SUBSET_FLAGS the subset runs, DYNAMIC_FLAGS the
    dynamic runs, TRAIN_FLAGS all three; DYNAMIC_RATIOS and DYNAMIC_DELTA set the dynamic runs' ratio(s)
    and InfoBatch's delta."""
    out = tmp_path / "out"
    status, printed, err, st = sweep(METHODS="el2n random", DYNAMIC="infobatch rs2", RATES="0.9", FULL_FLAGS="--decay 0.001",
                                     SUBSET_FLAGS="--class_balanced", DYNAMIC_FLAGS="--momentum 0.8",
                                     TRAIN_FLAGS="--label_noise 0.1", DYNAMIC_RATIOS="0.3 0.50", DYNAMIC_DELTA="0.5")
    assert status == 0, err
    full, = [a for a in st[1] if a[1].endswith("train.py")]
    subset = [a for a in st[2] if a[1].endswith("train_subset.py")]
    dynamic = [a for a in st[2] if "--dynamic" in a]
    assert arg(full, "--decay") == "0.001" and arg(full, "--label_noise") == "0.1" and "--momentum" not in full
    assert all("--class_balanced" in a and "--decay" not in a and arg(a, "--label_noise") == "0.1" for a in subset)
    assert all(arg(a, "--momentum") == "0.8" and "--class_balanced" not in a and "--decay" not in a for a in dynamic)
    assert sorted((arg(a, "--dynamic"), arg(a, "--dynamic_ratio")) for a in dynamic) == [
        ("infobatch", "0.3"), ("infobatch", "0.5"), ("rs2", "0.3"), ("rs2", "0.5")]
    assert {arg(a, "--save_path") for a in dynamic} == {f"{out}/{m}/r{r}/s42" for m in ("infobatch", "rs2")
                                                        for r in ("0.3", "0.5")}
    assert all((arg(a, "--dynamic_delta") if "--dynamic_delta" in a else None) ==
               ("0.5" if arg(a, "--dynamic") == "infobatch" else None) for a in dynamic)
    assert "at ratios 0.3 0.5" in printed


def test_a_flag_a_script_refuses_is_refused_at_plan_time(sweep, tmp_path):
    """Issue 33.4: every planned line is parsed by its own script's parser before anything is written; a
    refusal names the variable the words came from (and TRAIN_FLAGS, which reach every training run)."""
    status, _, err, _ = sweep(METHODS="tdds random", DYNAMIC="infobatch", RATES="0.9", TRAIN_FLAGS="--dynamic_delta 0.5")
    one_error(status, err, "TRAIN_FLAGS: train_subset.py refuses '--dynamic_delta 0.5': unrecognized arguments",
              "DYNAMIC_DELTA")
    assert not (tmp_path / "study.plan").exists()
    status, _, err, _ = sweep(METHODS="random", RATES="0.9", TRAIN_FLAGS="--dynamic infobatch")
    one_error(status, err, "TRAIN_FLAGS: train_subset.py refuses '--dynamic infobatch'")
    for variable in ("TRAIN_FLAGS", "FULL_FLAGS"):   # the full-data run's dynamics would not hold every sample
        status, _, err, _ = sweep(METHODS="tdds", RATES="0.9", **{variable: "--dynamic infobatch"})
        one_error(status, err, f"{variable}: --dynamic infobatch would make the full-data run prune")
    status, _, err, _ = sweep(METHODS="tdds", RATES="0.9", SUBSET_FLAGS="--selection ccs")
    one_error(status, err, "SUBSET_FLAGS: --selection is set by the sweep itself", "SELECTIONS")
    status, _, err, _ = sweep(METHODS="tdds", RATES="0.9", SUBSET_FLAGS="--momentum x")
    one_error(status, err, "SUBSET_FLAGS: train_subset.py refuses '--momentum x': argument --momentum: invalid float")
    status, _, err, _ = sweep(METHODS="tdds", RATES="0.9", EVAL_FLAGS="--chunk_size")
    one_error(status, err, "EVAL_FLAGS: importance_evaluation.py refuses '--chunk_size'")
    status, _, err, _ = sweep(METHODS="random", RATES="0.9", SUBSET_FLAGS="--learning_rate -1")
    one_error(status, err, "SUBSET_FLAGS", "--learning_rate must be positive")
    status, _, err, _ = sweep(DYNAMIC="rs2", METHODS="none", DYNAMIC_FLAGS="--dynamic_ratio 0.2")
    one_error(status, err, "DYNAMIC_FLAGS: --dynamic_ratio is set by the sweep itself")
    # what the scripts accept goes through: the learning rate has no variable of its own
    status, _, err, st = sweep(METHODS="random", RATES="0.9", SUBSET_FLAGS="--learning_rate 0.05")
    assert status == 0 and st[2][0][-2:] == ["--learning_rate", "0.05"], err


def test_a_dynamic_only_study(sweep, tmp_path):
    """Issue 33.4: METHODS=none (or an empty METHODS with DYNAMIC) plans the dynamic runs alone, the full-data
    run only for FULL_ACC=1, and no report (nothing is scored); the variables that then act on nothing are
    notes."""
    out = tmp_path / "out"
    for methods in ("none", "", " "):
        status, printed, err, st = sweep(METHODS=methods, DYNAMIC="infobatch rs2", RATES="0.5 0.9")
        assert status == 0, err
        assert 1 not in st and len(st[2]) == 4 and all("--dynamic" in a for a in st[2])
        assert [a[1] for a in st[3]] == [os.path.join(ROOT, "scripts", "summarize.py")]
        assert "methods none" in printed
    status, printed, err, st = sweep(METHODS="none", DYNAMIC="rs2", RATES="0.5", FULL_ACC="1", SELECTIONS="ccs",
                                     DYNAMIC_DELTA="0.5", WIN="3")
    assert status == 0, err
    (full,) = st[1]
    assert arg(full, "--save_path") == f"{out}/full" and "--stop_epoch" not in full
    for name in ("SELECTIONS", "DYNAMIC_DELTA", "WIN"):
        assert any(l.startswith(f"note: {name} acts on nothing in this study") for l in printed.splitlines()), name
    status, _, err, st = sweep(METHODS="", RATES="0.9")                    # no DYNAMIC: the default methods
    assert status == 0 and len(st[2]) == 7, err
    status, _, err, _ = sweep(METHODS="none", RATES="0.9")
    one_error(status, err, "METHODS=none and no DYNAMIC")
    status, _, err, _ = sweep(METHODS="none tdds", RATES="0.9")
    one_error(status, err, "METHODS: 'none' stands alone")
    status, printed, _, _ = sweep(METHODS="tdds random", RATES="0.9", DYNAMIC_RATIOS="0.5", EVAL_FLAGS="--chunk_size 64")
    assert "note: DYNAMIC_RATIOS acts on nothing in this study (no DYNAMIC method)" in printed
    assert "EVAL_FLAGS acts on nothing" not in printed


@pytest.mark.parametrize("env, message", [
    (dict(NGPU="1", GPUS="abc"), "GPUS: 'abc' is not a GPU"),
    (dict(DYNAMIC="infobatch", DYNAMIC_RATIOS="0.3 1"), "DYNAMIC_RATIOS: '1'"),
    (dict(DYNAMIC="infobatch", DYNAMIC_DELTA="2"), "DYNAMIC_DELTA: '2'"),
    (dict(DATASET="cifar1000"), "DATASET: unknown data set 'cifar1000'"),
])
def test_values_checked_before_anything_runs(sweep, env, message):
    """Issue 33.5: NGPU=1 GPUS=abc, a ratio or a delta out of range, an unknown data set: one line, exit 2."""
    status, _, err, _ = sweep(RATES="0.9", **env)
    one_error(status, err, message)


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


def test_the_records_answer_as_the_scripts_decide(full_run, cifar10_dir, tmp_path):
    """Issue 33.6: utils/study/records.py answers "done" from the folders' records, in-process, exactly where
    the scripts say "already ..." (and never where they would train or refuse): a finished training run, a
    finished scoring, a finished subset run; other settings, a changed input file or a record of another
    device are not done."""
    import json
    import shutil

    from conftest import FULL_RUN, cli, folder_digest
    from utils.study.records import run_done, scoring_done
    parse = SWEEP.parsers()
    run = str(tmp_path / "full")
    shutil.copytree(full_run, run)
    full = ["--data_path", cifar10_dir, *FULL_RUN, "--save_path", run, "--resume"]
    before = folder_digest(run)
    assert run_done(parse["train.py"](full), "train.py")["finished"]
    assert "already finished" in cli("train.py", *full).out                  # the script: the same answer
    assert run_done(parse["train.py"](full + ["--decay", "0.001"]), "train.py") is None
    assert run_done(parse["train.py"](full + ["--epochs", "6"]), "train.py") is None
    assert folder_digest(run) == before                                         # read-only, no lock left
    masks = str(tmp_path / "masks")
    score = ["--dynamics_path", f"{run}/npy", "--mask_path", masks, "--method", "el2n", "--trajectory_len", "3", "4"]
    assert scoring_done(parse["importance_evaluation.py"](score)) is None      # not scored yet
    cli("importance_evaluation.py", *score)
    assert len(scoring_done(parse["importance_evaluation.py"](score))) == 2
    assert "already scored" in cli("importance_evaluation.py", *score).out
    assert scoring_done(parse["importance_evaluation.py"](score[:-2] + ["5"])) is None   # T=5: not scored
    subset = ["--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet20", "--epochs", "2", "--batch-size",
              "32", "--ngpu", "0", "--subset_rate", "0.5", "--mask_path", f"{masks}/data_mask_el2n_ep3.npy",
              "--score_path", f"{masks}/score_el2n_ep3.npy", "--save_path", str(tmp_path / "sub"), "--resume"]
    assert run_done(parse["train_subset.py"](subset), "train_subset.py") is None   # not trained yet
    cli("train_subset.py", *subset)
    assert run_done(parse["train_subset.py"](subset), "train_subset.py")["finished"]
    assert "already finished" in cli("train_subset.py", *subset).out
    other = [a.replace("el2n_ep3", "el2n_ep4") for a in subset]               # other scores: the script retrains
    assert run_done(parse["train_subset.py"](other), "train_subset.py") is None
    state = json.loads((tmp_path / "sub" / "folder.json").read_text())
    state["fingerprint"]["device"] = "cuda"                                     # trained elsewhere
    (tmp_path / "sub" / "folder.json").write_text(json.dumps(state))
    assert run_done(parse["train_subset.py"](subset), "train_subset.py") is None
    info = tmp_path / "masks" / "info_el2n_ep3.json"
    record = json.loads(info.read_text())
    record["scoring"]["labels"] = "sha256 0000"                                 # scored with other labels
    info.write_text(json.dumps(record))
    assert scoring_done(parse["importance_evaluation.py"](score)) is None


def test_stage_three_is_not_rerun_when_nothing_it_reads_changed(tmp_path):
    """Issue 33.6: the summary and the report of a re-run study that started no process are not made again
    while they are newer than every file they read (and than the code); a newer file, or other rates of
    the report, make them run."""
    import json
    import time

    from utils.study.records import summary_fresh
    out, masks = tmp_path / "out", tmp_path / "out" / "masks"
    (out / "tdds" / "r0.5" / "s1").mkdir(parents=True)
    (masks / "report").mkdir(parents=True)
    old = time.time() - 100
    for f in (out / "tdds" / "r0.5" / "s1" / "metrics.json", masks / "info_win3_ep3.json", out / "plan.txt"):
        f.write_text("{}")
        os.utime(f, (old, old))
    summarize = ["python", os.path.join(ROOT, "scripts", "summarize.py"), str(out)]
    report = ["python", os.path.join(ROOT, "scripts", "report.py"), str(masks), "--rates", "0.5", "0.8"]
    assert not summary_fresh(summarize) and not summary_fresh(report)          # never written
    for f in ("results.md", "results.csv"):
        (out / f).write_text("")
    (masks / "report" / "report.md").write_text("")
    (masks / "report" / "class_counts.json").write_text(json.dumps({"win3_ep3": {"0.5": {}, "0.8": {}}}))
    (out / "plans").mkdir()
    (out / "plans" / "today.txt").write_text("")                                 # every sweep's dated copy
    assert summary_fresh(summarize) and summary_fresh(report)
    assert not summary_fresh(report[:-1])                                        # other rates
    (out / "tdds" / "r0.5" / "s1" / "metrics.json").write_text("{}")           # a run rewritten since
    assert not summary_fresh(summarize) and summary_fresh(report)
    (masks / "info_win3_ep3.json").write_text("{}")                             # a scoring rewritten since
    assert not summary_fresh(report)


def test_messages_round_their_numbers(capsys):
    """Issue 33.8: "already finished ... (final 9.722222222222221%)" prints 9.72%, from the script and from the
    sweep's records alike."""
    from argparse import Namespace

    from utils.protocol.run import already_done
    from utils.study.records import done_text
    metrics = {"finished": True, "final_acc": 9.722222222222221, "best_acc": 13.333333333333334}
    already_done(Namespace(save_path="/out/random/r0.8/s2"), metrics)
    assert "(final 9.72%, best 13.33%)" in capsys.readouterr().out
    assert "(final 9.72%, best 13.33%)" in done_text("/out/random/r0.8/s2", metrics)


def test_the_iteration_budget_evaluates_on_a_schedule(sweep):
    """Issue 33.10: BUDGET=iterations trains ~1/(1 - r) short epochs at rate r; by default the subset runs then
    evaluate every round(1/(1 - r)) epochs (the last always), and the epochs budget after every epoch."""
    def every(**env):
        status, _, err, stages = sweep(DATASET="digits", EPOCHS="4", TRAJ="3", WIN="3", RATES="0.5 0.9",
                                       METHODS="random", **env)
        assert status == 0, err
        return {arg(a, "--subset_rate"): (arg(a, "--eval_every") if "--eval_every" in a else None,
                                          arg(a, "--batch-size")) for a in stages[2]}
    assert every(BUDGET="iterations") == {"0.5": ("2", "128"), "0.9": ("10", "32")}
    assert every() == {"0.5": (None, "128"), "0.9": (None, "32")}
    assert every(BUDGET="iterations", RATE_FLAGS="") == {"0.5": (None, "128"), "0.9": (None, "128")}
