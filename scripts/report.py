"""A visual report of the scores in a mask folder: which images each score keeps and prunes, how
the kept set spreads over the classes, how far the methods agree, and TDDS's trajectories.

    python scripts/report.py ./checkpoint/sweep/masks                      # -> masks/report/report.md
    python scripts/report.py MASK_DIR --data_path ./data --dataset cifar100 --dynamics_path RUN/npy \
        --rates 0.3 0.5 0.7 0.9 --out DIR

Reads only what importance_evaluation.py wrote (dataset_score_<tag>.npy, or the published pair
data_mask_<tag>.npy + score_<tag>.npy; info_<tag>.json) and what the training run left beside its
dynamics (train_labels.npy, label_noise_mask.npy, corrupted_mask.npy); it never retrains or
rescores. It shows only finished scorings: a scoring of ours without its info_<tag>.json (cut short)
or whose arrays no longer match the sha256 recorded there is skipped with a note, and a folder that
a scoring is writing now is refused. The data set, its folder and the dynamics folder come from
the info files, so the common case needs no flag; the flags override them (and are needed for files
without info). Writes into DIR
(default MASK_DIR/report), only once every check has passed:
  grid_<tag>.png        per class (up to --classes), the highest-scored (kept first) and the lowest-
                        scored (pruned first) training images; mislabeled samples framed red,
                        corrupted ones orange; grids.json lists the dataset index of every cell
  classes_<tag>.png     per-class kept counts at each rate, the class-balanced budget dashed
                        (class_counts.json has the numbers)
  agreement.md/.png     Spearman correlation of the scores, Jaccard overlap of the kept sets
  trajectory_<tag>.png  TDDS only: the per-epoch contributions c_t of a few kept and pruned samples
                        (trajectories.json has the numbers)
  report.md             every picture with one line of explanation
Conventions (docs/METHODS.md): higher score = kept; a rate is the fraction PRUNED; the kept set at
rate r is mask[int(r * N):], mask = the stable ascending argsort of the score.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.args import DATA_SETTINGS, DATASETS, Parser  # noqa: E402
from utils.errors import UserError, run  # noqa: E402
from utils.protocol.files import ensure_writable_dir, save_figure, save_json, save_text  # noqa: E402
from utils.protocol.lock import check_unlocked  # noqa: E402
from utils.science.selection import class_budgets, kept_count  # noqa: E402
from utils.study.scorings import from_info, load_run_files, load_scores, open_dynamics  # noqa: E402

FRAME = {"mislabeled": (220, 30, 30), "corrupted": (255, 150, 0)}   # RGB of a flagged cell's frame
PAD = 3             # frame width in pixels around each thumbnail
TRAJ_SAMPLES = 5    # kept and pruned samples drawn in a trajectory plot


def parse_args(argv=None):
    p = Parser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("mask_dir", help="folder written by importance_evaluation.py (its --mask_path)")
    p.add_argument("--data_path", default=None, help="data set folder (default: from info_<tag>.json)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="data set (default: from info_<tag>.json)")
    p.add_argument("--dynamics_path", default=None,
                   help="dynamics folder (<e>_Output.npy ...) for the trajectories; its parent is the training "
                        "run's folder (default: from info_<tag>.json)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9], help="pruning rates")
    p.add_argument("--classes", type=int, default=10, help="classes shown in the image grids (the first ones)")
    p.add_argument("--per_row", type=int, default=8, help="images per grid row")
    p.add_argument("--thumb", type=int, default=48, help="pixels of a grid cell (images are resized to it)")
    p.add_argument("--out", default=None, help="output folder (default: MASK_DIR/report)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ images
class Images:
    """Training images and class names of a data set; ImageFolder files are opened only when shown."""

    def __init__(self, dataset, data_path):
        from utils.training import data as d
        self.paths = self.array = None
        if dataset in ("cifar10", "cifar100"):
            folder, files, _, _ = d.CIFAR_LAYOUT[dataset]
            missing = [f for f in files if not os.path.isfile(os.path.join(data_path, folder, f))]
            if missing:   # a report never downloads a data set
                raise UserError(f"{dataset} not found: {os.path.join(data_path, folder, missing[0])} is missing; "
                                "pass --data_path (the folder holding " + folder + ")")
            self.array, self.labels = d.read_cifar(data_path, dataset, True)    # (N, 3, 32, 32) uint8, (N,)
            self.names = _cifar_names(os.path.join(data_path, folder), dataset)
        elif dataset == "digits":
            self.array, self.labels = d.read_digits(True)                       # (1437, 3, 32, 32) uint8
            self.names = [str(c) for c in range(10)]
        else:
            folder = d._image_folder(data_path, "train")                        # scans names, opens no image
            self.paths = [p for p, _ in folder.samples]
            self.labels = np.asarray(folder.targets, dtype=np.int64)
            self.names = list(folder.classes)

    def corrupt_as_trained(self, scores, corrupted):
        """Show the training images as the scored run trained on them: its --corrupt_ratio settings
        (from info_<tag>.json) replayed on the in-memory images, checked against corrupted_mask.npy."""
        ratio = from_info(scores, "corrupt_ratio")
        if not ratio or self.array is None:
            return
        from utils.training.robustness import apply_corruption
        recorded = {k: from_info(scores, k) or DATA_SETTINGS[k] for k in ("corruption", "severity", "corrupt_seed")}
        self.array, replayed = apply_corruption(self.array, ratio, recorded["corruption"], recorded["severity"],
                                                seed=recorded["corrupt_seed"])
        if corrupted is not None and not np.array_equal(replayed, corrupted):
            raise UserError("the corruption settings in info_<tag>.json do not give the run's corrupted_mask.npy: "
                            "the scores are not of this training run")

    def thumb(self, i, size):
        """(size, size, 3) uint8 thumbnail of training image i (centre square, resized)."""
        from PIL import Image, ImageOps
        if self.array is not None:
            img = Image.fromarray(np.ascontiguousarray(self.array[i].transpose(1, 2, 0)))
        else:
            try:
                with Image.open(self.paths[i]) as f:
                    img = f.convert("RGB")
            except OSError as e:
                raise UserError(f"cannot open training image {self.paths[i]}: {e}") from None
        if img.size == (size, size):
            return np.asarray(img)
        return np.asarray(ImageOps.fit(img, (size, size), Image.BILINEAR))

    def name(self, c):
        return self.names[c] if c < len(self.names) else str(c)


def _cifar_names(folder, dataset):
    """Class names from the archive's meta pickle; the class numbers when it is absent."""
    import pickle
    meta, key = ("batches.meta", "label_names") if dataset == "cifar10" else ("meta", "fine_label_names")
    try:
        with open(os.path.join(folder, meta), "rb") as f:
            return [str(n) for n in pickle.load(f, encoding="latin1")[key]]
    except (OSError, KeyError, TypeError, pickle.UnpicklingError, EOFError):
        return [str(c) for c in range(10 if dataset == "cifar10" else 100)]


