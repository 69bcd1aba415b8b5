"""Summarize a sweep: every metrics.json under OUT -> results.csv, results.md and plots.

    python scripts/summarize.py ./checkpoint/sweep

- results.csv: one row per run (a program reads it).
- results.md: method x pruning-rate tables of the FINAL test top-1 accuracy (last epoch) and of the
  BEST test accuracy over epochs (what the published logs report), "mean ± std (n=…)" over seeds
  (sample standard deviation, ddof=1) or the plain value for a single run, with the full-data run
  as a reference line; then the compute each result cost (in work and in seconds, below), the kept
  set's mean loss weight u for runs with the published score weighting, and, when the
  runs used --label_noise / --corrupt_ratio, the fraction of the kept set that is mislabeled /
  corrupted.
- accuracy_vs_pruning.png (one line per method, seed error bars, full data dashed),
  accuracy_vs_cost.png (accuracy against the total compute in work, one point per method and rate,
  static and dynamic methods, the Pareto front ringed), and kept_flagged_vs_pruning.png when there
  are noisy or corrupted samples.

Dynamic pruning runs (train.py --dynamic infobatch / rs2: full-data runs that prune as they go) are
rows beside the static methods, at the column of their --dynamic_ratio. results.md opens with a
warning where a score-weighted method lands more than 5 points below random at the same rate (the
published weighting scales every step by the kept set's mean weight u), and says why the reference
line and the seconds are missing when the folder holds no full-data run.

A run's label is its method ("random" when the selection was random), plus "-ccs" (coverage-centric
selection), "-beta" (DUAL's Beta sampling), "-cb" (class-balanced), "-unweighted" (--no_score_weighting),
"-iters" (--budget iterations), "-kd" (distilled from a --teacher), "(batch 50%: 128, 90%: 32)" when the
subset runs differ in batch size, "[A→B]" when the scores came from architecture A's dynamics and the subset trained
architecture B, and "[fraction f]" when they were extrapolated from a run on a fraction f of the data, so variants
never share a cell. The equal-work controls (OUT/random-ew, OUT/rs2-ew) are "random (equal work)" and "RS2 (equal
work)"; the scoring runs of a proxy (OUT/proxy-<arch>) or of a fraction are listed apart, never rows. Runs are averaged as seeds only when their run
fingerprints (folder.json: every setting that can change a result, and the content of the data, mask
and score files) differ in --manualSeed alone. Where runs of one label and rate differ in anything else,
the labels of that method name every differing setting, e.g. "random (decay=0.001)", "tdds (scores=win5_ep10)"
(and "[settings <hash>]" where the shown values alone would not tell them apart). A run trained on
a mask that its scoring's info_<tag>.json no longer vouches for (rescored with --overwrite since) is
labelled "(scores since replaced)".

Only finished runs enter the tables. A run that stopped before its last epoch (interrupted, failed,
running now, or --stop_epoch) is listed under "Unfinished runs" with its epoch, never averaged; the
full-data run stopped at T for its dynamics is the one exception, shown as such in the reference
line. When OUT/plan.txt (written by scripts/sweep.sh) names runs that have no results, results.md
lists them first, under "Missing runs".

Compute in work (add_work): training passes of the subset's architecture (forward and backward of one
sample = 1; another architecture's at its measured factor, a forward-only pass at its measured share),
as a fraction of one full-data training (E epochs x N samples); it does not depend on threads or
machines. Where the study has cheap sources (a proxy, a fraction, another T) or equal-work controls,
results.md shows it charged (each run pays its scoring whole) and amortised (a scoring used by u runs
charged / u to each), the measured factors, each row's rank fidelity against masks/ and each static
point beside its equal-work controls (utils/study/ledger.py; docs/STUDIES.md says how to read them).
Compute in seconds, the second column: seconds of training compute (train_seconds: the training loops,
without evaluation) and of scoring (importance_evaluation.py's info_<tag>.json), as a fraction of ONE
full-data training of the same schedule (the full run's seconds per epoch x its --epochs), in
thread-seconds where the sweep recorded each run's threads (OUT/threads.json):
  dynamics = the epochs 0 .. T-1 of the run that recorded the dynamics (the full-data run, a proxy's, a
             fraction's) that the scores used (moderate: the whole run), for
             methods that need them; a run trained on past T (FULL_ACC=1) is not charged its other epochs
  scoring  = the importance_evaluation.py call that wrote the scores
  subset   = the subset run itself (with a --teacher, its forward passes included)
  teacher  = the --teacher's own training, less the epochs already charged as dynamics when it is that run
"""
import csv
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.args import Parser  # noqa: E402
from utils.errors import UserError, run  # noqa: E402
from utils.protocol.files import save_figure, save_text  # noqa: E402
# (add_costs, pareto_front, run_label: also summarize.<name> for the tests that call them)
from utils.study.costs import add_costs, collect_runs, pareto_front  # noqa: E402,F401
from utils.study.ledger import (CHARGED, amortised_table, equal_work_lines, factors_lines, fidelity_lines,  # noqa: E402
                                format_cell, has_cheap_sources, scoring_run_lines, table)
