"""The compute each run of a study cost (scripts/summarize.py's ledger): in work, samples forwarded
and backpropagated as a fraction of one full-data training, independent of threads and machines;
and in seconds, each stage's seconds as a fraction of one full-data training's, thread-seconds where
the sweep recorded the threads. The definitions are in scripts/summarize.py's docstring."""
from utils.study.runs import counts, is_dynamic, read_runs


def collect_runs(out):
    """Every run under `out` (utils.study.runs.read_runs) with its compute added (add_costs, add_work)."""
    runs = read_runs(out)
    add_costs(runs)
    add_work(runs)
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
    training) to every subset run whose full-data run (same data set, the scored architecture) is among
    `runs`. cost_teacher is the --teacher's own training, unless that run is the one whose dynamics are
    already charged; the teacher's forward passes are part of the subset's train_seconds (and are
    shown as teacher_forward_seconds). Where subset runs differ in batch size (sweep.sh RATE_FLAGS),
    each label names its runs' batch size per rate."""
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
    fulls, by_path = {}, {}
    for m in runs:
        if m["is_full"] and _epoch_seconds(m):
            fulls.setdefault((m.get("dataset"), m.get("arch")), m)
            by_path[m["path"]] = m
    for m in runs:
        is_full = m["is_full"]
        arch = m.get("arch") if is_full else (m.get("scored_arch") or m.get("arch"))
        scored_run = (m.get("score_info") or {}).get("dynamics_run")
        # the run whose dynamics were scored, when it is in this folder; else one of the same data set and architecture
        full = by_path.get(m["path"] if is_full else scored_run) or fulls.get((m.get("dataset"), arch))
        if full is None:
            continue
        one_training = _epoch_seconds(full) * full.get("epochs", 0)   # seconds of one full-data training
        # thread-seconds where the sweep recorded the threads: a run beside others got fewer threads each (the
        # dynamics and the scoring ran alone, in stage 1, with the full-data run's threads)
        own = m["threads"] / full["threads"] if m.get("threads") and full.get("threads") else 1.0
        if is_full or is_dynamic(m):
            m["cost_total"] = m.get("train_seconds", 0.0) * own / one_training
            if not is_full:
                m["cost_dynamics"] = m["cost_scoring"] = m["cost_teacher"] = 0.0
                m["cost_subset"] = m["cost_total"]
            continue
        needs_dynamics = m.get("selection") != "random"
        info = m.get("score_info") or {}
        # the epochs of the full-data run the score used (not the rest of it: FULL_ACC=1 trains on for the reference)
        T = None if "moderate" in (info.get("method"), m.get("method")) else info.get("trajectory_len")
        used = _dynamics_seconds(full, T) if needs_dynamics else 0.0
        m["cost_dynamics"] = used / one_training
        m["cost_scoring"] = (info.get("seconds") or 0.0) / one_training if needs_dynamics else 0.0
        m["cost_subset"] = m.get("train_seconds", 0.0) * own / one_training
        charged = needs_dynamics and m.get("teacher_run") == full["path"]   # the teacher recorded the dynamics
        teacher = full.get("train_seconds", 0.0) - used if charged else (m.get("teacher_train_seconds") or 0.0)
        m["cost_teacher"] = max(teacher, 0.0) / one_training if m.get("teacher") else 0.0
        m["cost_total"] = m["cost_dynamics"] + m["cost_scoring"] + m["cost_subset"] + m["cost_teacher"]


def _trained(m):
    """Samples forwarded and backpropagated in the run's training (each epoch's "samples")."""
    history = m.get("history") or []
    if history and all("samples" in h for h in history):
        return float(sum(h["samples"] for h in history))
    return float((m.get("num_train_samples") or 0) * (m.get("completed_epochs") or len(history)))


def add_work(runs):
    """work_*: compute counted in samples forwarded and backpropagated, as a fraction of one full-data
    training (E epochs x N samples; E and N of the run's own schedule and data set), so that it does not
    depend on threads, jobs side by side or the machine:
      full-data and dynamic runs: the samples they trained / (E N)
      static (subset) runs: work_dynamics = T N / (E N) = T / E, the epochs of the dynamics run its scores
      used (moderate: the whole run, E / E), 0 for random selection; work_subset = the samples it
      trained / (E N); work_teacher = the teacher's training where the run distils (E N, less the
      dynamics already charged when the teacher is the run that recorded them)
    work_forward counts forward-only passes apart: the teacher's forward pass of every trained sample and
    moderate's features (N). Evaluation passes are not counted (every run of a schedule evaluates alike)."""
    full_n = {m.get("dataset"): m.get("num_train_samples") for m in runs if m["is_full"] and m.get("num_train_samples")}
    for m in runs:
        n = m.get("full_train_samples") or (m.get("num_train_samples") if m["is_full"] else None) \
            or (m.get("score_info") or {}).get("num_samples") or full_n.get(m.get("dataset"))
        e = m.get("epochs")
        if not n or not e or (not counts(m) and not m["is_full"]):
            continue
        one = float(n) * float(e)
        if m["is_full"] or is_dynamic(m):
            m.update(work_dynamics=0.0, work_subset=_trained(m) / one, work_teacher=0.0, work_forward=0.0)
            m["work_total"] = m["work_subset"]
            if is_dynamic(m):
                m["dynamic_ratio"] = m.get("dynamic_ratio", m["subset_rate"])
            continue
        info = m.get("score_info") or {}
        if m.get("selection") == "random":
            dyn = 0.0
        elif info.get("method") == "moderate" or m.get("method") == "moderate":
            dyn = 1.0
        else:
            dyn = (info.get("trajectory_len") or 0) / e
        m["work_dynamics"] = dyn
        m["work_subset"] = _trained(m) / one
        m["work_teacher"] = (1.0 - dyn if dyn and m.get("teacher_run") == (m.get("score_info") or {}).get(
            "dynamics_run") else 1.0) if m.get("teacher") else 0.0
        m["work_forward"] = ((_trained(m) if m.get("teacher") else 0.0) +
                             (float(n) if m.get("method") == "moderate" else 0.0)) / one
        m["work_total"] = m["work_dynamics"] + m["work_subset"] + m["work_teacher"]


def pareto_front(points):
    """The points (compute, accuracy) that no other point beats: none has at most their compute and a
    higher accuracy, or less compute and at least their accuracy. Sorted by compute."""
    front = [p for p in points if not any((q[0] <= p[0] and q[1] > p[1]) or (q[0] < p[0] and q[1] >= p[1])
                                          for q in points)]
    return sorted(set(front))

