"""The runs of a study folder, as scripts/summarize.py (and the sweep) read them: every metrics.json
under OUT with its label (the table row), its state (finished, stopped, running, interrupted,
failed), its fingerprint (what decides its result: runs are seeds of one experiment only when these
differ in --manualSeed alone), the threads the sweep gave it, and the runs a plan names that have no
results. The compute each run cost is utils/study/costs.py; the presentation is scripts/summarize.py."""
import hashlib
import json
import os
import shlex

import numpy as np

from utils.args import without_unused
from utils.errors import UserError
from utils.methods import DYNAMIC_METHODS, SELECTIONS, names
from utils.protocol.files import load_json
from utils.protocol.run import read_state, training_cwd
from utils.study.equal_work import RANDOM_EW, RS2_EW
from utils.study.scorings import read_info
from utils.study.sources import PROXY_FOLDER  # OUT/proxy-<arch>: a proxy architecture's dynamics run

FULL = "full"  # label of the full-data run(s)
SEED = "--manualSeed"   # the one setting in which runs averaged as seeds may differ
DYNAMIC = tuple(DYNAMIC_METHODS)   # dynamic pruning: a full-data run (train.py --dynamic) that prunes as it goes
# the equal-work controls' folders under OUT (the sweep's EQUAL_WORK=1; never with a TAG suffix) and their rows
EQUAL_WORK_LABELS = {RANDOM_EW: "random (equal work)", RS2_EW: "RS2 (equal work)"}


def run_label(m):
    """Table row of a run (see the module docstring)."""
    if m.get("subset_rate", 0.0) == 0.0 and m.get("method", FULL) == FULL:
        return FULL
    label = "random" if m.get("selection") == "random" else m.get("method", "unknown")
    if m.get("selection") in names(SELECTIONS, score_values=True):
        label += "-" + m["selection"]
    if m.get("class_balanced"):
        label += "-cb"
    if m.get("score_weighting") is False and m.get("selection") != "random":
        label += "-unweighted"
    if m.get("budget") == "iterations":
        label += "-iters"
    if m.get("teacher"):
        label += "-kd"
    scored = m.get("scored_arch")
    if scored and m.get("selection") != "random" and scored != m.get("arch"):
        label += f" [{scored}→{m.get('arch')}]"
    fraction = (m.get("score_info") or {}).get("train_fraction")
    if fraction and fraction < 1 and m.get("selection") != "random":
        label += f" [fraction {fraction:g}]"    # scores extrapolated from a run on that fraction of the data
    return label


def is_dynamic(m):
    return m.get("method") in DYNAMIC


def study_roles(m):
    """What the run's place in the study says beyond its metrics.json: a run under OUT/random-ew or
    OUT/rs2-ew is an equal-work control (its own row, "random (equal work)", "RS2 (equal work)"); a
    train.py --train_fraction run (method "fraction") or a full-data run of OUT/proxy-<its arch> is a
    scoring run of another source (m["scoring_run"]: not the full-data reference, never a table row)."""
    top = m["run"].split(os.sep)[0]
    if top in EQUAL_WORK_LABELS and not m["is_full"]:
        m["label"], m["equal_work_control"] = EQUAL_WORK_LABELS[top], True
    if m.get("method") == "fraction" or (m["is_full"] and top == f"{PROXY_FOLDER}{m.get('arch')}"):
        m["is_full"], m["scoring_run"] = False, True
        what = f"fraction {m.get('train_fraction')}" if m.get("method") == "fraction" else f"proxy {m.get('arch')}"
        m["label"] = f"scoring run ({what})"


def read_runs(out):
    """Every metrics.json under `out`, as dicts with "run" (folder relative to out), "label", "state",
    "fingerprint" and "threads" added, in table order (their compute: utils.study.costs.collect_runs)."""
    runs = []
    threads = read_threads(out)
    recorded = os.path.exists(os.path.join(out, "threads.json"))
    for folder, dirs, files in os.walk(out):
        dirs.sort()  # deterministic order
        if "metrics.json" not in files:
            continue
        path = os.path.join(folder, "metrics.json")
        m = load_json(path, strict=True)
        if not isinstance(m, dict) or "final_acc" not in m:
            raise UserError(f"{path} has no final_acc: expected the metrics.json of a training run")
        m["subset_rate"] = float(m.get("subset_rate") or (m.get("dynamic_ratio") if is_dynamic(m) else 0.0) or 0.0)
        m["final_acc"] = float(m["final_acc"]) if m["final_acc"] is not None else None
        m["run"] = os.path.relpath(folder, out)
        m["path"] = os.path.abspath(folder)
        m["label"] = run_label(m)
        m["is_full"] = m["label"] == FULL
        study_roles(m)
        m["threads"] = effective_threads(threads.get(m["run"]), m)
        m["threads_recorded"] = recorded
        recorded = read_state(folder)   # folder.json: fingerprint and state, read once
        m["fingerprint"] = fingerprint(m, recorded)
        m["state"] = run_state(m, recorded.get("state"))
        if scores_replaced(m):
            m["label"] += " (scores since replaced)"
        runs.append(m)
    name_differences([m for m in runs if counts(m)])
    runs.sort(key=lambda m: (not m["is_full"], m["label"], m["subset_rate"], str(m.get("seed")), m["run"]))
    return runs


