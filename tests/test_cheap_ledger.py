"""The summary's ledger of cheap static scores, on a fake study in the on-disk formats the summary reads
(metrics.json, folder.json, the mask folders' dataset_score / data_mask / info files, plan.txt): work
across architectures and fractions from the formula, forward-only passes at their measured share,
amortised work, rank fidelity against scipy and numpy, and the equal-work table from the plan's
header lines. A study without them keeps its results.md (tests/test_summarize.py)."""
import csv
import json
import os

import numpy as np
import pytest
from scipy.stats import spearmanr

from test_summarize import FAKE_RUNS, load_summarize, parse_md_table, write_metrics
from utils.protocol.fingerprint import file_sha256
from utils.training.flops import forward_share, input_size, work_factor

N, E, T = 100, 10, 4
TARGET, PROXY, C = "resnet32", "resnet20", 10
F = 0.2                      # the fraction source trains 20 of the 100 samples


def history(samples):
    return [{"epoch": e, "samples": s, "train_seconds": 1.0} for e, s in enumerate(samples)]


def write_run(out, run, fingerprint=None, **fields):
    """metrics.json (and folder.json with the run's fingerprint) as train.py / train_subset.py write them."""
    folder = os.path.join(out, run)
    os.makedirs(folder, exist_ok=True)
    m = dict(best_acc=fields["final_acc"] + 0.5, epochs=E, seed=1, dataset="digits", arch=TARGET, selection="top",
             class_balanced=False, finished=True, completed_epochs=E, train_seconds=float(E))
    m.update(fields)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(m, f)
    state = "finished" if m["finished"] else "stopped"
    with open(os.path.join(folder, "folder.json"), "w") as f:
        json.dump({"state": state, "fingerprint": fingerprint or {"--manualSeed": m["seed"], "run": run.split("/s")[0]},
                   "completed_epochs": m["completed_epochs"]}, f)


def write_scoring(out, folder, tag, score, **info):
    """dataset_score_<tag>.npy, data_mask_<tag>.npy and info_<tag>.json (written last, with the arrays'
    sha256), as importance_evaluation.py writes a scoring; returns the info."""
    d = os.path.join(out, folder)
    os.makedirs(d, exist_ok=True)
    files = {"dataset_score": f"dataset_score_{tag}.npy", "mask": f"data_mask_{tag}.npy"}
    np.save(os.path.join(d, files["dataset_score"]), score.astype(np.float32))
    np.save(os.path.join(d, files["mask"]), np.argsort(score, kind="stable").astype(np.int64))
    info = {"method": "tdds", "tag": tag, "num_samples": N, "num_classes": C, "dataset": "digits", "seconds": 0.5,
            "files": files, "sha256": {k: file_sha256(os.path.join(d, v)) for k, v in files.items()}, **info}
    with open(os.path.join(d, f"info_{tag}.json"), "w") as f:
        json.dump(info, f)
    return info


def subset(out, run, folder, info, rate, acc, seed=1, **fields):
    """A train_subset.py run on the mask of `info` at `rate`."""
    kept = N - int(rate * N)
    write_run(out, run, {"--manualSeed": seed, "content of --mask_path": info["sha256"]["mask"], "--subset_rate": rate},
              method=info["method"], subset_rate=rate, final_acc=acc, seed=seed, score_info=info,
              scored_arch=info.get("arch"), mask_path=os.path.join(out, folder, info["files"]["mask"]),
              num_train_samples=kept, full_train_samples=N, history=history([kept] * E), **fields)


