"""Is a planned command's work already done? Answered from the folders' records, in the sweep's own
process, read-only and without the lock, so that a finished study run again starts no process per
run. Only a sure "done" counts; anything else (not done, refused, a record this code does not know)
is None, and the executor runs the command, whose script then decides as always.

- A training run (train.py, train_subset.py): utils.protocol.run.decide_run, the scripts' own
  decision, on the fingerprint of the planned flags. The facts a fingerprint holds that the flags do
  not show are the device (--ngpu and whether CUDA is here), one process (a plan's lines are plain
  python), the content of the files the run reads (mask, score, mean p_y, teacher: their sha256), and
  the training set's size and labels, taken from the folder's own record: the data set's files are
  taken as unchanged since (the scripts themselves compare the labels' sha256).
- A scoring (importance_evaluation.py): every combination's info_<tag>.json (its commit record)
  records the same scoring (method, T, K, decay, seed, samples, the dynamics' identity, the labels'
  sha256) and the arrays it vouches for are intact. moderate is left to the script.
"""
import os
from functools import lru_cache

from utils.errors import UserError
from utils.protocol.files import load_json
from utils.protocol.fingerprint import array_sha256, file_sha256, run_fingerprint
from utils.protocol.run import decide_run, read_state
from utils.science.scores import Dynamics, combinations, mean_p_name, method_labels, output_tag
from utils.science.selection import file_tag
from utils.study.scorings import ARRAYS, read_info

DATA_FACTS = ("training samples", "training labels")   # from the folder's record: the data set's content


@lru_cache(maxsize=None)
def _sha256(path, size, mtime):
    return file_sha256(path)


