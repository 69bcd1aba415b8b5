"""The compute each run of a study cost (scripts/summarize.py's ledger): in work, samples forwarded
and backpropagated as a fraction of one full-data training, independent of threads and machines;
and in seconds, each stage's seconds as a fraction of one full-data training's, thread-seconds where
the sweep recorded the threads. The definitions are in scripts/summarize.py's docstring."""
import os

from utils.study.factors import Factors, static_scoring, teacher_work
from utils.study.fidelity import add_fidelity
from utils.study.runs import counts, is_dynamic, read_runs


def collect_runs(out):
    """Every run under `out` (utils.study.runs.read_runs) with its compute added (add_costs, add_work,
    add_amortised) and, where its scores are not the reference's, their rank fidelity (add_fidelity)."""
    runs = read_runs(out)
    add_costs(runs)
    add_work(runs)
    add_amortised(runs)
    add_fidelity(runs, out)
    return runs


def _epoch_seconds(m):
    done = m.get("completed_epochs") or len(m.get("history", [])) or 0
    return m.get("train_seconds", 0.0) / done if done else None


def _dynamics_seconds(full, T):
    """Seconds of the full-data run's epochs 0 .. T-1, the dynamics a score used (its per-epoch seconds);
    the whole run where T is not known (moderate scores the trained model)."""
    history = full.get("history") or []
    if not T:
        return full.get("train_seconds", 0.0)
    if history and all("train_seconds" in h and "epoch" in h for h in history):
        return float(sum(h["train_seconds"] for h in history if h["epoch"] < T))
    done = full.get("completed_epochs") or len(history)
    return min(T, done) * (_epoch_seconds(full) or 0.0)


def add_costs(runs):
    """Add cost_dynamics, cost_scoring, cost_subset, cost_teacher, cost_total (fractions of one full-data
    training of the run's own architecture) to every subset run whose unit is among `runs`: the
    full-data run its scores came from, when it is one of that architecture; else that architecture's
    full-data run on the same data set (for a run scored by another architecture and no such run here,
    the scored architecture's, as before). The dynamics are the seconds of the run that
    recorded them (score_info's dynamics_run: the full-data run, a proxy's or a fraction's run), or of
    the full-data run of the scored architecture where that run is not here. cost_teacher is the
    --teacher's own training, unless that run is the one whose dynamics are already charged; the
    teacher's forward passes are part of the subset's train_seconds (and are shown as
    teacher_forward_seconds). Where subset runs differ in batch size (sweep.sh RATE_FLAGS), each label
    names its runs' batch size per rate."""
    _label_batches(runs)
    fulls, timed = {}, {}
    for m in runs:
        if _epoch_seconds(m):
            timed[m["path"]] = m     # any run that can have recorded dynamics: full-data, proxy, fraction
            if m["is_full"]:
                fulls.setdefault((m.get("dataset"), m.get("arch")), m)
    for m in runs:
        if m["is_full"]:
            unit = m if _epoch_seconds(m) else fulls.get((m.get("dataset"), m.get("arch")))
            if unit is not None:
                _charge(m, unit, unit)
            continue
        if m.get("scoring_run"):
            continue
        scored = (m.get("score_info") or {}).get("dynamics_run")
        dynamics = timed.get(scored) or fulls.get((m.get("dataset"), m.get("scored_arch") or m.get("arch")))
        target = fulls.get((m.get("dataset"), m.get("arch")))
        own = dynamics is not None and dynamics["is_full"] and (dynamics.get("arch") == m.get("arch") or target is None)
        unit = dynamics if own else target    # the run that was scored, when it is a full-data training
        if unit is not None:
            _charge(m, unit, dynamics or unit)