@pytest.fixture
def study(tmp_path):
    """A study of TARGET on digits: the reference scoring (masks/, T=4 and T=2), a proxy PROXY's
    (masks-proxy-resnet20/: its scores reverse the reference's order), a fraction F's with extrapolated
    scores (masks-fraction-0.2/: the reference's scores exactly), their subset runs at 50% (T=2 at
    70%), the equal-work controls and the plan's header lines."""
    out = str(tmp_path / "sweep")
    rng = np.random.default_rng(0)
    ref = rng.permutation(N).astype(np.float64)          # distinct values: ranks are the values themselves
    other_T = rng.permutation(N).astype(np.float64)
    write_run(out, "full", method="full", subset_rate=0.0, final_acc=90.0, num_train_samples=N,
              history=history([N] * E))
    write_run(out, f"proxy-{PROXY}", method="full", subset_rate=0.0, final_acc=40.0, arch=PROXY, num_train_samples=N,
              completed_epochs=T, finished=False, stopped=True, history=history([N] * T))
    write_run(out, f"fraction-{F:g}", method="fraction", selection="fraction", subset_rate=1 - F, train_fraction=F,
              final_acc=30.0, num_train_samples=int(F * N), full_train_samples=N, completed_epochs=T,
              finished=False, stopped=True, history=history([int(F * N)] * T))
    common = dict(trajectory_len=T, window_size=3, arch=TARGET)
    infos = {
        "ref": write_scoring(out, "masks", "win3_ep4", ref, dynamics_run=os.path.join(out, "full"), **common),
        "T2": write_scoring(out, "masks", "win3_ep2", other_T, dynamics_run=os.path.join(out, "full"),
                            **{**common, "trajectory_len": 2}),
        "proxy": write_scoring(out, f"masks-proxy-{PROXY}", "win3_ep4", -ref,
                               dynamics_run=os.path.join(out, f"proxy-{PROXY}"), **{**common, "arch": PROXY}),
        "fraction": write_scoring(out, f"masks-fraction-{F:g}", "win3_ep4", ref.copy(),
                                  dynamics_run=os.path.join(out, f"fraction-{F:g}"), train_fraction=F, extrapolate_k=10,
                                  scored_samples=int(F * N), feature_passes=N, feature_arch=TARGET, **common),
    }
    folders = {"ref": "masks", "T2": "masks", "proxy": f"masks-proxy-{PROXY}", "fraction": f"masks-fraction-{F:g}"}
    for seed, acc in ((1, 70.0), (2, 72.0)):
        subset(out, f"tdds/r0.5/s{seed}", "masks", infos["ref"], 0.5, acc, seed)
        subset(out, f"tdds-proxy-{PROXY}/r0.5/s{seed}", folders["proxy"], infos["proxy"], 0.5, acc - 5, seed)
    subset(out, f"tdds-f{F:g}/r0.5/s1", folders["fraction"], infos["fraction"], 0.5, 69.0)
    subset(out, "tdds/r0.7/s1", "masks", infos["T2"], 0.7, 60.0)
    for seed, acc in ((1, 66.0), (2, 68.0)):          # the controls of tdds/r0.5 (w = 0.4 + 0.5: rate 0.1)
        write_run(out, f"random-ew/r0.1/s{seed}", method="random", selection="random", subset_rate=0.1, final_acc=acc,
                  seed=seed, num_train_samples=90, full_train_samples=N, history=history([90] * E))
    write_run(out, "rs2-ew/r0.1/s1", method="rs2", selection="dynamic", subset_rate=0.0, dynamic_ratio=0.1,
              final_acc=71.0, num_train_samples=90, full_train_samples=N, history=history([90] * E))
    with open(os.path.join(out, "plan.txt"), "w") as f:
        f.write(f"# OUT={out}\n"
                f"# equal-work: {out}/tdds/r0.5 0.9000 {out}/random-ew/r0.1 {out}/rs2-ew/r0.1\n"
                f"# equal-work: {out}/tdds-proxy-{PROXY}/r0.5 1.2000 - -\n# stage 2\n")
    return out, infos, {"ref": ref, "T2": other_T}


def tf():
    return work_factor(PROXY, TARGET, C, input_size("digits"))


