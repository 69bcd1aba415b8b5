"""Summarize a sweep: every metrics.json under OUT -> results.csv, results.md and plots.

    python scripts/summarize.py ./checkpoint/sweep

- results.csv: one row per run (a program reads it).
- results.md: method x pruning-rate tables of the FINAL test top-1 accuracy (last epoch) and of the
  BEST test accuracy over epochs (what the published logs report), "mean ± std (n=…)" over seeds
  (sample standard deviation, ddof=1) or the plain value for a single run, with the full-data run
  as a reference line; then the compute each result cost (the cost ledger, below), the kept set's
  mean loss weight u for runs with the published score weighting, and, when the
  runs used --label_noise / --corrupt_ratio, the fraction of the kept set that is mislabeled /
  corrupted.
- accuracy_vs_pruning.png (one line per method, seed error bars, full data dashed),
  accuracy_vs_cost.png (accuracy against the total compute), and kept_flagged_vs_pruning.png when
  there are noisy or corrupted samples.

A run's label is its method ("random" when the selection was random), plus "-ccs" (coverage-centric
selection), "-beta" (DUAL's Beta sampling), "-cb" (class-balanced), "-unweighted" (--no_score_weighting),
"-iters" (--budget iterations), "-kd" (distilled from a --teacher), "(batch 50%: 128, 90%: 32)" when the
subset runs differ in batch size, and "[A→B]" when the scores came from architecture A's dynamics and the subset trained
architecture B, so variants never share a cell. Runs that share a label and a rate are averaged as
seeds only when nothing else differs: where their data set, architectures, schedule (epochs, optimizer
steps) or scores (the score tag) differ, the label names the difference, e.g. "tdds (epochs=4)".

Cost ledger: seconds of training compute (train_seconds: the training loops, without evaluation)
and of scoring (importance_evaluation.py's info_<tag>.json), as a fraction of ONE full-data training
of the same schedule (the full run's seconds per epoch x its --epochs):
  dynamics = the epochs the full-data run recorded (after --stop_epoch), for methods that need them
  scoring  = the importance_evaluation.py call that wrote the scores
  subset   = the subset run itself (with a --teacher, its forward passes included)
  teacher  = the --teacher's own training, when it is not the run whose dynamics are charged above
"""
import csv
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.args import Parser  # noqa: E402
from utils.errors import UserError, run  # noqa: E402
from utils.io import save_figure, save_text  # noqa: E402

CSV_COLUMNS = ["run", "label", "method", "selection", "class_balanced", "score_weighting", "budget", "subset_rate",
               "seed", "final_acc", "best_acc", "epochs", "steps", "completed_epochs", "finished", "batch_size",
               "num_train_samples", "mean_weight", "beta_c", "kd_alpha", "kd_temperature", "teacher",
               "train_seconds", "teacher_forward_seconds", "seconds", "dataset", "arch", "scored_arch",
               "cost_dynamics", "cost_scoring", "cost_subset", "cost_teacher", "cost_total",
               "kept_mislabeled_fraction", "mislabeled_kept_fraction", "kept_corrupted_fraction",
               "corrupted_kept_fraction"]
FULL = "full"  # label of the full-data run(s)
FLAGGED = {"mislabeled": "kept_mislabeled_fraction", "corrupted": "kept_corrupted_fraction"}


def run_label(m):
    """Table row of a run (see the module docstring)."""
    if m.get("subset_rate", 0.0) == 0.0 and m.get("method", FULL) == FULL:
        return FULL
    label = "random" if m.get("selection") == "random" else m.get("method", "unknown")
    if m.get("selection") in ("ccs", "beta"):
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
    return label