from utils.study.runs import (EQUAL_WORK_LABELS, FULL, aggregate, counts, is_dynamic, missing_runs,  # noqa: E402,F401
                              read_plans, run_label)

CSV_COLUMNS = ["run", "label", "state", "method", "selection", "class_balanced", "score_weighting", "budget", "subset_rate",
               "seed", "final_acc", "best_acc", "epochs", "steps", "completed_epochs", "finished", "batch_size",
               "num_train_samples", "mean_weight", "beta_c", "kd_alpha", "kd_temperature", "teacher",
               "train_seconds", "teacher_forward_seconds", "seconds", "dataset", "arch", "scored_arch",
               "dynamic_ratio", "work_dynamics", "work_subset", "work_teacher", "work_total", "work_forward", "work_amortised",
               "scoring_uses", "work_factor", "forward_share", "scored_fraction", "rank_scoring", "rank_reference",
               "rank_rho", "kept_overlap", "threads",
               "cost_dynamics", "cost_scoring", "cost_subset", "cost_teacher", "cost_total",
               "kept_mislabeled_fraction", "mislabeled_kept_fraction", "kept_corrupted_fraction",
               "corrupted_kept_fraction"]
FLAGGED = {"mislabeled": "kept_mislabeled_fraction", "corrupted": "kept_corrupted_fraction"}
FAR_BELOW = 5.0   # points below random at which a score-weighted method's result gets a warning


def weighting_warnings(runs):
    """Where a score-weighted method lands far below random at the same rate: its steps were scaled by
    the kept set's mean weight u (the published weighting), the likeliest reason."""
    acc, u = aggregate(runs), aggregate(runs, "mean_weight")
    random = {rate: v[0] for (label, rate), v in acc.items() if label == "random"}
    weighted = {(m["label"], m["subset_rate"]) for m in runs if m.get("score_weighting") and counts(m)}
    lines = []
    for key in sorted(weighted):
        if key[1] in random and key in acc and key in u and acc[key][0] < random[key[1]] - FAR_BELOW:
            label, rate, mean_u = key[0], key[1], u[key][0]
            lines.append(f"- {label} at {100 * rate:g}%: {acc[key][0]:.2f} against random's {random[rate]:.2f}. "
                         f"Its runs used the published score weighting: every step is scaled by the kept set's mean "
                         f"weight u = {mean_u:.3f}, a learning rate about {1 / max(mean_u, 1e-9):.0f}x smaller. "
                         f"Train with --no_score_weighting (sweep: SUBSET_FLAGS=--no_score_weighting TAG=unweighted) "
                         f"to compare the selections alone.")
    return (["## Warning: score weighting", ""] + lines + [""]) if lines else []