def _label_batches(runs):
    batch = {}   # label -> {rate: batch sizes}
    for m in runs:
        if not m["is_full"] and m.get("batch_size"):
            batch.setdefault(m["label"], {}).setdefault(m["subset_rate"], set()).add(m["batch_size"])
        if m.get("teacher"):
            m["teacher_forward_seconds"] = sum(h.get("teacher_seconds", 0.0) for h in m.get("history", []))
    if len({b for rates in batch.values() for sizes in rates.values() for b in sizes}) > 1:
        names = {label: ", ".join(f"{100 * r:g}%: {'/'.join(map(str, sorted(b)))}" for r, b in sorted(rates.items()))
                 for label, rates in batch.items()}
        for m in runs:
            if m["label"] in names:
                m["label"] += f" (batch {names[m['label']]})"


def _threads(m, unit):
    """m's seconds in the unit's threads: thread-seconds where the sweep recorded both runs' threads (a
    run beside others got fewer threads each; the dynamics and the scoring ran alone, in stage 1, with
    the dynamics run's threads), else 1."""
    return m["threads"] / unit["threads"] if m.get("threads") and unit.get("threads") else 1.0


def _charge(m, unit, dynamics):
    """The cost_* of run m in seconds of one full-data training of `unit`; its scores' dynamics were
    recorded by `dynamics`."""
    one_training = _epoch_seconds(unit) * unit.get("epochs", 0)   # seconds of one full-data training
    own = _threads(m, unit)
    if m["is_full"] or is_dynamic(m):
        m["cost_total"] = m.get("train_seconds", 0.0) * own / one_training
        if not m["is_full"]:
            m["cost_dynamics"] = m["cost_scoring"] = m["cost_teacher"] = 0.0
            m["cost_subset"] = m["cost_total"]
        return
    needs_dynamics = m.get("selection") != "random"
    info = m.get("score_info") or {}
    stage1 = _threads(dynamics, unit)
    # the epochs of the dynamics run the score used (not the rest of it: FULL_ACC=1 trains on for the reference)
    T = None if "moderate" in (info.get("method"), m.get("method")) else info.get("trajectory_len")
    used = _dynamics_seconds(dynamics, T) if needs_dynamics else 0.0
    m["cost_dynamics"] = used * stage1 / one_training
    m["cost_scoring"] = (info.get("seconds") or 0.0) * stage1 / one_training if needs_dynamics else 0.0
    m["cost_subset"] = m.get("train_seconds", 0.0) * own / one_training
    charged = needs_dynamics and m.get("teacher_run") == dynamics["path"]   # the teacher recorded the dynamics
    teacher = (dynamics.get("train_seconds", 0.0) - used) * stage1 if charged else (m.get("teacher_train_seconds") or 0.0)
    m["cost_teacher"] = max(teacher, 0.0) / one_training if m.get("teacher") else 0.0
    m["cost_total"] = m["cost_dynamics"] + m["cost_scoring"] + m["cost_subset"] + m["cost_teacher"]


def _trained(m):
    """Samples forwarded and backpropagated in the run's training (each epoch's "samples")."""
    history = m.get("history") or []
    if history and all("samples" in h for h in history):
        return float(sum(h["samples"] for h in history))
    return float((m.get("num_train_samples") or 0) * (m.get("completed_epochs") or len(history)))


def schedule_epochs(m):
    """E of one full-data training in the run's schedule: its --epochs. A subset run under --budget
    iterations trains more, shorter epochs (as many steps as E epochs of the full data): metrics.json's
    epochs are those, its --epochs (the run's fingerprint) is the schedule's."""
    if m.get("budget") == "iterations":
        return (m.get("fingerprint") or {}).get("--epochs") or m.get("epochs")
    return m.get("epochs")