# ------------------------------------------------------------------------------------------ pictures
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def grid(images, labels, order, classes, per_row, thumb, flags, path, title):
    """One canvas: per class a row of kept-first and a row of pruned-first images; saved as a PNG.
    order: (N,) dataset indices by ascending score. Returns ({class name: {"kept": [...],
    "pruned": [...]}} the dataset indices of the cells, left to right; the (H, W, 3) uint8 canvas)."""
    plt = _plt()
    cell = thumb + 2 * PAD
    gap = cell // 4                                   # white space between two classes
    canvas = np.full((len(classes) * (2 * cell + gap), per_row * cell, 3), 255, np.uint8)
    cells, ticks = {}, []
    ordered_labels = labels[order]                    # (N,) label of each position of the mask
    for r, c in enumerate(classes):
        ranked = order[ordered_labels == c]           # class c by ascending score (ties as in the mask)
        rows = {"kept": ranked[::-1][:per_row], "pruned": ranked[:per_row]}
        cells[images.name(c)] = {k: v.tolist() for k, v in rows.items()}
        for j, (kind, idx) in enumerate(rows.items()):
            y0 = r * (2 * cell + gap) + j * cell
            ticks.append((y0 + cell / 2, f"{images.name(c)}: {kind}"))
            for k, i in enumerate(idx):
                x0 = k * cell
                marked = [colour for name, colour in FRAME.items() if name in flags and flags[name][i]]
                for m, colour in enumerate(marked):   # both: left half red, right half orange
                    left = x0 + m * cell // len(marked)
                    canvas[y0:y0 + cell, left:x0 + (m + 1) * cell // len(marked)] = colour
                canvas[y0 + PAD:y0 + PAD + thumb, x0 + PAD:x0 + PAD + thumb] = images.thumb(i, thumb)
    h, w = canvas.shape[:2]
    fig, ax = plt.subplots(figsize=(1.6 + w / 90, 0.5 + h / 90))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=7)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    legend = ", ".join(f"{'red' if k == 'mislabeled' else 'orange'} frame: {k}" for k in FRAME if k in flags)
    if len([k for k in FRAME if k in flags]) == 2:
        legend += ", half red half orange: both"
    ax.set_title(title + (f"\n({legend})" if legend else ""), fontsize=8)
    save_figure(path, fig)
    plt.close(fig)
    return cells, canvas