def why_missing(runs):
    """Say why the reference line, the seconds ledger and the plot are missing, when they are."""
    subset = [m for m in runs if not m["is_full"] and counts(m)]
    if not subset or any(m["is_full"] and counts(m) for m in runs):
        return []
    elsewhere = sorted({str((m.get("score_info") or {}).get("dynamics_run")) for m in subset
                        if (m.get("score_info") or {}).get("dynamics_run")})
    lines = ["No full-data run in this folder" + (f" (the scores came from dynamics recorded elsewhere: "
             f"{', '.join(elsewhere)}, e.g. sweep.sh DYNAMICS=)" if elsewhere else "") +
             ": so there is no full-data reference line, and no compute in seconds (a fraction of that run's "
             "seconds per epoch)."]
    if not any(m.get("work_total") is not None for m in subset):
        lines[0] += " The compute in work needs each run's data-set size and epochs, which these runs do not record: " \
                    "no compute table and no accuracy_vs_cost.png."
    else:
        lines[0] += " The compute in work (samples trained) is counted all the same."
    return lines + [""]



def csv_text(runs):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    return buf.getvalue()


def reference_lines(runs):
    """One line per full-data experiment: its accuracy, epochs, and whether it stopped at T."""
    lines = []
    for label in sorted({m["label"] for m in runs if m["is_full"] and counts(m)}):
        ms = [m for m in runs if m["label"] == label and counts(m)]
        final, best = aggregate(ms)[label, 0.0], aggregate(ms, "best_acc").get((label, 0.0))
        text = f"final {format_cell(*final)}" + (f", best {format_cell(*best)}" if best else "")
        m = ms[0]
        if m["state"] == "stopped":
            text += (f" after {m.get('completed_epochs')} of {m.get('epochs')} epochs (stopped at T by --stop_epoch "
                     f"to record the dynamics: not a fully trained model)")
        else:
            text += f" after all {m.get('epochs')} epochs (finished)"
        differs = label[len(FULL) + 2:-1]   # "full (epochs=4)" -> "epochs=4"
        lines.append(f"Full data (reference{', ' + differs if differs else ''}): {text}")
    return lines


def markdown(runs, missing=(), plans=(), out=""):
    """results.md: missing and unfinished runs, accuracy tables (final, best), each variant beside the
    study's runs it shares (`plans`: utils.study.runs.read_plans), the cost ledger (with, where the
    study has them, the work factors, rank fidelity, the equal-work controls: utils/study/ledger.py),
    the kept noisy/corrupted fractions. `out`: the study folder the runs' folders are named against."""
    datasets = sorted({str(m.get("dataset", "?")) for m in runs})
    archs = sorted({str(m.get("arch", "?")) for m in runs if not m.get("scoring_run")})
    lines = [f"# Results: {', '.join(datasets)} / {', '.join(archs)}", ""]
    if missing:
        lines += ["## Missing runs", "", f"{len(missing)} run(s) of plan.txt have no results yet (failed, refused "
                  f"or not run): the tables below do not contain them.", ""]
        lines += [f"- {run}" for run in missing] + [""]
    unfinished = [m for m in runs if not counts(m) and not m.get("scoring_run")]
    if unfinished:
        lines += ["## Unfinished runs", "", "Never averaged: they stopped before their last epoch (or run now).", "",
                  "| run | label | state | epochs done | final acc so far |", "|---|---|---|---|---|"]
        for m in unfinished:
            acc = f"{m['final_acc']:.2f}" if m["final_acc"] is not None else "–"
            lines.append(f"| {m['run']} | {m['label']} | {m['state']} | {m.get('completed_epochs') or 0} of "
                         f"{m.get('epochs', '?')} | {acc} |")
        lines.append("")
    lines += weighting_warnings(runs)
    lines += reference_lines(runs)
    lines += why_missing(runs)
    n_full = sum(m["is_full"] and counts(m) for m in runs)
    n_sub = sum(not m["is_full"] and counts(m) for m in runs)
    lines.append(f"{n_sub} finished subset runs" + (f" (+ {n_full} full-data run)" if n_full else "") +
                 "; cells are mean ± sample std over seeds (runs whose settings differ in the seed alone) when "
                 "n > 1; columns are pruning rates (fraction of the data removed).")
    lines.append("")
    lines += table(aggregate(runs), "Final test accuracy (%) — the last epoch")
    lines += table(aggregate(runs, "best_acc"), "Best test accuracy (%) over epochs — what the published logs report")
    lines += variant_tables(runs, plans)
    lines += work_lines(runs, plans)
    cost = aggregate(runs, "cost_total")
    if any(rate > 0 for _, rate in cost):
        lines += table(cost, "Compute (seconds), as a fraction of one full-data training's seconds (dynamics + scoring "
                       "+ subset + teacher)" + threads_note(runs), fmt="{:.3f}")
    if any(rate > 0 for _, rate in aggregate(runs, "work_total")) or any(rate > 0 for _, rate in cost):
        lines += ledger_rows(runs)
    lines += factors_lines(runs) + fidelity_lines(runs) + equal_work_lines(runs, plans, out) + scoring_run_lines(runs)
    lines += table(aggregate(runs, "mean_weight"), "Mean loss weight u of the kept set — the published score "
                   "weighting scales the effective learning rate by about this factor", fmt="{:.3f}")
    for name, key in FLAGGED.items():
        lines += table(aggregate(runs, key), f"Fraction of the kept set that is {name}", fmt="{:.3f}")
    return "\n".join(lines) + "\n"