def collect_runs(out):
    """Every metrics.json under `out`, as dicts with "run" (folder relative to out) and "label" added."""
    runs = []
    for folder, dirs, files in os.walk(out):
        dirs.sort()  # deterministic order
        if "metrics.json" not in files:
            continue
        path = os.path.join(folder, "metrics.json")
        try:
            with open(path) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: {e}") from None
        if not isinstance(m, dict) or "final_acc" not in m:
            raise UserError(f"{path} has no final_acc: expected the metrics.json of a training run")
        if m["final_acc"] is None:
            continue   # started, no epoch finished yet
        m["subset_rate"] = float(m.get("subset_rate", 0.0))
        m["final_acc"] = float(m["final_acc"])
        m["run"] = os.path.relpath(folder, out)
        m["path"] = os.path.abspath(folder)
        m["label"] = run_label(m)
        runs.append(m)
    name_differences(runs)
    runs.sort(key=lambda m: (m["label"] != FULL, m["label"], m["subset_rate"], str(m.get("seed")), m["run"]))
    add_costs(runs)
    return runs


def _setting(m, key):
    if key == "score":
        return (m.get("score_info") or {}).get("tag")
    return m.get(key)


SEED_INVARIANT = ("dataset", "arch", "scored_arch", "epochs", "steps", "score")   # steps: the batch size too


def name_differences(runs):
    """Runs of one (label, rate) that differ in more than the seed get the differing settings in their
    label, so that the tables never average unrelated runs as if they were seeds."""
    groups = {}
    for m in runs:
        if m["label"] != FULL:   # the reference line
            groups.setdefault((m["label"], m["subset_rate"]), []).append(m)
    for group in groups.values():
        differing = [k for k in SEED_INVARIANT if len({json.dumps(_setting(m, k)) for m in group}) > 1]
        for m in group if differing else ():
            m["label"] += " (" + ", ".join(f"{k}={_setting(m, k)}" for k in differing) + ")"


# ------------------------------------------------------------------------------------------------ cost
def _epoch_seconds(m):
    done = m.get("completed_epochs") or len(m.get("history", [])) or 0
    return m.get("train_seconds", 0.0) / done if done else None


def add_costs(runs):
    """Add cost_dynamics, cost_scoring, cost_subset, cost_teacher, cost_total (fractions of one full-data
    training) to every subset run whose full-data run (same data set, the scored architecture) is among
    `runs`. cost_teacher is the --teacher's own training, unless that run is the one whose dynamics are
    already charged; the teacher's forward passes are part of the subset's train_seconds (and are
    shown as teacher_forward_seconds). Where subset runs differ in batch size (sweep.sh RATE_FLAGS),
    each label names its runs' batch size per rate."""
    batch = {}   # label -> {rate: batch sizes}
    for m in runs:
        if m["label"] != FULL and m.get("batch_size"):
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
        if m["label"] == FULL and _epoch_seconds(m):
            fulls.setdefault((m.get("dataset"), m.get("arch")), m)
            by_path[m["path"]] = m
    for m in runs:
        is_full = m["label"] == FULL
        arch = m.get("arch") if is_full else (m.get("scored_arch") or m.get("arch"))
        scored_run = (m.get("score_info") or {}).get("dynamics_run")
        # the run whose dynamics were scored, when it is in this folder; else one of the same data set and architecture
        full = by_path.get(m["path"] if is_full else scored_run) or fulls.get((m.get("dataset"), arch))
        if full is None:
            continue
        one_training = _epoch_seconds(full) * full.get("epochs", 0)   # seconds of one full-data training
        if is_full:
            m["cost_total"] = m.get("train_seconds", 0.0) / one_training
            continue
        needs_dynamics = m.get("selection") != "random"
        info = m.get("score_info") or {}
        m["cost_dynamics"] = full.get("train_seconds", 0.0) / one_training if needs_dynamics else 0.0
        m["cost_scoring"] = (info.get("seconds") or 0.0) / one_training if needs_dynamics else 0.0
        m["cost_subset"] = m.get("train_seconds", 0.0) / one_training
        charged = needs_dynamics and m.get("teacher_run") == full["path"]   # the teacher recorded the dynamics
        m["cost_teacher"] = (m.get("teacher_train_seconds") or 0.0) / one_training if m.get("teacher") and not charged \
            else 0.0
        m["cost_total"] = m["cost_dynamics"] + m["cost_scoring"] + m["cost_subset"] + m["cost_teacher"]


