"""Write tests/plans/recorded.json: the plans and errors of scripts/sweep.sh (PLAN=FILE, nothing run)
for a broad set of configurations, as regression fixtures of the study's planner.

    python tests/plans/record.py        # rewrites recorded.json from the current scripts/sweep.sh

recorded.json as committed was written by the sweep.sh of before the port to Python (the plan made in
bash), so tests/test_plan.py holds the Python planner to it; rewrite it only for a deliberate change
of the plans, and say which in the commit.

Paths are stored with placeholders: {ROOT} the repository, {TMP} the folder the sweep ran in (its
cwd, the PLAN file's folder and the dynamics folders made for DYNAMICS)."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

GOOD = {
    "default": {},
    "paper_two_seeds": dict(METHODS="tdds el2n dyn_unc random", SEEDS="1 2"),
    "every_method": dict(METHODS="tdds el2n forgetting aum entropy dyn_unc dual moderate random"),
    "variables": dict(RATES="0.9", METHODS="tdds random", FULL_BATCH="64", BUDGET="iterations",
                      SUBSET_ARCHS="resnet18 resnet20", TRAIN_FLAGS="--label_noise 0.2"),
    "full_acc": dict(RATES="0.9", FULL_ACC="1"),
    "full_acc_random": dict(RATES="0.65", FULL_ACC="1", METHODS="random"),
    "ngpu0": dict(NGPU="0", RATES="0.5"),
    "ngpu2": dict(NGPU="2", RATES="0.5", METHODS="el2n"),
    "moderate": dict(RATES="0.9", METHODS="moderate"),
    "random_only_unlisted_rate": dict(RATES="0.65", METHODS="random"),
    "aggressive": dict(METHODS="tdds dual random", SELECTIONS="top beta", RATES="0.5 0.9"),
    "beta_other_score_no_rate_flags": dict(METHODS="tdds", SELECTIONS="beta", RATES="0.9", RATE_FLAGS=""),
    "kd_per_rate": dict(KD="1", KD_ALPHA="0.5:0.5 0.9:1.0", METHODS="random tdds", RATES="0.5 0.9",
                        RATE_FLAGS="0.9:--batch-size 16 --no_score_weighting"),
    "kd_one_alpha_iterations": dict(KD="1", KD_ALPHA="1.0", METHODS="random el2n", RATES="0.3 0.8",
                                    BUDGET="iterations"),
    "every_selection": dict(METHODS="tdds el2n random", SELECTIONS="top ccs beta random", RATES="0.7",
                            SUBSET_FLAGS="--mis_ratio 0.1 --strata 10"),
    "selection_random_only": dict(METHODS="tdds", SELECTIONS="random", RATES="0.5"),
    "ccs_only": dict(METHODS="random el2n", SELECTIONS="ccs", RATES="0.5 0.8"),
    "duplicates": dict(RATES="0.5 0.50 0.9 .9", METHODS="tdds tdds el2n", SEEDS="1 1 2",
                       SUBSET_ARCHS="resnet18 resnet18"),
    "overwrite": dict(OVERWRITE="1", RATES="0.5 0.9", METHODS="tdds moderate random"),
    "eval_flags": dict(EVAL_FLAGS="--chunk_size 4096 --ngpu 0", RATES="0.5", METHODS="tdds aum"),
    "digits_traj_win": dict(DATASET="digits", ARCH="resnet20", EPOCHS="8", TRAJ="6", WIN="3",
                            RATES="0.25 0.5", METHODS="tdds el2n random", JOBS="2", BATCH="64", FULL_BATCH="64"),
    "traj_only": dict(TRAJ="50", RATES="0.3 0.9", METHODS="tdds dyn_unc"),
    "win_only": dict(WIN="4", RATES="0.5 0.7", METHODS="tdds dual"),
    "epochs_clamp": dict(EPOCHS="50", METHODS="tdds el2n"),
    "epochs_clamp_k": dict(EPOCHS="5", RATES="0.8 0.9", METHODS="tdds"),
    "traj_beyond_epochs": dict(EPOCHS="20", TRAJ="30", WIN="5", RATES="0.5"),
    "all_epochs_recorded": dict(EPOCHS="90", RATES="0.3", METHODS="tdds"),
    "paths_with_spaces": dict(OUT="my study/out", DATA_PATH="my data", RATES="0.9", METHODS="tdds random"),
    "python_given": dict(PYTHON="python3", RATES="0.9", METHODS="el2n"),
    "rate_flags_various": dict(RATES="0.5 0.9", METHODS="tdds random",
                               RATE_FLAGS="0.50:--decay 0.001 0.9:--batch-size 32 --no_score_weighting 0.7:--batch-size 8"),
    "rate_flags_no_batch": dict(RATES="0.8", METHODS="random", RATE_FLAGS="0.8:--decay 0.001", BATCH="256"),
    "rate_flags_empty_value": dict(RATES="0.8 0.9", METHODS="random", RATE_FLAGS="0.8: 0.9:--batch-size 16"),
    "jobs_gpus": dict(JOBS="4", GPUS="0 1", NGPU="1", RATES="0.5", METHODS="random"),
    "kd_random_only": dict(KD="1", KD_ALPHA="0.9", METHODS="random", RATES="0.5"),
    "exponent_rates": dict(RATES="5e-1 0.30", METHODS="el2n"),
    "subset_archs_other": dict(SUBSET_ARCHS="resnet20", RATES="0.9", METHODS="tdds random", SEEDS="7 3"),
    "dynamics_given": dict(DYNAMICS="{TMP}/given/npy", METHODS="tdds el2n random", RATES="0.5 0.9"),
    "dynamics_given_moderate_kd": dict(DYNAMICS="{TMP}/given/npy", METHODS="moderate el2n", RATES="0.9",
                                       KD="1", KD_ALPHA="0.5"),
    "dynamics_given_random": dict(DYNAMICS="{TMP}/given/npy", METHODS="random", RATES="0.5"),
    "dynamics_given_index_files": dict(DYNAMICS="{TMP}/indexonly", METHODS="tdds", RATES="0.9", WIN="3"),
}
BAD = {
    "unreported_rate": dict(RATES="0.65"),
    "unknown_method": dict(METHODS="tdds grand"),
    "methods_blank": dict(METHODS="  "),
    "rate_above_one": dict(RATES="1.5"),
    "rate_zero": dict(RATES="0 0.5"),
    "rate_not_number": dict(RATES="0.5 abc"),
    "budget": dict(BUDGET="steps"),
    "jobs_zero": dict(JOBS="0"),
    "epochs_word": dict(EPOCHS="ten"),
    "epochs_leading_zero": dict(EPOCHS="08"),
    "full_batch_zero": dict(FULL_BATCH="0"),
    "tdds_window_small": dict(RATES="0.5", TRAJ="6", WIN="2"),
    "full_acc_word": dict(FULL_ACC="yes"),
    "overwrite_two": dict(OVERWRITE="2"),
    "kd_two": dict(KD="2"),
    "batch_zero": dict(BATCH="0"),
    "seeds_word": dict(SEEDS="1 x"),
    "seeds_negative": dict(SEEDS="-1"),
    "selection_unknown": dict(SELECTIONS="best"),
    "selections_blank": dict(SELECTIONS=" "),
    "seeds_blank": dict(SEEDS=" "),
    "subset_archs_blank": dict(SUBSET_ARCHS=" "),
    "traj_negative": dict(TRAJ="-3"),
    "win_zero": dict(WIN="0"),
    "ngpu_negative": dict(NGPU="-1"),
    "gpus_without_ngpu": dict(GPUS="0 1", NGPU="0"),
    "moderate_dynamics_missing": dict(METHODS="moderate", DYNAMICS="/nonexistent/npy"),
    "dynamics_empty": dict(DYNAMICS="{TMP}/empty"),
    "dynamics_moderate_no_checkpoint": dict(METHODS="moderate", DYNAMICS="{TMP}/bare/npy"),
    "dynamics_kd_no_teacher": dict(KD="1", KD_ALPHA="1.0", METHODS="random", DYNAMICS="{TMP}/bare/npy"),
    "kd_without_alpha": dict(KD="1"),
    "alpha_without_kd": dict(KD_ALPHA="0.5"),
    "kd_alpha_missing_rate": dict(KD="1", KD_ALPHA="0.5:0.5", RATES="0.5 0.9"),
    "kd_alpha_two_plain": dict(KD="1", KD_ALPHA="0.5 0.9"),
    "kd_alpha_word": dict(KD="1", KD_ALPHA="a:b"),
    "rate_flags_no_rate": dict(RATE_FLAGS="--batch-size 32"),
    "rate_flags_bad_batch": dict(RATE_FLAGS="0.9:--batch-size x"),
    "rate_flags_missing_batch": dict(RATE_FLAGS="0.9:--batch-size", RATES="0.9"),
    "rate_flags_twice": dict(RATE_FLAGS="0.9:--batch-size 32 0.90:--decay 0.001"),
    "rate_flags_bad_rate": dict(RATE_FLAGS="1.2.3:--decay 0.1"),
    "dual_window_small": dict(METHODS="dual", RATES="0.5", TRAJ="6", WIN="1"),
    "beta_dual_window_small": dict(METHODS="el2n", SELECTIONS="beta", RATES="0.5", TRAJ="6", WIN="1"),
    "clamped_window_small": dict(EPOCHS="2", RATES="0.9", METHODS="tdds"),
    "plan_folder_missing": dict(PLAN="/nonexistent/folder/study.plan"),
}


def record(name, env, tmp):
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    cwd = os.path.join(tmp, name)
    plan = os.path.join(cwd, "study.plan")
    full = {k: v for k, v in os.environ.items() if k not in ("NGPU", "GPUS", "CUDA_VISIBLE_DEVICES")}
    full.update({"PLAN": plan, "OUT": "/study/out"})
    full.update({k: v.replace("{TMP}", tmp) for k, v in env.items()})
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "sweep.sh")], env=full, cwd=cwd, capture_output=True,
                       text=True)
    text = open(plan).read() if os.path.exists(plan) else None

    def sub(s):
        return None if s is None else s.replace(ROOT, "{ROOT}").replace(cwd, "{TMP}/" + name).replace(tmp, "{TMP}")
    return {"env": env, "cwd": "{TMP}/" + name, "status": p.returncode, "stdout": sub(p.stdout),
            "stderr": sub(p.stderr), "plan": sub(text)}


def make_dynamics(tmp):
    """{TMP}/given/npy with 6 recorded epochs beside a checkpoint and a best model; {TMP}/bare/npy with 3
    and no model; {TMP}/indexonly with 4 epochs of _Index.npy; {TMP}/empty with nothing."""
    for folder, n, key in (("given/npy", 6, "Output"), ("bare/npy", 3, "Output"), ("indexonly", 4, "Index")):
        os.makedirs(os.path.join(tmp, folder))
        for e in range(n):
            open(os.path.join(tmp, folder, f"{e}_{key}.npy"), "w").close()
    for f in ("checkpoint.pth.tar", "model_best.pth.tar"):
        open(os.path.join(tmp, "given", f), "w").close()
    os.makedirs(os.path.join(tmp, "empty"))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        make_dynamics(tmp)
        cases = {}
        for kind, configs in (("good", GOOD), ("bad", BAD)):
            for name, env in configs.items():
                cases[name] = {"kind": kind, **record(name, env, tmp)}
                expect = 0 if kind == "good" else 2
                if cases[name]["status"] != expect:
                    sys.exit(f"{name}: status {cases[name]['status']}, expected {expect}: {cases[name]['stderr']}")
                print(name, cases[name]["status"], (cases[name]["stderr"] or "").strip()[:100], flush=True)
    with open(os.path.join(HERE, "recorded.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
