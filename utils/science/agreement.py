"""How far two scorings agree: Spearman correlation of the scores and Jaccard overlap of the kept
sets at given pruning rates (importance_evaluation.py's sensitivity report, scripts/report.py).
numpy and matplotlib only (no torch)."""
import numpy as np

from utils.protocol.files import save_figure, save_text
from utils.science.selection import kept_count


def ranks(x):
    """(N,) float64 average ranks 0..N-1 of x: tied values share the mean of their positions, as
    Spearman's rho needs (scipy.stats.rankdata's 'average', minus 1). Vectorised: one sort."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]                                                      # (N,) sorted values
    new = np.r_[True, xs[1:] != xs[:-1]] if n else np.zeros(0, bool)   # (N,) first of its tie group
    group = np.cumsum(new) - 1                                         # (N,) tie group of each position
    first = np.flatnonzero(new)                                        # (G,) first position of each group
    last = np.r_[first[1:], n] - 1                                     # (G,) last position of each group
    r = np.empty(n, dtype=np.float64)
    r[order] = ((first + last) / 2)[group]
    return r


def spearman(a, b):
    """Spearman's rho: the Pearson correlation of the average ranks (nan if a score is constant)."""
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def kept_set(score, rate):
    """Dataset indices kept at pruning rate `rate`: the published slice of the stable ascending
    argsort, as train_subset.py --selection top takes it."""
    n = len(score)
    return np.argsort(score, kind="stable")[n - kept_count(n, rate):]


def jaccard(a, b):
    a, b = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


def spearman_matrix(scores):
    """(labels, (M, M) rho) for {label: (N,) score in dataset order}: ranks once per score, then
    one correlation matrix of the ranks."""
    labels = list(scores)
    r = np.stack([ranks(scores[k]) for k in labels])                   # (M, N)
    r -= r.mean(1, keepdims=True)
    norm = np.sqrt((r * r).sum(1))                                     # (M,)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (r @ r.T) / np.outer(norm, norm)
    np.fill_diagonal(m, 1.0)
    return labels, m


def jaccard_matrix(scores, rate):
    """(labels, (M, M) Jaccard overlap of the kept sets at pruning rate `rate`)."""
    labels = list(scores)
    n = len(next(iter(scores.values())))
    kept = np.zeros((len(labels), n), dtype=np.float32)                # (M, N) 1 = kept
    for i, k in enumerate(labels):
        kept[i, kept_set(scores[k], rate)] = 1
    inter = kept @ kept.T                                              # |A ∩ B|, exact in float32 below 2^24
    sizes = np.diag(inter)
    union = sizes[:, None] + sizes[None, :] - inter
    return labels, np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _md(labels, m, title):
    lines = [f"### {title}", "", "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for a, row in zip(labels, m)]
    return lines + [""]


def write_agreement(scores, rates, md_path, png_path, title=""):
    """A markdown file (Spearman, then Jaccard at each rate) and one heatmap PNG with a panel per
    matrix; returns the markdown. scores: {label: (N,) float score in dataset order}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, rho = spearman_matrix(scores)
    mats = [("Spearman correlation of the scores", rho)]
    mats += [(f"Jaccard overlap of the kept sets at pruning rate {r:g}", jaccard_matrix(scores, r)[1]) for r in rates]
    lines = [f"# {title or 'Agreement between scores'}", "",
             "Spearman: rank correlation of the scores over all samples (1 = the same order). Jaccard: "
             "|A ∩ B| / |A ∪ B| of the kept sets (the top-scored samples) at each pruning rate.", ""]
    for name, m in mats:
        lines += _md(labels, m, name)
    text = "\n".join(lines)
    save_text(md_path, text)

    size = max(3.2, 0.45 * len(labels) + 1.8)
    fig, axes = plt.subplots(1, len(mats), figsize=(size * len(mats), size + 0.6), squeeze=False,
                             layout="constrained")
    for p, (ax, (name, m)) in enumerate(zip(axes[0], mats)):
        im = ax.imshow(m, vmin=0 if "Jaccard" in name else -1, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels if p == 0 else [], fontsize=7)
        if len(labels) <= 8:   # numbers in the cells while they stay readable (and cheap to draw)
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] < 0.6 else "black")
        ax.set_title(name.replace(" of the kept sets at pruning rate", ", kept at rate"), fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    save_figure(png_path, fig)
    plt.close(fig)
    return text