# ------------------------------------------------------------------------------------------------ tables
def aggregate(runs, key="final_acc"):
    """{(label, rate): (mean, std, n)} of `key` over the runs that have it; std is the sample std
    (ddof=1), 0 for one run."""
    values = {}
    for m in runs:
        if m.get(key) is not None:
            values.setdefault((m["label"], m["subset_rate"]), []).append(float(m[key]))
    return {k: (float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0, len(a))
            for k, a in values.items()}


def format_cell(mean, std, n, fmt="{:.2f}"):
    return fmt.format(mean) if n == 1 else f"{fmt.format(mean)} ± {fmt.format(std)} (n={n})"


def csv_text(runs):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    return buf.getvalue()


def table(stats, title, fmt="{:.2f}"):
    """A method x pruning-rate markdown table of `stats` (from aggregate), the full data excluded."""
    labels = sorted({label for label, _ in stats if label != FULL})
    rates = sorted({rate for label, rate in stats if label != FULL})
    if not labels:
        return []
    lines = [f"## {title}", "", "| method | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |",
             "|---" * (len(rates) + 1) + "|"]
    for label in labels:
        cells = [format_cell(*stats[label, r], fmt=fmt) if (label, r) in stats else "–" for r in rates]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(runs):
    """results.md: accuracy tables (final, best), the cost ledger, the kept noisy/corrupted fractions."""
    datasets = sorted({str(m.get("dataset", "?")) for m in runs})
    archs = sorted({str(m.get("arch", "?")) for m in runs})
    n_full = sum(m["label"] == FULL for m in runs)
    lines = [f"# Results: {', '.join(datasets)} / {', '.join(archs)}", ""]
    fulls = [m for m in runs if m["label"] == FULL]
    if fulls:
        final, best = aggregate(fulls), aggregate(fulls, "best_acc")
        text = f"final {format_cell(*next(iter(final.values())))}"
        if best:
            text += f", best {format_cell(*next(iter(best.values())))}"
        if not all(m.get("finished", True) for m in fulls):
            text += (f" after {fulls[0].get('completed_epochs')} of {fulls[0].get('epochs')} epochs "
                     f"(stopped early: the dynamics run)")
        lines.append(f"Full data (reference): {text}")
    lines.append(f"{len(runs) - n_full} subset runs" + (f" (+ {n_full} full-data run)" if n_full else "") +
                 "; cells are mean ± sample std over seeds when n > 1; columns are pruning rates "
                 "(fraction of the data removed).")
    lines.append("")
    lines += table(aggregate(runs), "Final test accuracy (%) — the last epoch")
    lines += table(aggregate(runs, "best_acc"), "Best test accuracy (%) over epochs — what the published logs report")
    cost = aggregate(runs, "cost_total")
    if any(label != FULL for label, _ in cost):
        lines += table(cost, "Compute, as a fraction of one full-data training (dynamics + scoring + subset)",
                       fmt="{:.3f}")
        lines += ledger_rows(runs)
    lines += table(aggregate(runs, "mean_weight"), "Mean loss weight u of the kept set — the published score "
                   "weighting scales the effective learning rate by about this factor", fmt="{:.3f}")
    for name, key in FLAGGED.items():
        lines += table(aggregate(runs, key), f"Fraction of the kept set that is {name}", fmt="{:.3f}")
    return "\n".join(lines) + "\n"


def ledger_rows(runs):
    """The parts of each run's cost, one row per run."""
    rows = [m for m in runs if m["label"] != FULL and m.get("cost_total") is not None]
    lines = ["| run | dynamics | scoring | subset | total |", "|---|---|---|---|---|"]
    for m in rows:
        lines.append(f"| {m['run']} | {m['cost_dynamics']:.3f} | {m['cost_scoring']:.4f} | {m['cost_subset']:.3f} | "
                     f"{m['cost_total']:.3f} |")
    return lines + [""]