def read_threads(out):
    """{run folder: threads it ran with}, as the sweep's executor recorded them (OUT/threads.json), or {}."""
    return load_json(os.path.join(out, "threads.json"), {})


def effective_threads(entry, m):
    """The threads a run trained with: threads.json's number, or, where sweeps gave its epochs different
    threads ([[first epoch, threads], ...]), their mean weighted by each epoch's train_seconds (so that
    seconds x threads are its thread-seconds); None where the threads of some epochs are unknown."""
    if not isinstance(entry, list):
        return entry
    if not entry or entry[0][0] != 0:
        return None
    history = [h for h in m.get("history") or [] if "epoch" in h]
    if not history:
        return None
    seconds = [float(h.get("train_seconds", 1.0)) for h in history]
    threads = [next(n for first, n in reversed(entry) if first <= h["epoch"]) for h in history]
    total = sum(seconds)
    return round(sum(s * n for s, n in zip(seconds, threads)) / total, 3) if total > 0 else None


def run_state(m, state):
    """finished, stopped (--stop_epoch), running (its writer holds the lock now), interrupted or failed:
    folder.json's `state` where there is one, else what metrics.json says."""
    if state in ("running", "interrupted", "failed") or m["final_acc"] is None:
        return state if state in ("running", "failed") else "interrupted"
    if m.get("finished", True):   # metrics.json of older versions has no "finished": they wrote it at the end
        return "finished"
    return "stopped" if m.get("stopped") or state == "stopped" else "interrupted"


def counts(m):
    """Does the run enter the tables? Finished runs do; of the others only the full-data run that
    stopped at T (--stop_epoch) to record the dynamics, as the reference line that says so. A scoring
    run of another source (study_roles) is no row: its work is charged to the runs its scores chose."""
    if m.get("scoring_run"):
        return False
    return m["state"] == "finished" or (m["is_full"] and m["state"] == "stopped")


def scores_replaced(m):
    """Was the run trained on a mask that its scoring's info_<tag>.json no longer vouches for (the
    scoring was redone with --overwrite since)? False when that cannot be told (files moved)."""
    trained = ((m.get("score_info") or {}).get("sha256") or {}).get("mask")
    mask = m.get("mask_path")
    if not trained or not mask or m.get("selection") == "random":
        return False
    if not os.path.isabs(mask):   # relative to where the run was started
        cwd = training_cwd(m["path"])
        if cwd is None:
            return False
        mask = os.path.join(cwd, mask)
    info = read_info(os.path.dirname(mask), m["score_info"].get("tag"))
    now = (info.get("sha256") or {}).get("mask") if isinstance(info.get("sha256"), dict) else None
    return bool(now) and now != trained


def _setting(m, key):
    if key == "score":
        return (m.get("score_info") or {}).get("tag")
    return m.get(key)


# what decides a result, for runs of versions that wrote no fingerprint (steps: the batch size too)
SEED_INVARIANT = ("dataset", "arch", "scored_arch", "epochs", "steps", "score")


def fingerprint(m, recorded):
    """{setting: value} that decides the run's result: the run fingerprint of folder.json (`recorded`;
    args.json in older versions), without settings that have no effect; for a bare metrics.json, what
    it records."""
    fp = recorded.get("fingerprint")
    if not isinstance(fp, dict):
        fp = load_json(os.path.join(m["path"], "args.json"), {}).get("fingerprint")
    if isinstance(fp, dict):
        return without_unused(fp, "--")
    return {**{k: _setting(m, k) for k in SEED_INVARIANT}, SEED: m.get("seed")}


def _shown(m, key):
    """"name=value" of one setting in a label: flags without their dashes, file contents by the score's
    tag (or a short hash), other hashes shortened."""
    value = m["fingerprint"].get(key)
    if key in ("content of --mask_path", "content of --score_path", "content of --mean_p_path"):
        tag = (m.get("score_info") or {}).get("tag")
        return f"scores={tag or str(value)[:8]}"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        value = value[:8]
    name = key[2:] if key.startswith("--") else key.replace("content of --", "")
    return f"{name}={value}"


