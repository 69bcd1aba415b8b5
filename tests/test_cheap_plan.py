"""The cheap scoring sources and the equal-work controls in a study's plan (scripts/sweep.py ->
utils/study/plan.py, sources.py, equal_work.py, in-process: PLAN=FILE, nothing trained but in the
last test): PROXY_ARCH's and FRACTION's stage-1 runs, scorings and subset runs; EQUAL_WORK's rates
against the formula of utils/study/work.py by hand; the plan file's "# equal-work:" lines; each
mistake one line; and the planned lines of a FRACTION study run through the real scripts."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, cli, load_sweep

SWEEP = load_sweep()
SMALL = dict(DATASET="digits", ARCH="resnet20", EPOCHS="12", TRAJ="4", WIN="3", RATES="0.7", SEEDS="1 2")


@pytest.fixture
def sweep(sweep_plan):
    """sweep(**env) -> (status, stdout, stderr, {stage: [argv]}, plan file text): conftest.sweep_plan."""
    return sweep_plan


def arg(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def save(argv):
    return arg(argv, "--save_path")


def one_error(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("sweep.sh: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def parse_all(stages):
    """Every line of stages 1 and 2 parsed again by its script's own parser (and checks)."""
    parse = SWEEP.parsers()
    for argv in stages.get(1, []) + stages.get(2, []):
        parse[os.path.basename(argv[1])](argv[2:])


# ------------------------------------------------------------------------------------------ sources
def test_proxy_source_plans_its_run_scorings_and_subset_runs(sweep, tmp_path):
    out = tmp_path / "out"
    env = dict(METHODS="tdds el2n moderate random", RATES="0.7 0.9", SEEDS="1 2")
    status, _, err, plain, _ = sweep(**env)
    assert status == 0, err
    status, printed, err, st, _ = sweep(**env, PROXY_ARCH="resnet20")
    assert status == 0, err
    parse_all(st)
    # the reference's lines are all there, in their order; the proxy's come after them
    assert [a for a in st[1] if a in plain[1]] == plain[1] and [a for a in st[2] if a in plain[2]] == plain[2]
    run = st[1][len(plain[1])]
    assert run[1].endswith("train.py") and arg(run, "--arch") == "resnet20" and arg(run, "--batch-size") == "100"
    assert "--dynamics" in run and "--resume" in run and arg(run, "--manualSeed") == "1"
    assert save(run) == f"{out}/proxy-resnet20" and arg(run, "--stop_epoch") == "60"
    assert "--stop_epoch" not in plain[1][0]                     # moderate: the full-data run to the end, not the proxy
    scorings = {arg(a, "--method"): a for a in st[1][len(plain[1]) + 1:]}
    assert set(scorings) == {"tdds", "el2n"}                     # moderate reads the full-data model: no proxy copy
    reference = {arg(a, "--method"): a for a in plain[1][1:]}
    for m, a in scorings.items():
        assert arg(a, "--dynamics_path") == f"{out}/proxy-resnet20/npy"
        assert arg(a, "--mask_path") == f"{out}/masks-proxy-resnet20"
        assert a[a.index("--method"):] == reference[m][reference[m].index("--method"):]   # the same (T, K)
    proxy = [a for a in st[2] if a not in plain[2]]
    assert sorted({os.path.relpath(save(a), out) for a in proxy}) == sorted(
        f"{n}-proxy-resnet20/r{r}/s{s}" for n in ("tdds", "el2n") for r in ("0.7", "0.9") for s in (1, 2))
    for a in proxy:
        ref = next(b for b in plain[2] if save(b) == save(a).replace("-proxy-resnet20", ""))
        assert arg(a, "--mask_path") == arg(ref, "--mask_path").replace("/masks/", "/masks-proxy-resnet20/")
        assert arg(a, "--score_path") == arg(ref, "--score_path").replace("/masks/", "/masks-proxy-resnet20/")
        assert arg(a, "--arch") == "resnet18" and arg(a, "--batch-size") == arg(ref, "--batch-size")
    assert "moderate: no copy from PROXY_ARCH=resnet20 (moderate scores the trained full-data model" in printed
    assert "  scoring sources: resnet18 on all the data (masks); proxy resnet20 on all the data" in printed