def work_lines(runs, plans):
    """The work table (both views where the study has cheap sources or equal-work controls)."""
    work = aggregate(runs, "work_total")
    if not any(rate > 0 for _, rate in work):
        return []
    cheap = has_cheap_sources(runs, plans)
    forward = any(m.get("work_forward") for m in runs)
    title = "Compute (work)" + (f", {CHARGED}" if cheap else "") + ", as a fraction of one full-data training: " + \
        ("training passes of the subset's architecture (static: scoring + subset run + teacher, forward-only passes "
         "at their measured share; dynamic: the samples it trained)" if forward or cheap else
         "samples forwarded and backpropagated (static: dynamics epochs used + subset run + teacher; dynamic: the "
         "samples it trained)")
    return table(work, title, fmt="{:.3f}") + (amortised_table(runs) if cheap else [])


def variant_tables(runs, plans):
    """Per variant (TAG) that shares runs with the study: its final accuracy beside the study's runs it
    shares, the rows a variant did not train because its flags act on nothing there."""
    lines = []
    for plan in plans:
        if not plan["tag"] or not plan["shared"]:
            continue
        own = [m for m in runs if m["path"] in set(plan["planned"])]
        shared = [m for m in runs if m["path"] in {study for _, study in plan["shared"]}]
        stats = {**aggregate(own), **{(f"{label} (shared)", rate): v for (label, rate), v in aggregate(shared).items()}}
        names = sorted({m["label"] for m in shared})
        table_lines = table(stats, f"Variant {plan['tag']} ({plan['file']}): final test accuracy (%), beside the "
                                   f"study's runs it shares")
        if table_lines:
            lines += table_lines[:2] + [f"Its flags act on nothing in {len(plan['shared'])} run(s) of the study "
                                        f"({', '.join(names)}): the variant shares them (rows marked shared).", ""] \
                + table_lines[2:]
    return lines


def threads_note(runs):
    """Whether the seconds are thread-seconds and, where not, what is actually missing."""
    costed = [m for m in runs if m.get("cost_total") is not None]
    unknown = [m["run"] for m in costed if not m.get("threads")]
    if not unknown:
        return "; thread-normalized (thread-seconds, threads as the sweep gave them)"
    if not any(m.get("threads_recorded") for m in runs):
        return "; not thread-normalized (no threads.json)"
    shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    return f"; not thread-normalized: threads.json does not record the threads of {len(unknown)} run(s) ({shown})"


def ledger_rows(runs):
    """The parts of each run's cost, one row per run."""
    rows = [m for m in runs if not m["is_full"] and counts(m) and
            (m.get("cost_total") is not None or m.get("work_total") is not None)]
    forward = "at their measured share, in total and shown apart" if any(m.get("work_forward") for m in rows) else "apart"
    lines = [f"Each run's compute: work (samples trained, x one full-data training; forward-only passes {forward}) and "
             "seconds (x one full-data training's).", "",
             "| run | work: dynamics | subset | teacher | total | forward-only | seconds: dynamics | scoring | subset "
             "| teacher | total |", "|---" * 11 + "|"]
    def f(m, key, fmt="{:.3f}"):
        return fmt.format(m[key]) if m.get(key) is not None else "–"
    for m in rows:
        lines.append(f"| {m['run']} | {f(m, 'work_dynamics')} | {f(m, 'work_subset')} | {f(m, 'work_teacher')} | "
                     f"{f(m, 'work_total')} | {f(m, 'work_forward')} | {f(m, 'cost_dynamics')} | "
                     f"{f(m, 'cost_scoring', '{:.4f}')} | {f(m, 'cost_subset')} | {f(m, 'cost_teacher')} | "
                     f"{f(m, 'cost_total')} |")
    return lines + [""]