def add_work(runs):
    """work_*: compute counted in training passes of the run's own architecture (forward + backward of
    one sample = 1), as a fraction of one full-data training of it (E epochs x N samples; E and N of the
    run's own schedule and data set), so that it does not depend on threads, jobs side by side or the
    machine (docs/STUDIES.md, "Work across architectures"):
      full-data and dynamic runs: the samples they trained / (E N)
      static (subset) runs: work_dynamics = the scoring's work, utils.study.work.scoring_work(T, E, f,
      train factor, forward share): the T epochs of the dynamics run its scores used (moderate: the whole
      run) on the fraction f of the data that run trained, at the measured factor of the architecture
      that recorded them, plus the forward passes of its features (moderate, score extrapolation); 0 for
      random selection; work_subset = the samples it trained / (E N); work_teacher = the teacher's
      training where the run distils (E N at its architecture's factor, less the dynamics already
      charged when the teacher is the run that recorded them)
    work_forward shows the forward-only passes, each at its measured share of a training pass: the
    teacher's forward pass of every trained sample and the scoring's features. work_total = dynamics +
    subset + teacher + the teacher's forward passes. Evaluation passes are not counted (every run of a
    schedule evaluates alike). Returns the Factors measured (the ledger's table; none in most studies)."""
    factors = Factors()
    full_n = {m.get("dataset"): m.get("num_train_samples") for m in runs if m["is_full"] and m.get("num_train_samples")}
    for m in runs:
        n = m.get("full_train_samples") or (m.get("num_train_samples") if m["is_full"] else None) \
            or (m.get("score_info") or {}).get("num_samples") or full_n.get(m.get("dataset"))
        e = schedule_epochs(m)
        if not n or not e or (not counts(m) and not m["is_full"]):
            continue
        one = float(n) * float(e)
        if m["is_full"] or is_dynamic(m):
            m.update(work_dynamics=0.0, work_subset=_trained(m) / one, work_teacher=0.0, work_forward=0.0)
            m["work_total"] = m["work_subset"]
            if is_dynamic(m):
                m["dynamic_ratio"] = m.get("dynamic_ratio", m["subset_rate"])
            continue
        factors.run = m["factors"] = []
        scoring = static_scoring(m, e, factors)
        teacher, teacher_forward = teacher_work(m, e, _trained(m), n, scoring, factors)
        m.update(work_dynamics=scoring["work"], work_subset=_trained(m) / one, work_teacher=teacher,
                 work_forward=teacher_forward + scoring["features"], work_factor=scoring["train_factor"],
                 forward_share=scoring["forward_share"], scored_fraction=scoring["fraction"])
        m["work_total"] = m["work_dynamics"] + m["work_subset"] + m["work_teacher"] + teacher_forward
    return factors


def scoring_key(m):
    """What identifies the scoring a static run trained on: its dynamics run, its tag and the content of
    its mask (the sha256 its scoring's record vouches for; else the mask's folder)."""
    info = m.get("score_info") or {}
    sha = (info.get("sha256") or {}).get("mask") if isinstance(info.get("sha256"), dict) else None
    return info.get("dynamics_run"), info.get("tag"), sha or os.path.dirname(m.get("mask_path") or "")


def add_amortised(runs):
    """work_amortised: the amortised view of each counted run's work. A scoring used by u counted subset
    runs of the study (scoring_uses = u) is charged work_dynamics / u to each; the rest of the run's work
    is its own. Runs without a scoring (full-data, dynamic, random selection) are the same in both views."""
    uses = {}
    static = {id(m) for m in runs if counts(m) and m.get("work_total") is not None and m.get("work_dynamics")}
    for m in runs:
        if id(m) in static:
            uses[scoring_key(m)] = uses.get(scoring_key(m), 0) + 1
    for m in runs:
        if m.get("work_total") is None:
            continue
        u = uses.get(scoring_key(m)) if id(m) in static else None
        m["scoring_uses"] = u
        m["work_amortised"] = m["work_total"] - m["work_dynamics"] + m["work_dynamics"] / u if u else m["work_total"]


def pareto_front(points):
    """The points (compute, accuracy) that no other point beats: none has at most their compute and a
    higher accuracy, or less compute and at least their accuracy. Sorted by compute."""
    front = [p for p in points if not any((q[0] <= p[0] and q[1] > p[1]) or (q[0] < p[0] and q[1] >= p[1])
                                          for q in points)]
    return sorted(set(front))

