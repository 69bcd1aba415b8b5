"""Summarize a sweep: every metrics.json under OUT -> results.csv, results.md, accuracy_vs_pruning.png.

    python scripts/summarize.py ./checkpoint/sweep

results.csv has one row per run (a program reads it); results.md is a method x pruning-rate table of
final test top-1 accuracy, "mean ± std (n=…)" over seeds (std: sample standard deviation, ddof=1)
or the plain value for a single run, with the full-data run as a reference line;
accuracy_vs_pruning.png draws one line per method with error bars and the full data dashed.
A run's label is its method ("random" when the selection was random), plus "-ccs" for coverage-
centric selection and "-cb" for class-balanced selection, so variants never share a cell.
"""
import argparse
import csv
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.errors import UserError, run  # noqa: E402
from utils.io import save_figure, save_text  # noqa: E402

CSV_COLUMNS = ["run", "label", "method", "selection", "class_balanced", "subset_rate", "seed",
               "final_acc", "best_acc", "epochs", "num_train_samples", "train_seconds", "seconds",
               "dataset", "arch"]
FULL = "full"  # label of the full-data run(s)


def run_label(m):
    """Table row of a run: method, "random" for random selection, -ccs / -cb / -unweighted for the
    variants (-unweighted: a scored run trained with --no_score_weighting)."""
    if m.get("subset_rate", 0.0) == 0.0 and m.get("method", FULL) == FULL:
        return FULL
    label = "random" if m.get("selection") == "random" else m.get("method", "unknown")
    if m.get("selection") == "ccs":
        label += "-ccs"
    if m.get("class_balanced"):
        label += "-cb"
    if m.get("score_weighting") is False and m.get("selection") != "random":
        label += "-unweighted"
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
        m["subset_rate"] = float(m.get("subset_rate", 0.0))
        m["final_acc"] = float(m["final_acc"])
        m["run"] = os.path.relpath(folder, out)
        m["label"] = run_label(m)
        runs.append(m)
    runs.sort(key=lambda m: (m["label"] != FULL, m["label"], m["subset_rate"], str(m.get("seed")), m["run"]))
    return runs


def aggregate(runs):
    """{(label, rate): (mean, std, n)} of final_acc; std is the sample std (ddof=1), 0 for one run."""
    accs = {}
    for m in runs:
        accs.setdefault((m["label"], m["subset_rate"]), []).append(m["final_acc"])
    return {key: (float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0, len(a))
            for key, a in accs.items()}


def format_cell(mean, std, n):
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f} (n={n})"


def csv_text(runs):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    return buf.getvalue()


def markdown_table(runs):
    """Method x pruning-rate table of final test accuracy (%), full data as a reference line above."""
    stats = aggregate(runs)
    labels = sorted({label for label, _ in stats if label != FULL})
    rates = sorted({rate for label, rate in stats if label != FULL})
    datasets = sorted({str(m.get("dataset", "?")) for m in runs})
    archs = sorted({str(m.get("arch", "?")) for m in runs})
    lines = [f"# Final test accuracy (%): {', '.join(datasets)} / {', '.join(archs)}", ""]
    full = [v for (label, _), v in stats.items() if label == FULL]
    if full:
        lines.append(f"Full data (reference): {format_cell(*full[0])}")
    lines.append(f"{len(runs)} runs; cells are mean ± sample std over seeds when n > 1; "
                 "columns are pruning rates (fraction of the data removed).")
    lines.append("")
    if labels:
        lines.append("| method | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |")
        lines.append("|---" * (len(rates) + 1) + "|")
        for label in labels:
            cells = [format_cell(*stats[label, r]) if (label, r) in stats else "–" for r in rates]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs, path):
    """Accuracy vs pruning rate, one line per label with seed error bars; full data dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label in sorted({label for label, _ in stats if label != FULL}):
        rates = sorted(r for lab, r in stats if lab == label)
        mean, std, _ = np.array([stats[label, r] for r in rates]).T  # (3, R)
        ax.errorbar(100 * np.array(rates), mean, yerr=std, marker="o", capsize=3, label=label)
    full = [v for (label, _), v in stats.items() if label == FULL]
    if full:
        ax.axhline(full[0][0], color="k", linestyle="--", linewidth=1, label=f"full data ({full[0][0]:.2f})")
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(" / ".join(", ".join(sorted({str(m.get(k, "?")) for m in runs})) for k in ("dataset", "arch")))
    ax.legend(fontsize=8, loc="lower left")  # accuracy falls with the rate: lower left stays empty
    save_figure(path, fig)
    plt.close(fig)


def summarize(out):
    """Write the three summary files into `out`; returns the markdown table."""
    if not os.path.isdir(out):
        raise UserError(f"{out} is not a folder: expected a sweep folder holding metrics.json files")
    runs = collect_runs(out)
    if not runs:
        raise UserError(f"no metrics.json under {out}: run scripts/sweep.sh (or train.py / train_subset.py) first")
    table = markdown_table(runs)
    save_text(os.path.join(out, "results.csv"), csv_text(runs))
    save_text(os.path.join(out, "results.md"), table)
    plot(runs, os.path.join(out, "accuracy_vs_pruning.png"))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="sweep folder, searched recursively for metrics.json")
    args = parser.parse_args(argv)
    print(summarize(args.out), end="")


if __name__ == "__main__":
    run(main)