# ------------------------------------------------------------------------------------------------ plots
def _lines(ax, stats, x_of=None):
    for label in sorted({label for label, rate in stats if rate > 0}):
        rates = sorted(r for lab, r in stats if lab == label)
        mean, std, _ = np.array([stats[label, r] for r in rates]).T  # (3, R)
        x = 100 * np.array(rates) if x_of is None else np.array([x_of(label, r) for r in rates])
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)


def legend_beside(ax):
    """The legend beside the axes, never over a point (none when nothing is plotted)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _title(ax, runs):
    runs = [m for m in runs if not m.get("scoring_run")]   # a proxy's architecture trains no row
    ax.set_title(" / ".join(", ".join(sorted({str(m.get(k, "?")) for m in runs})) for k in ("dataset", "arch")))


def plot(runs, path):
    """accuracy_vs_pruning.png (pruning_figure)."""
    import matplotlib.pyplot as plt
    fig, _ = pruning_figure(runs)
    save_figure(path, fig)
    plt.close(fig)


def pruning_figure(runs):
    """Accuracy vs pruning rate, one line per label with seed error bars; full data dashed; the legend
    beside the axes, never over a point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(runs)
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    _lines(ax, stats)
    full = [v for (_, rate), v in stats.items() if rate == 0]
    if full:
        ax.axhline(full[0][0], color="k", linestyle="--", linewidth=1, label=f"full data ({full[0][0]:.2f})")
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    _title(ax, runs)
    legend_beside(ax)
    fig.tight_layout()
    return fig, ax