def rows_of(out):
    with open(os.path.join(out, "results.csv")) as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def test_work_across_architectures_fractions_and_forward_passes(study):
    out, infos, _ = study
    md = load_summarize().summarize(out)
    rows = rows_of(out)
    size = input_size("digits")
    tf = work_factor(PROXY, TARGET, C, size)
    fs = forward_share(TARGET, TARGET, C, size)
    assert 0.4 < tf < 0.8 and 0.3 < fs < 0.4                        # measured, not 1
    expected = {                                                   # T/E x f x factor + forward share / E
        "tdds/r0.5/s1": T / E,
        f"tdds-proxy-{PROXY}/r0.5/s1": T / E * tf,
        f"tdds-f{F:g}/r0.5/s1": T / E * F + fs / E,
        "tdds/r0.7/s1": 2 / E,
        "random-ew/r0.1/s1": 0.0,
    }
    for run, dyn in expected.items():
        r = rows[run]
        sub = (N - int(float(r["subset_rate"]) * N)) / N
        assert float(r["work_dynamics"]) == pytest.approx(dyn, rel=1e-12), run
        assert float(r["work_subset"]) == pytest.approx(sub, rel=1e-12), run
        assert float(r["work_total"]) == pytest.approx(dyn + sub, rel=1e-12), run
    assert float(rows[f"tdds-f{F:g}/r0.5/s1"]["work_forward"]) == pytest.approx(fs / E)       # the features shown
    assert float(rows[f"tdds-f{F:g}/r0.5/s1"]["scored_fraction"]) == pytest.approx(F)
    assert float(rows["rs2-ew/r0.1/s1"]["work_total"]) == pytest.approx(0.9)
    # the ledger records the factors it used: the proxy's training passes, the extrapolation's forward pass
    factors = md.split("## Work factors", 1)[1].split("\n## ", 1)[0]
    assert f"| {PROXY} | {TARGET} | {C} | {size} | {tf:.4f} |" in factors
    assert f"| {TARGET} | {TARGET} | {C} | {size} | 1.0000 | {fs:.4f} |" in factors
    # rows: the sources are told apart; the controls are rows of their own; the scoring runs are no rows
    table = parse_md_table(md)
    assert set(table) == {"tdds", f"tdds [{PROXY}→{TARGET}]", f"tdds [fraction {F:g}]", "random (equal work)",
                          "RS2 (equal work)"}
    assert table["random (equal work)"]["10%"] == "67.00 ± 1.41 (n=2)"
    assert md.startswith(f"# Results: digits / {TARGET}\n")        # the proxy's architecture trains no row
    assert "Unfinished runs" not in md and "Full data (reference)" in md and md.count("Full data") == 1
    scoring_runs = md.split("## Scoring runs of other sources", 1)[1].split("\n## ", 1)[0]
    assert f"| proxy-{PROXY} | {PROXY} | {N} of {N} | {T} of {E} | stopped |" in scoring_runs
    assert f"| fraction-{F:g} | {TARGET} | {int(F * N)} of {N} | {T} of {E} | stopped |" in scoring_runs


def test_seconds_charge_the_run_that_recorded_the_dynamics(study):
    """A proxy's or a fraction's dynamics are charged at their own run's seconds (1 s per epoch here,
    T epochs), in units of the target's full-data training (E s), not the target's epochs."""
    out, _, _ = study
    # the proxy's epochs are slower (3 s), the fraction's faster (0.25 s): the ledger must see its own run
    for folder, per_epoch in ((f"proxy-{PROXY}", 3.0), (f"fraction-{F:g}", 0.25)):
        path = os.path.join(out, folder, "metrics.json")
        m = json.load(open(path))
        m["history"] = [dict(h, train_seconds=per_epoch) for h in m["history"]]
        m["train_seconds"] = per_epoch * T
        json.dump(m, open(path, "w"))
    runs = {m["run"]: m for m in load_summarize().collect_runs(out)}
    assert runs[f"tdds-proxy-{PROXY}/r0.5/s1"]["cost_dynamics"] == pytest.approx(3.0 * T / E)
    assert runs[f"tdds-f{F:g}/r0.5/s1"]["cost_dynamics"] == pytest.approx(0.25 * T / E)
    assert runs["tdds/r0.5/s1"]["cost_dynamics"] == pytest.approx(1.0 * T / E)
    assert runs[f"tdds-f{F:g}/r0.5/s1"]["cost_scoring"] == pytest.approx(0.5 / E)