# ------------------------------------------------------------------------------------------------ plots
def _lines(ax, stats, x_of=None):
    for label in sorted({label for label, _ in stats if label != FULL}):
        rates = sorted(r for lab, r in stats if lab == label)
        mean, std, _ = np.array([stats[label, r] for r in rates]).T  # (3, R)
        x = 100 * np.array(rates) if x_of is None else np.array([x_of(label, r) for r in rates])
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)


def _save(fig, ax, runs, path, legend_loc="best"):
    ax.grid(alpha=0.3)
    ax.set_title(" / ".join(", ".join(sorted({str(m.get(k, "?")) for m in runs})) for k in ("dataset", "arch")))
    ax.legend(fontsize=8, loc=legend_loc)
    save_figure(path, fig)
    import matplotlib.pyplot as plt
    plt.close(fig)


def plot(runs, path):
    """Accuracy vs pruning rate, one line per label with seed error bars; full data dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _lines(ax, stats)
    full = [v for (label, _), v in stats.items() if label == FULL]
    if full:
        ax.axhline(full[0][0], color="k", linestyle="--", linewidth=1, label=f"full data ({full[0][0]:.2f})")
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("final test accuracy (%)")
    _save(fig, ax, runs, path, "lower left")  # accuracy falls with the rate: lower left stays empty


def plot_cost(runs, path):
    """Final accuracy against total compute (fraction of one full-data training), a line per label
    through its pruning rates; the full-data training is the point (1, its accuracy)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats, cost = aggregate(runs), aggregate(runs, "cost_total")
    stats = {k: v for k, v in stats.items() if k in cost and k[0] != FULL}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _lines(ax, stats, x_of=lambda label, r: cost[label, r][0])
    full = [v for (label, _), v in aggregate(runs).items() if label == FULL]
    if full:
        ax.plot([1.0], [full[0][0]], "k*", markersize=12, label=f"full-data training ({full[0][0]:.2f})")
    ax.set_xlabel("compute: dynamics + scoring + subset training (x one full-data training)")
    ax.set_ylabel("final test accuracy (%)")
    _save(fig, ax, runs, path, "lower right")


def plot_flagged(runs, path):
    """Fraction of the kept set that is mislabeled / corrupted, against the pruning rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {name: aggregate(runs, key) for name, key in FLAGGED.items() if aggregate(runs, key)}
    fig, axes = plt.subplots(1, len(present), figsize=(6.4 * len(present), 4.4), squeeze=False)
    for ax, (name, stats) in zip(axes[0], present.items()):
        _lines(ax, stats)
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(f"fraction of the kept set that is {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(path, fig)
    plt.close(fig)


def summarize(out):
    """Write the summary files into `out`; returns the markdown."""
    if not os.path.isdir(out):
        raise UserError(f"{out} is not a folder: expected a sweep folder holding metrics.json files")
    runs = collect_runs(out)
    if not runs:
        raise UserError(f"no metrics.json under {out}: run scripts/sweep.sh (or train.py / train_subset.py) first")
    text = markdown(runs)
    save_text(os.path.join(out, "results.csv"), csv_text(runs))
    save_text(os.path.join(out, "results.md"), text)
    plot(runs, os.path.join(out, "accuracy_vs_pruning.png"))
    if any(m.get("cost_total") is not None and m["label"] != FULL for m in runs):
        plot_cost(runs, os.path.join(out, "accuracy_vs_cost.png"))
    if any(m.get(key) is not None for m in runs for key in FLAGGED.values()):
        plot_flagged(runs, os.path.join(out, "kept_flagged_vs_pruning.png"))
    return text


def main(argv=None):
    parser = Parser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("out", help="sweep folder, searched recursively for metrics.json")
    args = parser.parse_args(argv)
    print(summarize(args.out), end="")


if __name__ == "__main__":
    run(main)