def name_differences(runs):
    """Runs are seeds of one experiment only when their fingerprints differ in --manualSeed alone. Where
    runs of one label and rate differ in more, every run of that label gets the differing settings in
    its label (at every rate, so that its rows stay whole), and the tables never average them."""
    by_label = {}
    for m in runs:
        by_label.setdefault(m["label"], []).append(m)
    for label, ms in by_label.items():
        experiments = {}   # rate -> {fingerprint without the seed: one of its runs}
        for m in ms:
            experiments.setdefault(m["subset_rate"], {}).setdefault(_experiment(m), m["fingerprint"])
        differing = set()
        for fps in experiments.values():
            fps = list(fps.values())
            for k in set().union(*fps) - {SEED} if len(fps) > 1 else ():
                if len({json.dumps(fp.get(k), sort_keys=True, default=str) for fp in fps}) > 1:
                    differing.add(k)
        if differing:
            for m in ms:
                m["label"] += " (" + ", ".join(dict.fromkeys(_shown(m, k) for k in sorted(differing))) + ")"
    # the rule, enforced: where a shown value still hides a difference (two files of one tag), the
    # fingerprint's own short hash tells the experiments apart
    cells = {}
    for m in runs:
        cells.setdefault((m["label"], m["subset_rate"]), {}).setdefault(_experiment(m), []).append(m)
    for experiments in cells.values():
        for key, ms in experiments.items() if len(experiments) > 1 else ():
            for m in ms:
                m["label"] += f" [settings {hashlib.sha256(key.encode()).hexdigest()[:6]}]"


def _experiment(m):
    """The fingerprint without the seed, as one string: runs with the same one are seeds of one experiment."""
    return json.dumps({k: v for k, v in m["fingerprint"].items() if k != SEED}, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------------ aggregation
def aggregate(runs, key="final_acc"):
    """{(label, rate): (mean, std, n)} of `key` over the runs that have it; std is the sample std
    (ddof=1), 0 for one run."""
    values = {}
    for m in runs:
        if m.get(key) is not None and counts(m):
            values.setdefault((m["label"], m["subset_rate"]), []).append(float(m[key]))
    return {k: (float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0, len(a))
            for k, a in values.items()}


def read_plans(out):
    """The plans of what is in OUT: plan.txt and each variant's plan-<TAG>.txt (sweep.sh TAG=), as
    [{"file", "tag", "planned": [run folders], "shared": [(variant folder, the study's folder)],
    "equal_work": [(static point folder, its planned work, random control folder or None, RS2 control
    folder or None)]}] ("# equal-work:" lines: None where the line says "-", the full-data run), every
    folder absolute and moved along with OUT (the plan says the OUT it was written for)."""
    names = ["plan.txt"] + sorted(f for f in os.listdir(out) if f.startswith("plan-") and f.endswith(".txt"))
    plans = [p for p in (_read_plan(out, name) for name in names) if p is not None]
    return plans + archived_equal_work(out)


def _read_plan(out, name):
    """One plan file of OUT (`name` relative to it) as read_plans describes it; None where it cannot be read."""
    try:
        with open(os.path.join(out, name)) as f:
            text = f.read().splitlines()
    except OSError:
        return None
    plan = {"file": name, "tag": name[len("plan-"):-len(".txt")] if name.startswith("plan-") else None,
            "planned": [], "shared": [], "equal_work": []}
    said = [shlex.split(line[len("# OUT="):])[0] for line in text if line.startswith("# OUT=")]
    planned_out = said[0] if said else None   # the OUT the plan was written for (its paths are absolute), if it says

    def here(path):   # the folder may have moved since
        return os.path.abspath(os.path.join(out, os.path.relpath(path, planned_out)) if planned_out else path)
    for line in text:
        if line.startswith("# shared: "):
            variant, study = shlex.split(line[len("# shared: "):])[:2]
            plan["shared"].append((here(variant), here(study)))
        elif line.startswith(EQUAL_WORK_LINE):
            plan["equal_work"].append(equal_work_line(line, here))
        words = shlex.split(line) if not line.startswith("#") else []
        if "--save_path" in words[:-1]:
            plan["planned"].append(here(words[words.index("--save_path") + 1]))
    return plan


def archived_equal_work(out):
    """The "# equal-work:" lines of the plans the executor archived in OUT/plans/ (each sweep into OUT
    rewrites plan.txt, and a later sweep without EQUAL_WORK would drop the earlier one's points), as
    plans that contribute those lines alone."""
    try:
        names = sorted(f for f in os.listdir(os.path.join(out, "plans")) if f.endswith(".txt"))
    except OSError:
        return []
    plans = [_read_plan(out, os.path.join("plans", name)) for name in names]
    return [{**p, "planned": [], "shared": []} for p in plans if p is not None and p["equal_work"]]


EQUAL_WORK_LINE = "# equal-work: "


def equal_work_line(line, here):
    """(point, work, random control or None, RS2 control or None) of one "# equal-work:" line."""
    words = shlex.split(line[len(EQUAL_WORK_LINE):])
    try:
        point, work, random, rs2 = words[:4]
        work = float(work)
    except ValueError:
        raise UserError(f"a plan's line {line!r} is not '{EQUAL_WORK_LINE}POINT WORK RANDOM|- RS2|-'") from None
    return here(point), work, None if random == "-" else here(random), None if rs2 == "-" else here(rs2)


def missing_runs(out, runs):
    """The run folders (relative to out) that OUT's plans name, or share with the study, and that have no
    results yet."""
    have = {m["path"] for m in runs if m["final_acc"] is not None}
    missing = []
    for plan in read_plans(out):
        for path in plan["planned"] + [study for _, study in plan["shared"]]:
            if path not in have and os.path.relpath(path, out) not in missing:
                missing.append(os.path.relpath(path, out))
    return missing