def test_amortised_work_divides_the_scoring_by_its_uses(study):
    out, _, _ = study
    md = load_summarize().summarize(out)
    rows = rows_of(out)
    for run, u in (("tdds/r0.5/s1", 2), (f"tdds-proxy-{PROXY}/r0.5/s2", 2), (f"tdds-f{F:g}/r0.5/s1", 1),
                   ("tdds/r0.7/s1", 1)):
        r = rows[run]
        dyn, total = float(r["work_dynamics"]), float(r["work_total"])
        assert int(r["scoring_uses"]) == u
        assert float(r["work_amortised"]) == pytest.approx(total - dyn + dyn / u, rel=1e-12)
    assert float(rows["random-ew/r0.1/s1"]["work_amortised"]) == float(rows["random-ew/r0.1/s1"]["work_total"])
    charged = parse_md_table(md, "Compute (work), charged: each run pays its scoring whole")
    amortised = parse_md_table(md, "Compute (work), amortised over the u runs that used it")
    assert charged["tdds"]["50%"] == f"{0.9:.3f} ± 0.000 (n=2)"
    assert amortised["tdds"]["50%"] == f"{0.5 + 0.4 / 2:.3f} ± 0.000 (n=2)"


def test_rank_fidelity_against_the_reference(study):
    out, _, scores = study
    md = load_summarize().summarize(out)
    rows = rows_of(out)
    assert rows["tdds/r0.5/s1"]["rank_rho"] == ""                    # the reference itself: nothing to compare
    proxy, fraction, t2 = (rows[r] for r in (f"tdds-proxy-{PROXY}/r0.5/s1", f"tdds-f{F:g}/r0.5/s1", "tdds/r0.7/s1"))
    assert float(proxy["rank_rho"]) == pytest.approx(-1.0) and float(proxy["kept_overlap"]) == 0.0   # reversed
    assert float(fraction["rank_rho"]) == pytest.approx(1.0) and float(fraction["kept_overlap"]) == 1.0
    # another T in masks/ (early epochs): compared with the largest T there, as scipy and numpy compute it
    keep = N - int(0.7 * N)
    kept, kept_ref = np.argsort(scores["T2"])[-keep:], np.argsort(scores["ref"])[-keep:]
    assert float(t2["rank_rho"]) == pytest.approx(spearmanr(scores["T2"], scores["ref"]).statistic, abs=1e-12)
    assert float(t2["kept_overlap"]) == pytest.approx(len(set(kept) & set(kept_ref)) / keep)
    assert t2["rank_scoring"] == "masks/win3_ep2"
    assert proxy["rank_reference"] == fraction["rank_reference"] == "masks/win3_ep4"
    section = md.split("## Rank fidelity", 1)[1].split("\n## ", 1)[0]
    assert f"| tdds [{PROXY}→{TARGET}] | 50% | masks-proxy-{PROXY}/win3_ep4 | masks/win3_ep4 | -1.000 | 0.000 | " \
           f"66.00 ± 1.41 (n=2) |" in section