def place_labels(fig, ax, texts):
    """Move point labels (annotations in offset points) up, then down, until no two overlap: labels of
    points at the same work and accuracy stack instead of printing over each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    for text in sorted(texts, key=lambda t: (t.xy[0], t.xy[1])):
        box = text.get_window_extent(renderer)
        step = (box.height + 1) * 72.0 / fig.dpi        # one label's height, in points
        x, y0 = text.xyann
        for k in range(1, 40):
            if not any(box.overlaps(p) for p in placed):
                break
            text.xyann = (x, y0 + step * ((k + 1) // 2) * (1 if k % 2 else -1))   # +1, -1, +2, -2 ... heights
            box = text.get_window_extent(renderer)
        placed.append(box)


def plot_cost(runs, path, plans=()):
    """accuracy_vs_cost.png (cost_figure); returns the Pareto front."""
    import matplotlib.pyplot as plt
    fig, _, front = cost_figure(runs, plans)
    save_figure(path, fig)
    plt.close(fig)
    return front


def cost_figure(runs, plans=()):
    """Final accuracy against total compute in work (fraction of one full-data training), one point per
    (method, pruning rate) with seed error bars, static methods as circles, dynamic ones as squares, the
    equal-work controls as triangles (random) and diamonds (RS2), the full-data training a star; the
    Pareto front (the best accuracy at its compute, charged view) joined by a step line and ringed.
    Where the study has cheap sources (ledger.has_cheap_sources), each static point's amortised work
    is a hollow marker of its colour joined to it by a dotted line. The legend sits beside the axes,
    never on a point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, work, amortised = aggregate(runs), aggregate(runs, "work_total"), aggregate(runs, "work_amortised")
    keys = sorted(k for k in acc if k in work and k[1] > 0)
    dynamic = {m["label"] for m in runs if is_dynamic(m) and not m.get("equal_work_control")}
    markers = dict(zip(EQUAL_WORK_LABELS.values(), "^D"))
    show_amortised = has_cheap_sources(runs, plans)
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    points, texts = [], []
    labels = sorted({k[0] for k in keys})
    for i, label in enumerate(labels):   # more rows than tab10's colours: tab20's, no colour twice up to 20
        ks = [k for k in keys if k[0] == label]
        color = f"C{i % 10}" if len(labels) <= 10 else plt.get_cmap("tab20")(i % 20)
        x, y, err = [work[k][0] for k in ks], [acc[k][0] for k in ks], [acc[k][1] for k in ks]
        ax.errorbar(x, y, yerr=err, fmt=markers.get(label, "s" if label in dynamic else "o"), capsize=3, color=color,
                    label=label + (" (dynamic)" if label in dynamic else ""))
        for k, xi, yi in zip(ks, x, y):
            texts.append(ax.annotate(f"{100 * k[1]:g}%", (xi, yi), textcoords="offset points", xytext=(4, 4),
                                     fontsize=7, color=color))
            if show_amortised and k in amortised and abs(amortised[k][0] - xi) > 1e-12:
                ax.plot([xi, amortised[k][0]], [yi, yi], ":", color=color, linewidth=0.8)
                ax.scatter([amortised[k][0]], [yi], marker="o", facecolors="none", edgecolors=color, alpha=0.7)
        points += list(zip(x, y))
    if show_amortised and any(abs(amortised[k][0] - work[k][0]) > 1e-12 for k in keys if k in amortised):
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="amortised work (scoring / u)")
    trained = [m for m in runs if m["is_full"] and m["state"] == "finished"]   # not a run stopped at T
    full = [(work[k][0], v[0]) for k, v in aggregate(trained).items() if k in aggregate(trained, "work_total")]
    if full:
        ax.plot([full[0][0]], [full[0][1]], "k*", markersize=12, label=f"full-data training ({full[0][1]:.2f})")
        points.append(full[0])
    front = pareto_front(points)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", linewidth=0.8, alpha=0.5)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=160, facecolors="none", edgecolors="k",
                   linewidths=1.0, label="Pareto front" + (" (charged)" if show_amortised else ""))
    ax.set_xlabel("compute: samples trained, x one full-data training (static: dynamics epochs + subset run)"
                  if not show_amortised else "compute: training passes of the subset's model, x one full-data "
                  "training (charged: scoring + subset run)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    _title(ax, runs)
    legend_beside(ax)
    fig.tight_layout()
    place_labels(fig, ax, texts)
    return fig, ax, front


def plot_flagged(runs, path):
    """Fraction of the kept set that is mislabeled / corrupted, against the pruning rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {name: aggregate(runs, key) for name, key in FLAGGED.items() if aggregate(runs, key)}
    fig, axes = plt.subplots(1, len(present), figsize=(8.4 * len(present), 4.4), squeeze=False)
    for ax, (name, stats) in zip(axes[0], present.items()):
        _lines(ax, stats)
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(f"fraction of the kept set that is {name}")
        ax.grid(alpha=0.3)
        legend_beside(ax)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def summarize(out):
    """Write the summary files into `out`; returns the markdown."""
    if not os.path.isdir(out):
        raise UserError(f"{out} is not a folder: expected a sweep folder holding metrics.json files")
    runs = collect_runs(out)
    if not runs:
        raise UserError(f"no metrics.json under {out}: run scripts/sweep.sh (or train.py / train_subset.py) first")
    plans = read_plans(out)
    text = markdown(runs, missing_runs(out, runs), plans, out)
    save_text(os.path.join(out, "results.csv"), csv_text(runs))
    save_text(os.path.join(out, "results.md"), text)
    plot(runs, os.path.join(out, "accuracy_vs_pruning.png"))
    if any(m.get("work_total") is not None and not m["is_full"] for m in runs):
        plot_cost(runs, os.path.join(out, "accuracy_vs_cost.png"), plans)
    if any(m.get(key) is not None for m in runs for key in FLAGGED.values()):
        plot_flagged(runs, os.path.join(out, "kept_flagged_vs_pruning.png"))
    return text


def main(argv=None):
    parser = Parser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("out", help="sweep folder, searched recursively for metrics.json")
    args = parser.parse_args(argv)
    print(summarize(args.out), end="")


if __name__ == "__main__":
    run(main, way_on="make room (or make the folder writable), then run it again")
