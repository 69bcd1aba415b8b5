"""The parts of results.md that show what cheap static scores cost and how well they stand in for the
reference scoring (scripts/summarize.py writes them; docs/STUDIES.md says how to read them): the
measured work factors, the amortised view of the work, rank fidelity, the equal-work controls and
the scoring runs of other sources. Each section is there only when the study has something for it:
a study without cheap sources gets the results.md it always got."""
import os

import numpy as np

from utils.study.runs import aggregate, counts

CHARGED = "charged: each run pays its scoring whole"
AMORTISED = "amortised over the u runs that used it"


def format_cell(mean, std, n, fmt="{:.2f}"):
    return fmt.format(mean) if n == 1 else f"{fmt.format(mean)} ± {fmt.format(std)} (n={n})"


def table(stats, title, fmt="{:.2f}"):
    """A method x pruning-rate markdown table of `stats` (from aggregate), the full data excluded."""
    labels = sorted({label for label, rate in stats if rate > 0})   # the full data (rate 0) is the reference line
    rates = sorted({rate for label, rate in stats if rate > 0})
    if not labels:
        return []
    lines = [f"## {title}", "", "| method | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |",
             "|---" * (len(rates) + 1) + "|"]
    for label in labels:
        cells = [format_cell(*stats[label, r], fmt=fmt) if (label, r) in stats else "–" for r in rates]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def has_cheap_sources(runs, plans=()):
    """Does the study hold scores other than the reference's (another architecture, a fraction of the
    data, another T: rank fidelity) or equal-work controls? Then results.md shows both views of work."""
    return any(m.get("rank_rho") is not None or (m.get("work_factor") or 1.0) != 1.0 or
               (m.get("scored_fraction") or 1.0) != 1.0 or m.get("equal_work_control") for m in runs
               if counts(m)) or any(plan.get("equal_work") for plan in plans)


def amortised_table(runs):
    """The amortised view of the work, one cell per (row, rate)."""
    return table(aggregate(runs, "work_amortised"), f"Compute (work), {AMORTISED}: a scoring used by u subset runs "
                 f"of this study is charged its work / u to each (the rest of a run's work is its own)", fmt="{:.3f}")


def factors_lines(runs):
    """The measured factors the work used (utils/training/flops.py), when some run used one."""
    records = {}
    for m in runs:
        for r in m.get("factors") or ():
            records.setdefault((r["arch"], r["target_arch"], r["num_classes"], r["image_size"]), r)
    if not records:
        return []
    lines = ["## Work factors (measured: FLOPs per sample, torch.utils.flop_counter)", "",
             "A training pass of `arch` counts `work factor` training passes of the target (the architecture "
             "the subset trains); a forward-only pass of it (features, a teacher) `forward share`.", "",
             "| arch | target | classes | image | work factor | forward share | FLOPs per sample: arch train / "
             "forward | target train |", "|---" * 8 + "|"]
    for (arch, target, classes, size), r in sorted(records.items()):
        f = r["flops_per_sample"]
        lines.append(f"| {arch} | {target} | {classes} | {size} | {r['work_factor']:.4f} | {r['forward_share']:.4f} | "
                     f"{f[arch]['train']:.4g} / {f[arch]['forward']:.4g} | {f[target]['train']:.4g} |")
    return lines + [""]


def _mean(ms, key, fmt="{:.3f}"):
    values = [float(m[key]) for m in ms if m.get(key) is not None]
    if not values:
        return "–"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return format_cell(float(np.mean(values)), std, len(values), fmt)


def fidelity_lines(runs):
    """Rank fidelity of every row whose scores are not the reference's, beside its accuracy and work."""
    rows = {}
    for m in runs:
        if counts(m) and m.get("rank_rho") is not None:
            rows.setdefault((m["label"], m["subset_rate"], m["rank_scoring"], m["rank_reference"]), []).append(m)
    if not rows:
        return []
    lines = ["## Rank fidelity of the scores against the reference scoring", "",
             "The reference: the same method's scores in masks/ (the study's architecture on all the data) at the "
             "same T, else at the largest T there (for scores of masks/ at a smaller T: the largest T). Spearman's rho over all samples; kept overlap = |kept ∩ kept_ref| "
             "/ |kept| of the top-scored samples at the row's rate. Work: " + CHARGED + " / " + AMORTISED + ".", "",
             "| row | rate | scores | reference | Spearman rho | kept overlap | final accuracy | work: charged | "
             "amortised |", "|---" * 9 + "|"]
    for (label, rate, scoring, reference), ms in sorted(rows.items()):
        lines.append(f"| {label} | {100 * rate:g}% | {scoring} | {reference} | {ms[0]['rank_rho']:.3f} | "
                     f"{ms[0]['kept_overlap']:.3f} | {_mean(ms, 'final_acc', '{:.2f}')} | {_mean(ms, 'work_total')} | "
                     f"{_mean(ms, 'work_amortised')} |")
    return lines + [""]


def _under(runs, folder):
    """The counted runs in `folder`'s seed folders."""
    return [m for m in runs if counts(m) and m["path"].startswith(folder.rstrip(os.sep) + os.sep)]


def equal_work_lines(runs, plans, out):
    """Each static point of the plans' "# equal-work:" lines beside its controls: accuracy (mean ± std
    over seeds) and charged work; the full-data run where the line names no control."""
    points = [line for plan in plans for line in plan.get("equal_work", ())]
    if not points:
        return []
    trained = [m for m in runs if m["is_full"] and m["state"] == "finished"]   # not a run stopped at T

    def cells(ms, what):
        if not ms:
            return f"{what}: no finished run | –"
        return f"{_mean(ms, 'final_acc', '{:.2f}')} | {_mean(ms, 'work_total')}"
    lines = ["## Equal-work controls (" + CHARGED + ")", "",
             "Each static point beside a random subset and an RS2 run planned to cost its charged work w (rate "
             "1 − w); where w ≥ 1 no pruned run costs as much and the full-data run is the control. Accuracy: "
             "final, mean ± std over seeds.", "",
             "| static point | rows | accuracy | work | random (equal work) | accuracy | work | RS2 (equal work) | "
             "accuracy | work |", "|---" * 10 + "|"]
    for point, planned, random, rs2 in dict.fromkeys(points):
        own = _under(runs, point)
        row = [os.path.relpath(point, out), ", ".join(sorted({m["label"] for m in own})) or "–",
               cells(own, "planned w %.4f" % planned)]
        for folder in (random, rs2):
            row += [os.path.relpath(folder, out), cells(_under(runs, folder), "")] if folder else \
                ["the full-data run", cells(trained, "")]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def scoring_run_lines(runs):
    """The scoring runs of other sources (a proxy architecture, a fraction of the data): where their
    dynamics came from, never a row of the tables."""
    ms = [m for m in runs if m.get("scoring_run")]
    if not ms:
        return []
    lines = ["## Scoring runs of other sources", "", "Their dynamics scored the rows that name them; their work is "
             "charged to those rows (work: dynamics).", "", "| run | arch | samples trained on | epochs done | state |",
             "|---" * 5 + "|"]
    for m in ms:
        lines.append(f"| {m['run']} | {m.get('arch')} | {m.get('num_train_samples')} of "
                     f"{m.get('full_train_samples') or m.get('num_train_samples')} | {m.get('completed_epochs') or 0} "
                     f"of {m.get('epochs', '?')} | {m['state']} |")
    return lines + [""]