def test_fraction_source_and_suffixes(sweep, tmp_path):
    out = tmp_path / "out"
    status, printed, err, st, text = sweep(METHODS="tdds random", SELECTIONS="top beta", RATES="0.9", FRACTION="0.20",
                                           EXTRAPOLATE_K="5", BUDGET="iterations", TAG="v")
    assert status == 0, err
    parse_all(st)
    run = next(a for a in st[1] if save(a) == f"{out}/fraction-0.2")
    assert arg(run, "--train_fraction") == "0.2" and arg(run, "--arch") == "resnet18" and "--dynamics" in run
    assert arg(run, "--stop_epoch") == "10"
    scorings = [a for a in st[1] if arg(a, "--dynamics_path") == f"{out}/fraction-0.2/npy"]
    assert [arg(a, "--method") for a in scorings] == ["tdds", "dual"]      # beta: dual's mean p_y too
    assert all(arg(a, "--extrapolate_k") == "5" and arg(a, "--mask_path") == f"{out}/masks-fraction-0.2"
               for a in scorings)
    assert not any("--extrapolate_k" in a for a in st[1] if a not in scorings)
    names = {os.path.relpath(save(a), out).split("/")[0] for a in st[2]}
    assert names == {"tdds-iters-v", "tdds-beta-iters-v", "random-iters-v", "tdds-f0.2-iters-v",
                     "tdds-beta-f0.2-iters-v"}
    beta = next(a for a in st[2] if "tdds-beta-f0.2" in save(a))
    assert arg(beta, "--mean_p_path") == f"{out}/masks-fraction-0.2/mean_p_dual_ep10.npy"
    assert "FRACTION='0.2' EXTRAPOLATE_K='5' TAG=v" in text
    status, printed, err, st, _ = sweep(METHODS="el2n", RATES="0.9", FRACTION="0.5")
    assert status == 0 and not any("--extrapolate_k" in a for a in st[1])   # importance_evaluation.py's default
    assert "(k=10, the default;" in printed


def test_plans_without_the_new_variables_are_unchanged(sweep):
    env = dict(METHODS="tdds el2n random", RATES="0.5 0.9")
    plain = sweep(**env)[4]
    assert sweep(**env, EQUAL_WORK="0")[4] == plain
    assert "equal-work" not in plain and "PROXY" not in plain


# ------------------------------------------------------------------------------------------ equal work
def header(text):
    return [l.split()[2:] for l in text.splitlines() if l.startswith("# equal-work: ")]


def test_equal_work_rate_by_hand(sweep, tmp_path):
    """T=4 of E=12 epochs at rate 0.7 on the target: w = 4/12 + 0.3 = 0.6333, r' = 1 - w = 0.37."""
    out = tmp_path / "out"
    status, printed, err, st, text = sweep(**SMALL, METHODS="el2n forgetting random", EQUAL_WORK="1")
    assert status == 0, err
    parse_all(st)
    assert header(text) == [[f"{out}/{m}/r0.7", "0.6333", f"{out}/random-ew/r0.37", f"{out}/rs2-ew/r0.37"]
                            for m in ("el2n", "forgetting")]
    controls = [a for a in st[2] if "-ew/" in save(a)]                     # one per distinct r' and seed
    assert sorted(os.path.relpath(save(a), out) for a in controls) == [
        f"{n}/r0.37/s{s}" for n in ("random-ew", "rs2-ew") for s in (1, 2)]
    rand, rs2 = controls[0], controls[-1]
    assert rand[1].endswith("train_subset.py") and arg(rand, "--selection") == "random"
    assert arg(rand, "--subset_rate") == "0.37" and arg(rand, "--batch-size") == "128"
    assert rs2[1].endswith("train.py") and arg(rs2, "--dynamic") == "rs2" and arg(rs2, "--dynamic_ratio") == "0.37"
    assert arg(rs2, "--batch-size") == "100" and "--dynamics" not in rs2
    assert "EQUAL_WORK=1: 2 static point(s); controls at rate(s) 0.37: 2 random-ew and 2 rs2-ew run(s)" in printed
    assert "  equal work: 2 static point(s), 0 without a control" in printed