def content(path):
    """sha256 of a file (computed once per file version), None when there is no such file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _device(ngpu):
    if ngpu <= 0:
        return "cpu"
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _subset_files(flags):
    """{"content of --mask_path": sha256, ...} as train_subset.py fingerprints them, or None when a file
    it reads is missing (the script will say so)."""
    files = {}
    for flag, path in (("--mask_path", flags.mask_path), ("--score_path", flags.score_path)):
        files[f"content of {flag}"] = content(path) if path and flags.selection != "random" else None
        if path and flags.selection != "random" and files[f"content of {flag}"] is None:
            return None
    if flags.selection == "beta":
        tag = file_tag(flags.mask_path, "data_mask_")
        mean_p = flags.mean_p_path or (os.path.join(os.path.dirname(flags.mask_path), mean_p_name(tag)) if tag else "")
        files["content of --mean_p_path"] = content(mean_p) if mean_p else None
        if files["content of --mean_p_path"] is None:
            return None
    if flags.teacher:
        files["content of --teacher"] = content(flags.teacher)
        if files["content of --teacher"] is None:
            return None
    return files


def planned_fingerprint(flags, script, recorded):
    """The run fingerprint the script would compute for these flags (see the module docstring), or None."""
    if not all(k in recorded for k in DATA_FACTS):
        return None
    facts = {"device": _device(flags.ngpu), "processes": 1, **{k: recorded[k] for k in DATA_FACTS}}
    if script == "train.py":
        return run_fingerprint(flags, **facts)
    files = _subset_files(flags)
    return None if files is None else run_fingerprint(flags, **facts, **files)


def run_done(flags, script):
    """metrics.json of the run that `flags` (train.py or train_subset.py) would find done, or None."""
    folder = flags.save_path
    state = read_state(folder)
    if state.get("state") not in ("finished", "stopped") or not isinstance(state.get("fingerprint"), dict):
        return None
    fingerprint = planned_fingerprint(flags, script, state["fingerprint"])
    if fingerprint is None:
        return None
    try:
        decision = decide_run(folder, fingerprint, resume=flags.resume, overwrite=flags.overwrite,
                              stop_epoch=getattr(flags, "stop_epoch", None))
    except UserError:
        return None
    metrics = load_json(os.path.join(folder, "metrics.json"), None)
    return metrics if decision["action"] == "done" and isinstance(metrics, dict) else None


def done_text(save, metrics):
    """The line for a run its records show done (accuracies rounded, as in every message)."""
    acc = ", ".join(f"{k} {metrics[k + '_acc']:.2f}%" for k in ("final", "best")
                    if isinstance(metrics.get(k + "_acc"), (int, float)))
    what = "finished" if metrics.get("finished", True) else f"stopped after epoch {metrics.get('completed_epochs')}"
    return f"already {what}: {save}{f' ({acc})' if acc else ''}; from its records, no process started"


def scoring_done(flags):
    """The info_<tag>.json paths of a scoring that importance_evaluation.py would find already scored, or None."""
    if flags.method in ("moderate",) or flags.data_path or flags.dataset:   # (labels from the data set: the script)
        return None
    combos, _ = combinations(flags.method, flags.trajectory_len, flags.window_size, flags.decay)
    if not combos:
        return None
    several = {"name_decay": len(set(flags.decay)) > 1, "name_window": len(set(flags.window_size)) > 1}
    try:
        dyn = Dynamics(flags.dynamics_path, max(T for T, _, _ in combos))
        targets = method_labels(dyn, flags.method)
    except UserError:
        return None
    done = []
    for T, K, beta in combos:
        tag = output_tag(flags.method, T, K, beta, **several)
        info = read_info(flags.mask_path, tag)
        scoring = {"method": flags.method, "trajectory_len": T, "window_size": K, "decay": beta,
                   "seed": flags.manualSeed if flags.method == "random" else None, "num_samples": dyn.n,
                   "dynamics": dyn.identity(T) if flags.method != "random" else None,
                   "labels": f"sha256 {array_sha256(targets)[:16]}" if targets is not None else None}
        if info.get("scoring") != scoring or not _intact(flags.mask_path, info):
            return None
        done.append(os.path.join(flags.mask_path, f"info_{tag}.json"))
    return done


def _intact(mask_dir, info):
    """Every array the record vouches for is there, with the sha256 it records."""
    names, sums = info.get("files") or {}, info.get("sha256") or {}
    return all(names.get(k) and sums.get(k) and content(os.path.join(mask_dir, names[k])) == sums[k] for k in ARRAYS)


# ------------------------------------------------------------------------------------------ stage 3
def _newest(paths):
    newest = 0
    for p in paths:
        try:
            newest = max(newest, os.stat(p).st_mtime_ns)
        except OSError:
            pass
    return newest


def _files(top, skip_dirs=(), skip=lambda name: False):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip_dirs]
        yield from (os.path.join(folder, f) for f in files if not skip(f))


def _code(script):
    """The script and every module of utils/ it may run: a newer version makes its outputs stale."""
    utils = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [script, *_files(utils, skip=lambda f: not f.endswith(".py"))]


SUMMARY = ("results.md", "results.csv")


def summary_fresh(argv):
    """Are the outputs of a stage-3 command (scripts/summarize.py OUT, scripts/report.py MASK_DIR --rates ...)
    newer than everything they read (the folder's files and the code), so that running it again would
    write the same? Asked only when no other command of the sweep started a process."""
    script, args = str(argv[1]), [str(a) for a in argv[2:]]
    name = os.path.basename(script)
    if name == "summarize.py" and len(args) == 1:
        out = args[0]
        outputs = [os.path.join(out, f) for f in SUMMARY]
        inputs = _files(out, skip_dirs={os.path.join(out, "plans"), os.path.join(out, "masks", "report")},
                        skip=lambda f: f in SUMMARY or f.endswith((".log", ".png")))
    elif name == "report.py" and len(args) >= 3 and args[1] == "--rates":
        folder = os.path.join(args[0], "report")
        outputs = [os.path.join(folder, "report.md"), os.path.join(folder, "class_counts.json")]
        counts = load_json(outputs[1], {})
        shown = {r for c in counts.values() if isinstance(c, dict) for r in c} if isinstance(counts, dict) else set()
        if shown != {f"{float(r):g}" for r in args[2:]}:
            return False
        inputs = _files(args[0], skip_dirs={folder})
    else:
        return False
    if not all(os.path.isfile(p) for p in outputs):
        return False
    return min(os.stat(p).st_mtime_ns for p in outputs) > _newest([*inputs, *_code(script)])