def test_fidelity_of_another_T_against_scipy(tmp_path, study):
    """A score at a T the reference folder lacks is compared with the largest T there: Spearman's rho and
    the kept overlap as scipy and numpy compute them from the arrays."""
    out, infos, scores = study
    rng = np.random.default_rng(1)
    s6 = rng.normal(size=N)
    info = write_scoring(out, "masks-T6", "win3_ep6", s6, dynamics_run=os.path.join(out, "full"), trajectory_len=6,
                         window_size=3, arch=TARGET)
    subset(out, "tdds-T6/r0.3/s1", "masks-T6", info, 0.3, 75.0)
    runs = {m["run"]: m for m in load_summarize().collect_runs(out)}
    m = runs["tdds-T6/r0.3/s1"]
    ref = scores["ref"]                                              # T=4: the largest T in masks/
    keep = N - int(0.3 * N)
    kept, kept_ref = np.argsort(s6)[-keep:], np.argsort(ref)[-keep:]
    assert m["rank_rho"] == pytest.approx(spearmanr(s6, ref).statistic, abs=1e-12)
    assert m["kept_overlap"] == pytest.approx(len(set(kept) & set(kept_ref)) / keep)
    assert m["rank_reference"] == "masks/win3_ep4"


def test_equal_work_table_pairs_each_point_with_its_controls(study):
    out, _, _ = study
    md = load_summarize().summarize(out)
    section = md.split("## Equal-work controls", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| static")]
    assert rows[0] == ("| tdds/r0.5 | tdds | 71.00 ± 1.41 (n=2) | 0.900 ± 0.000 (n=2) | random-ew/r0.1 | "
                       "67.00 ± 1.41 (n=2) | 0.900 ± 0.000 (n=2) | rs2-ew/r0.1 | 71.00 | 0.900 |")
    # w >= 1: no pruned run costs as much; the full-data run (finished, work 1) is the control
    assert rows[1].startswith(f"| tdds-proxy-{PROXY}/r0.5 | tdds [{PROXY}→{TARGET}] | 66.00 ± 1.41 (n=2) |")
    assert rows[1].endswith("| the full-data run | 90.00 | 1.000 | the full-data run | 90.00 | 1.000 |")
    plan = load_summarize().read_plans(out)[0]
    assert plan["equal_work"][1] == (f"{out}/tdds-proxy-{PROXY}/r0.5", 1.2, None, None)
    # the plot: the controls have markers of their own, the amortised points are hollow, the front is charged
    summarize = load_summarize()
    fig, ax, front = summarize.cost_figure(summarize.collect_runs(out), summarize.read_plans(out))
    labels = ax.get_legend_handles_labels()[1]
    assert "random (equal work)" in labels and "RS2 (equal work)" in labels
    assert "amortised work (scoring / u)" in labels and "Pareto front (charged)" in labels
    charged = [(float(r["work_total"]), float(r["final_acc"])) for r in rows_of(out).values() if r["work_total"]]
    charged += [(0.9, 71.0), (0.5 + 0.4 * tf(), 66.0)]                   # the two-seed means
    assert (1.0, 90.0) in front and not any(abs(x - 0.7) < 1e-9 for x, _ in front)   # tdds at 50% amortised: 0.7
    assert all(any(abs(x - cx) < 1e-9 and y == cy for cx, cy in charged) for x, y in front)


def test_the_equal_work_lines_of_an_earlier_sweep_into_out_are_kept(study):
    """A later sweep into the same OUT without EQUAL_WORK rewrites plan.txt; the executor's archive in
    OUT/plans/ still holds the earlier plan, and its points keep their controls in the table."""
    out, _, _ = study
    os.makedirs(os.path.join(out, "plans"))
    os.replace(os.path.join(out, "plan.txt"), os.path.join(out, "plans", "20260101-000000.txt"))
    with open(os.path.join(out, "plan.txt"), "w") as f:
        f.write(f"# OUT={out}\n# stage 2\n")
    section = load_summarize().summarize(out).split("## Equal-work controls", 1)[1].split("\n## ", 1)[0]
    assert "| tdds/r0.5 | tdds | 71.00 ± 1.41 (n=2) | 0.900 ± 0.000 (n=2) | random-ew/r0.1 |" in section


def test_a_bad_equal_work_line_is_one_clear_error(study):
    out, _, _ = study
    with open(os.path.join(out, "plan.txt"), "a") as f:
        f.write("# equal-work: /x/tdds/r0.5 lots -\n")
    from utils.errors import UserError
    with pytest.raises(UserError, match="is not '# equal-work: POINT WORK"):
        load_summarize().summarize(out)


def test_a_teacher_counts_its_training_and_forward_passes_at_their_factors(tmp_path):
    out = str(tmp_path / "sweep")
    info = {"method": "tdds", "tag": "win3_ep4", "trajectory_len": T, "num_samples": N, "num_classes": C,
            "arch": TARGET, "dynamics_run": "/elsewhere/full"}
    write_run(out, "tdds-kd/r0.5/s1", method="tdds", subset_rate=0.5, final_acc=70.0, score_info=info,
              scored_arch=TARGET, num_train_samples=50, full_train_samples=N, history=history([50] * E),
              teacher="/elsewhere/t/model_best.pth.tar", teacher_arch=PROXY, teacher_run="/elsewhere/t")
    md = load_summarize().summarize(out)
    r = rows_of(out)["tdds-kd/r0.5/s1"]
    size = input_size("digits")
    teacher, share = work_factor(PROXY, TARGET, C, size), forward_share(PROXY, TARGET, C, size)
    assert float(r["work_teacher"]) == pytest.approx(teacher)                # its own training, at its factor
    assert float(r["work_forward"]) == pytest.approx(50 * E * share / (N * E))  # a forward pass of every trained sample
    assert float(r["work_total"]) == pytest.approx(T / E + 0.5 + teacher + 50 * E * share / (N * E))
    assert f"| {PROXY} | {TARGET} | {C} | {size} | {teacher:.4f} | {share:.4f} |" in md


def test_a_study_without_cheap_sources_keeps_its_results(tmp_path):
    """No proxy, no fraction, one T, no equal-work lines: none of the new sections, the work table under
    its old title, nothing measured (the FLOP counter is never asked)."""
    from utils.training import flops
    out = str(tmp_path / "sweep")
    for run, (fields, _) in FAKE_RUNS.items():
        write_metrics(out, run, **fields)
    flops._count.cache_clear()
    md = load_summarize().summarize(out)
    assert flops._count.cache_info().misses == 0
    for section in ("Work factors", "Rank fidelity", "Equal-work", "amortised", "charged", "Scoring runs"):
        assert section not in md
    assert "## Compute (work), as a fraction of one full-data training: samples forwarded and backpropagated" in md


def test_an_iterations_budget_run_counts_against_the_schedules_epochs(study):
    """train_subset.py --budget iterations at 90%: as many steps as E full-data epochs, in 9 E shorter
    epochs (metrics.json's epochs); one full-data training is still E N: work_dynamics = T / E (not T / 9E)
    and work_subset = the samples it trained / (E N), about 1 - 0.1 per mille here (10 of N per epoch)."""
    out, infos, _ = study
    kept, epochs = N - int(0.9 * N), 9 * E
    write_run(out, "tdds-iters/r0.9/s1", {"--manualSeed": 1, "--epochs": E, "--budget": "iterations",
                                         "content of --mask_path": infos["ref"]["sha256"]["mask"]},
              method="tdds", subset_rate=0.9, final_acc=50.0, budget="iterations", epochs=epochs,
              completed_epochs=epochs, score_info=infos["ref"], scored_arch=TARGET, num_train_samples=kept,
              full_train_samples=N, mask_path=os.path.join(out, "masks", infos["ref"]["files"]["mask"]),
              history=history([kept] * epochs))
    load_summarize().summarize(out)
    r = rows_of(out)["tdds-iters/r0.9/s1"]
    assert float(r["work_dynamics"]) == pytest.approx(T / E, rel=1e-12)
    assert float(r["work_subset"]) == pytest.approx(kept * epochs / (N * E), rel=1e-12)