def class_counts(labels, num_classes, order, rates, names, path, title):
    """Bars: kept samples per class at each rate; dashed: the class-balanced budget (proportional to
    class size, largest remainder, as train_subset.py --class_balanced splits it). Returns
    {rate: {"kept": [per class], "balanced": [per class]}}."""
    plt = _plt()
    n = len(order)
    sizes = np.bincount(labels, minlength=num_classes)                    # (C,)
    fig, axes = plt.subplots(len(rates), 1, figsize=(min(16.0, max(6.0, 0.12 * num_classes + 3)), 1.9 * len(rates) + 0.6),
                             squeeze=False, sharex=True, layout="constrained")
    out = {}
    for ax, r in zip(axes[:, 0], rates):
        kept = order[int(r * n):]                                         # the published slice
        assert len(kept) == kept_count(n, r)
        c = np.bincount(labels[kept], minlength=num_classes)              # (C,)
        budget = class_budgets(sizes, len(kept))                         # (C,)
        out[r] = {"kept": c.tolist(), "balanced": budget.tolist()}
        ax.bar(np.arange(num_classes), c, color="tab:blue", width=0.8, label="kept by the score")
        ax.step(np.arange(num_classes + 1) - 0.5, np.r_[budget, budget[-1]], where="post",
                color="k", linestyle="--", linewidth=1, label="class-balanced budget")
        ax.set_ylabel(f"kept at {r:g}", fontsize=8)
        ax.set_title(f"pruning rate {r:g}: {len(kept)} kept; per class {c.min()} to {c.max()} "
                     f"(balanced {budget.min()} to {budget.max()})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    if num_classes <= 30:
        axes[-1, 0].set_xticks(range(num_classes), [names[i] if i < len(names) else str(i) for i in range(num_classes)],
                               rotation=45, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("class")
    fig.suptitle(title, fontsize=9)
    save_figure(path, fig)
    plt.close(fig)
    return out


def _rows(dyn, e, tag, idx):
    """Rows of dataset indices idx (k,) of <e>_<tag>.npy: a few small reads, not the whole file."""
    f = dyn.file(e, tag)
    index = dyn._index[e]          # None: rows in dataset order; else row r holds dataset index index[r]
    if index is None:
        rows = idx
    else:
        where = np.empty(len(index), np.int64)
        where[index] = np.arange(len(index))
        rows = where[idx]
    return np.stack([f.rows(int(r), int(r) + 1)[0] for r in rows])


def contributions(dyn, T, idx):
    """(T-1, k) c_t of dataset indices idx, t = 0..T-2, with the scorer's own code: epoch_features
    from the logits, or the <e>_Contrib.npy files (which hold c_{e-1}) of the contrib layout."""
    c = np.zeros((T - 1, len(idx)))
    if dyn.fmt != "logits":
        for e in range(1, T):
            c[e - 1] = _rows(dyn, e, "Contrib", idx)
        return c
    import torch

    from utils.science.features import epoch_features
    prev = None
    for e in range(T):
        z = torch.from_numpy(_rows(dyn, e, "Output", idx).astype(np.float32))   # (k, C)
        feats, prev = epoch_features(z, None, prev, ("contrib",))
        if e:
            c[e - 1] = feats["contrib"].numpy()
    return c


def trajectory(dyn, s, path, k=TRAJ_SAMPLES):
    """Plot c_t of the k highest- and k lowest-scored samples; returns {"kept"|"pruned": [{"index": i,
    "c": [c_0 .. c_{T-2}]}, ...]}, the kept ones from the highest score down, the pruned from the lowest up."""
    plt = _plt()
    picks = {"kept": s.order[::-1][:k], "pruned": s.order[:k]}
    idx = np.concatenate(list(picks.values()))
    c = contributions(dyn, s.T, idx)                                       # (T-1, 2k)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    t = np.arange(s.T - 1)
    for j in range(len(idx)):
        kept = j < len(picks["kept"])
        ax.plot(t, c[:, j], color="tab:blue" if kept else "tab:red", alpha=0.8, marker=".",
                label=(f"the {len(picks['kept'])} highest scores (kept)" if j == 0 else
                       f"the {len(picks['pruned'])} lowest scores (pruned)" if j == len(picks["kept"]) else None))
    ax.set_xlabel("t (contribution between epochs t and t+1)")
    ax.set_ylabel("c_t")
    ax.set_title(f"{s.tag}: TDDS contributions c_t", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(path, fig)
    plt.close(fig)
    out, j = {}, 0
    for kind, v in picks.items():   # lists, not dicts: JSON keeps their order (highest score first)
        out[kind] = [{"index": int(i), "c": c[:, j + q].tolist()} for q, i in enumerate(v)]
        j += len(v)
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    # ---- every check first: nothing is written until they all pass
    if not os.path.isdir(args.mask_dir):
        raise UserError(f"{args.mask_dir} is not a folder: pass the --mask_path of importance_evaluation.py")
    check_unlocked(args.mask_dir, "MASK_DIR")   # a scoring writing it now: its files are not final
    if not all(0 <= r < 1 for r in args.rates):
        raise UserError(f"--rates are pruning rates in [0, 1), got {args.rates}")
    if args.classes < 1 or args.per_row < 1 or args.thumb < 4:
        raise UserError("--classes and --per_row must be at least 1, --thumb at least 4")
    scores = load_scores(args.mask_dir)
    n = len(next(iter(scores.values())).score)
    for r in args.rates:
        kept_count(n, r)                              # a rate that keeps nothing is a UserError
    dataset = args.dataset or from_info(scores, "dataset")
    if dataset is None:
        raise UserError(f"the scores in {args.mask_dir} do not say which data set they are of (no info_<tag>.json): "
                        "pass --dataset (and --data_path)")
    if dataset not in DATASETS:
        raise UserError(f"info_<tag>.json names data set {dataset!r}, not one of {', '.join(DATASETS)}: pass --dataset")
    if args.dynamics_path:
        run_folder = os.path.dirname(os.path.abspath(args.dynamics_path.rstrip("/")))
    else:
        run_folder = from_info(scores, "dynamics_run")
    data_path = args.data_path
    if not data_path:   # as the run recorded it, found from here even if it was started elsewhere
        from utils.training.data import recorded_data_path
        data_path = recorded_data_path(dataset, from_info(scores, "data_path") or "./data", run_folder)
    images = Images(dataset, data_path)
    if len(images.labels) != n:
        raise UserError(f"the scores in {args.mask_dir} have {n} samples, the {dataset} training set in {data_path} "
                        f"has {len(images.labels)}: pass the data set they were computed on")
    run_labels, flags = load_run_files(run_folder, n)
    labels = run_labels if run_labels is not None else images.labels     # the labels trained on (noise)
    images.corrupt_as_trained(scores, flags.get("corrupted"))
    num_classes = max(int(labels.max()) + 1, len(images.names))
    classes = list(range(min(args.classes, num_classes)))
    dynamics = {t: open_dynamics(s, args.dynamics_path, n) for t, s in scores.items() if s.method == "tdds"}

    # ---- the report
    from tqdm import tqdm

    from utils.science.agreement import write_agreement
    out = ensure_writable_dir(args.out or os.path.join(args.mask_dir, "report"), "--out")
    rates = ", ".join(f"{r:g}" for r in args.rates)
    md = [f"# What the scores keep: {dataset}, N = {n}", "",
          f"Scores from `{os.path.abspath(args.mask_dir)}`. Higher score = kept; a pruning rate is the fraction "
          f"removed (here {rates}); the kept set at rate r is the N - int(r·N) highest scores.", ""]
    if flags:
        md += [f"Training run `{run_folder}`: " + ", ".join(f"{int(v.sum())} {k}" for k, v in flags.items())
               + " samples (framed in the grids).", ""]
    grids, counts, traj = {}, {}, {}
    for tag, s in tqdm(scores.items(), desc="report", unit="score", disable=None):
        what = s.info.get("what") or (f"{s.method} (T={s.T})" if s.method else tag)
        grids[tag], _ = grid(images, labels, s.order, classes, args.per_row, args.thumb, flags,
                             os.path.join(out, f"grid_{tag}.png"),
                             f"{what}: per class, the highest scores (kept first) and the lowest (pruned first)")
        counts[tag] = class_counts(labels, num_classes, s.order, args.rates, images.names,
                                   os.path.join(out, f"classes_{tag}.png"), f"{what}: kept samples per class")
        md += [f"## {tag}: {what}", "",
               f"![kept and pruned images of {tag}](grid_{tag}.png)", "",
               f"Per class (the first {len(classes)}), the {args.per_row} highest-scored training images (kept first) "
               f"and the {args.per_row} lowest-scored (pruned first)"
               + (" — red frames mislabeled, orange corrupted samples." if flags else "."), "",
               f"![kept samples per class of {tag}](classes_{tag}.png)", "",
               "Kept samples per class at each pruning rate; the dashed line is what a class-balanced selection "
               "(proportional to class size) would keep.", ""]
        if tag in dynamics:
            dyn, why = dynamics[tag]
            if dyn is None:
                md += [f"Trajectories skipped: {why}.", ""]
                print(f"note: {tag}: trajectories skipped: {why}", file=sys.stderr)
            else:
                traj[tag] = trajectory(dyn, s, os.path.join(out, f"trajectory_{tag}.png"))
                md += [f"![TDDS contributions of {tag}](trajectory_{tag}.png)", "",
                       f"The per-epoch contributions c_t that the score summarises, for the {TRAJ_SAMPLES} highest "
                       f"(blue, kept) and {TRAJ_SAMPLES} lowest (red, pruned) scores: TDDS keeps the samples whose "
                       "predictions keep moving unevenly late in training.", ""]
    if len(scores) > 1:
        write_agreement({t: s.score for t, s in scores.items()}, args.rates, os.path.join(out, "agreement.md"),
                        os.path.join(out, "agreement.png"), title="Agreement between the scores")
        md += ["## Agreement between the scores", "", "![agreement between the scores](agreement.png)", "",
               "Spearman correlation of the scores (1 = the same order) and Jaccard overlap |A∩B|/|A∪B| of the kept "
               "sets at each rate; [agreement.md](agreement.md) has the numbers.", ""]
    else:
        md += ["(One score only: no agreement between scores to show.)", ""]
    md += ["Indices of every grid cell: [grids.json](grids.json); per-class counts: "
           "[class_counts.json](class_counts.json)" + ("; trajectories: [trajectories.json](trajectories.json)." if traj else "."), ""]
    save_json(os.path.join(out, "grids.json"), grids)
    save_json(os.path.join(out, "class_counts.json"),
              {t: {f"{r:g}": v for r, v in c.items()} for t, c in counts.items()})
    if traj:
        save_json(os.path.join(out, "trajectories.json"), traj)
    save_text(os.path.join(out, "report.md"), "\n".join(md))
    print(f"wrote {os.path.join(out, 'report.md')}: {len(scores)} score(s), {len(classes)} classes in the grids"
          f"{', trajectories of ' + ', '.join(traj) if traj else ''}{', agreement' if len(scores) > 1 else ''}")


if __name__ == "__main__":
    run(main, way_on="make room (or make the folder writable), then run it again")