def test_equal_work_of_the_cheap_sources_by_hand(sweep, tmp_path):
    """A proxy's dynamics cost work_factor passes of the target; a fraction f trains f of the data and
    reads every sample forward once (forward_share / E); each subset architecture its own factors."""
    from utils.training.flops import forward_share, work_factor
    out = tmp_path / "out"
    status, _, err, st, text = sweep(**SMALL, METHODS="el2n", PROXY_ARCH="resnet32", FRACTION="0.5",
                                     SUBSET_ARCHS="resnet20 resnet32", EQUAL_WORK="1")
    assert status == 0, err
    rows = {os.path.relpath(r[0], out): r[1:] for r in header(text)}
    expected = {}
    for arch in ("resnet20", "resnet32"):
        for name, src, f, forward in (("el2n", "resnet20", 1, False), ("el2n-proxy-resnet32", "resnet32", 1, False),
                                      ("el2n-f0.5", "resnet20", 0.5, True)):
            train = 1.0 if src == arch else work_factor(src, arch, 10, 32)
            share = forward_share(src, arch, 10, 32) if forward else 0.0
            w = 4 / 12 * f * train + share / 12 + 0.3
            r = "%g" % round(1 - w, 2)
            expected[f"{name}/{arch}/r0.7"] = [f"{w:.4f}", f"{out}/random-ew/{arch}/r{r}", f"{out}/rs2-ew/{arch}/r{r}"]
    assert rows == expected
    planned = {os.path.dirname(save(a)) for a in st[2] if "-ew/" in save(a)}
    assert planned == {p for v in expected.values() for p in v[1:]}      # each (arch, r') once, nothing more


def test_no_control_where_the_work_reaches_a_full_training(sweep, tmp_path):
    out = tmp_path / "out"
    status, printed, err, st, text = sweep(**{**SMALL, "TRAJ": "10", "RATES": "0.3 0.9"}, METHODS="el2n",
                                           EQUAL_WORK="1")
    assert status == 0, err
    # 10/12 + 0.7 = 1.5333: none; 10/12 + 0.1 = 0.9333: r' = 0.07
    assert header(text) == [[f"{out}/el2n/r0.3", "1.5333", "-", "-"],
                            [f"{out}/el2n/r0.9", "0.9333", f"{out}/random-ew/r0.07", f"{out}/rs2-ew/r0.07"]]
    assert {os.path.dirname(save(a)) for a in st[2] if "-ew/" in save(a)} == {f"{out}/random-ew/r0.07",
                                                                              f"{out}/rs2-ew/r0.07"}
    assert "1 point(s) without one (work >= one full-data training: the full-data run is their control): el2n/r0.3" \
        in printed


def test_equal_work_where_it_plans_nothing(sweep):
    status, printed, err, st, text = sweep(**SMALL, METHODS="el2n", EQUAL_WORK="1", BUDGET="iterations")
    assert status == 0, err
    assert not header(text) and not any("-ew/" in save(a) for a in st[2])
    assert "EQUAL_WORK=1 under BUDGET=iterations" in printed and "add random to METHODS" in printed
    for env, name in ((dict(METHODS="random", EQUAL_WORK="1"), "EQUAL_WORK"),
                      (dict(METHODS="el2n", EXTRAPOLATE_K="5"), "EXTRAPOLATE_K"),
                      (dict(METHODS="random", PROXY_ARCH="resnet32"), "PROXY_ARCH"),
                      (dict(METHODS="moderate", FRACTION="0.5"), "FRACTION")):
        status, printed, err, st, text = sweep(**{**SMALL, **env})
        assert status == 0, err
        assert f"note: {name} acts on nothing in this study" in printed, printed
        assert not header(text) and not any("proxy" in save(a) or "-f0" in save(a) for a in st.get(2, []))


def test_plain_equal_work_imports_no_torch():
    """EQUAL_WORK on the study's own ARCH needs no measured factor: the plan stays free of torch."""
    code = ("import sys; from utils.study.plan import make_plan; "
            "p = make_plan({'DATASET': 'digits', 'ARCH': 'resnet20', 'EPOCHS': '12', 'TRAJ': '4', 'RATES': '0.7', "
            "'METHODS': 'el2n', 'EQUAL_WORK': '1', 'PLAN': 'x', 'NGPU': '0'}); "
            "print(len(p.equal_work), 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.split() == ["1", "False"], p.stderr


# ------------------------------------------------------------------------------------------ mistakes
@pytest.mark.parametrize("env, message", [
    (dict(PROXY_ARCH="resnet20"), "PROXY_ARCH=resnet20 is ARCH itself"),
    (dict(PROXY_ARCH="resnet99"), "PROXY_ARCH: 'resnet99' is not an architecture of the scripts"),
    (dict(PROXY_ARCH="tv_nonet"), "PROXY_ARCH: 'tv_nonet'"),
    (dict(FRACTION="1"), "FRACTION: '1' is not a fraction"),
    (dict(FRACTION="0"), "FRACTION: '0'"),
    (dict(FRACTION="half"), "FRACTION: 'half'"),
    (dict(FRACTION="0.5", EXTRAPOLATE_K="0"), "EXTRAPOLATE_K: '0' is not a positive integer"),
    (dict(FRACTION="0.5", EXTRAPOLATE_K="2.5"), "EXTRAPOLATE_K: '2.5'"),
    (dict(EQUAL_WORK="yes"), "EQUAL_WORK: 'yes' is not 0 or 1"),
    (dict(EQUAL_WORK="1", KD="1", KD_ALPHA="1.0"), "EQUAL_WORK=1 with KD=1"),
    (dict(PROXY_ARCHS="resnet32"), "did you mean PROXY_ARCH?"),
    (dict(FRACTIONS="0.5"), "did you mean FRACTION?"),
    (dict(EQUALWORK="1"), "did you mean EQUAL_WORK?"),
    (dict(EXTRAPOLATE="5"), "did you mean EXTRAPOLATE_K?"),
])
def test_each_mistake_is_one_line(sweep, tmp_path, env, message):
    status, out, err, _, _ = sweep(**SMALL, METHODS="el2n random", **env)
    one_error(status, err, message)
    assert not (tmp_path / "study.plan").exists()


def test_a_variant_whose_flags_change_the_controls_says_so(sweep):
    """The controls' folders carry no TAG: a variant's flags that change a control plan it there all the
    same (its script refuses it where the study's own control of other settings is already done), and a note
    says so."""
    status, printed, err, st, _ = sweep(**SMALL, METHODS="el2n random", EQUAL_WORK="1", TAG="noisy",
                                        TRAIN_FLAGS="--label_noise 0.2")
    assert status == 0, err
    controls = [a for a in st[2] if "-ew/" in save(a)]
    assert controls and all(arg(a, "--label_noise") == "0.2" and "noisy" not in save(a) for a in controls)
    assert f"EQUAL_WORK: {len(controls)} equal-work control(s) planned with TAG=noisy's TRAIN_FLAGS=--label_noise 0.2" \
        in printed + err


def test_a_variant_whose_flags_leave_the_controls_alone_keeps_them(sweep, tmp_path):
    status, printed, err, st, text = sweep(**SMALL, METHODS="el2n random", EQUAL_WORK="1", TAG="unweighted",
                                           SUBSET_FLAGS="--no_score_weighting")
    assert status == 0, err
    controls = [save(a) for a in st[2] if "-ew/" in save(a)]
    assert len(controls) == 4 and all("unweighted" not in c for c in controls)
    assert header(text)[0][0] == f"{tmp_path}/out/el2n-unweighted/r0.7"


# ------------------------------------------------------------------------------------------ the lines run
def test_a_fraction_study_runs_its_planned_lines(sweep, tmp_path):
    """The planned stage-1 lines of the FRACTION source and one of its subset runs, through the real
    scripts (in-process): the scores extended to every sample, the subset run trained on them."""
    out = tmp_path / "out"
    status, _, err, st, _ = sweep(DATASET="digits", ARCH="resnet20", EPOCHS="1", TRAJ="1", RATES="0.5",
                                  METHODS="el2n", FRACTION="0.5", EXTRAPOLATE_K="3", SEEDS="1")
    assert status == 0, err
    lines = [a for a in st[1] if "fraction-0.5" in " ".join(a)] + \
            [a for a in st[2] if save(a) == f"{out}/el2n-f0.5/r0.5/s1"]
    assert [os.path.basename(a[1]) for a in lines] == ["train.py", "importance_evaluation.py", "train_subset.py"]
    for argv in lines:
        cli(argv[1], *argv[2:])
    n = 1437   # digits' training images
    assert len(np.load(out / "fraction-0.5" / "train_indices.npy")) == round(0.5 * n)
    assert np.load(out / "masks-fraction-0.5" / "dataset_score_el2n_ep1.npy").shape == (n,)
    assert (out / "el2n-f0.5" / "r0.5" / "s1" / "metrics.json").is_file()
