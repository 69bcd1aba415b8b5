"""A visual report of the scores in a mask folder: which images each score keeps and prunes, how
the kept set spreads over the classes, how far the methods agree, and TDDS's trajectories.

    python scripts/report.py ./checkpoint/sweep/masks                      # -> masks/report/report.md
    python scripts/report.py MASK_DIR --data_path ./data --dataset cifar100 --rates 0.3 0.5 0.7 0.9 --out DIR

Reads only what importance_evaluation.py wrote (dataset_score_<tag>.npy, info_<tag>.json) and what
the training run left beside its dynamics (train_labels.npy, label_noise_mask.npy,
corrupted_mask.npy); it never retrains or rescores. The data set, its folder and the dynamics
folder come from the info files, so the common case needs no flag. Writes into DIR:
  grid_<tag>.png       per class (up to --classes), the highest-scored (kept first) and the lowest-
                       scored (pruned first) training images; mislabeled samples framed red,
                       corrupted ones orange; grids.json lists the dataset index of every cell
  classes_<tag>.png    per-class kept counts at each rate, the class-balanced budget dashed
  agreement.md/.png    Spearman correlation of the scores, Jaccard overlap of the kept sets
  trajectory_<tag>.png TDDS only: the per-epoch contributions c_t of a few kept and pruned samples
  report.md            every picture with one line of explanation
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.args import DATASETS  # noqa: E402
from utils.errors import UserError, run  # noqa: E402
from utils.io import ensure_writable_dir, save_figure, save_json, save_text  # noqa: E402
from utils.selection import _class_budgets, kept_count  # noqa: E402

THUMB = 48          # pixels of a grid cell (images are resized to it)
FRAME = {"mislabeled": (220, 30, 30), "corrupted": (255, 150, 0)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mask_dir", help="folder written by importance_evaluation.py (--mask_path)")
    p.add_argument("--data_path", default=None, help="data set folder (default: from info_<tag>.json)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="data set (default: from info_<tag>.json)")
    p.add_argument("--dynamics_path", default=None, help="dynamics folder for the trajectories (default: from the info)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9], help="pruning rates")
    p.add_argument("--classes", type=int, default=10, help="classes shown in the image grids")
    p.add_argument("--per_row", type=int, default=8, help="images per grid row")
    p.add_argument("--out", default=None, help="output folder (default: MASK_DIR/report)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ inputs
def load_scores(mask_dir):
    """{tag: (score (N,) dataset order, info dict)} of every score in mask_dir."""
    files = sorted(glob.glob(os.path.join(mask_dir, "dataset_score_*.npy")))
    if not files:
        raise UserError(f"no dataset_score_*.npy in {mask_dir}: run importance_evaluation.py --mask_path {mask_dir} first")
    out = {}
    for f in files:
        tag = os.path.basename(f)[len("dataset_score_"):-len(".npy")]
        info_path = os.path.join(mask_dir, f"info_{tag}.json")
        info = json.load(open(info_path)) if os.path.exists(info_path) else {}
        out[tag] = (np.load(f).astype(np.float64), info)
    sizes = {len(s) for s, _ in out.values()}
    if len(sizes) != 1:
        raise UserError(f"the scores in {mask_dir} have different lengths {sorted(sizes)}: one data set per folder")
    return out


class Images:
    """Training images of a data set, read lazily where they are files (ImageFolder)."""

    def __init__(self, dataset, data_path):
        from utils import data as d
        self.paths = self.array = None
        if dataset in ("cifar10", "cifar100"):
            self.array, self.labels = d.read_cifar(data_path, dataset, True)           # (N, 3, 32, 32)
            self.names = _cifar_names(data_path, dataset)
        elif dataset == "digits":
            self.array, self.labels = d.read_digits(True)
            self.names = [str(c) for c in range(10)]
        else:
            folder = d._image_folder(data_path, "train")
            self.paths = [p for p, _ in folder.samples]
            self.labels = np.asarray(folder.targets, dtype=np.int64)
            self.names = list(folder.classes)

    def thumb(self, i):
        """(THUMB, THUMB, 3) uint8 of training image i."""
        from PIL import Image
        if self.array is not None:
            img = Image.fromarray(self.array[i].transpose(1, 2, 0))
        else:
            img = Image.open(self.paths[i]).convert("RGB")
        return np.asarray(img.resize((THUMB, THUMB), Image.BILINEAR))


def _cifar_names(root, dataset):
    import pickle
    folder, meta, key = (("cifar-10-batches-py", "batches.meta", "label_names") if dataset == "cifar10"
                         else ("cifar-100-python", "meta", "fine_label_names"))
    try:
        with open(os.path.join(root, folder, meta), "rb") as f:
            return list(pickle.load(f, encoding="latin1")[key])
    except (OSError, KeyError, pickle.UnpicklingError, EOFError):
        return [str(c) for c in range(10 if dataset == "cifar10" else 100)]


def flags_of(run_folder, n):
    """{"mislabeled": (N,) bool, "corrupted": (N,) bool} found in the training run's folder."""
    out = {}
    for name, f in (("mislabeled", "label_noise_mask.npy"), ("corrupted", "corrupted_mask.npy")):
        path = os.path.join(run_folder, f) if run_folder else None
        if path and os.path.exists(path):
            a = np.load(path)
            if a.shape == (n,):
                out[name] = a.astype(bool)
    return out


# ------------------------------------------------------------------------------------------ pictures
def grid(images, labels, score, classes, per_row, flags, path, title):
    """One canvas: per class a row of kept-first and a row of pruned-first images. Returns (the
    {class name: {"kept": [...], "pruned": [...]}} dataset indices of the cells, the canvas)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pad = 3
    cell = THUMB + 2 * pad
    canvas = np.full((2 * len(classes) * cell, per_row * cell, 3), 255, np.uint8)
    cells, ticks = {}, []
    for r, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(score[members], kind="stable")]              # ascending within the class
        rows = {"kept": order[::-1][:per_row], "pruned": order[:per_row]}
        cells[images.names[c] if c < len(images.names) else str(c)] = {k: v.tolist() for k, v in rows.items()}
        for j, (kind, idx) in enumerate(rows.items()):
            y0 = (2 * r + j) * cell
            ticks.append((y0 + cell / 2, f"{images.names[c] if c < len(images.names) else c}: {kind}"))
            for k, i in enumerate(idx):
                x0 = k * cell
                for name, colour in FRAME.items():
                    if name in flags and flags[name][i]:
                        canvas[y0:y0 + cell, x0:x0 + cell] = colour
                canvas[y0 + pad:y0 + pad + THUMB, x0 + pad:x0 + pad + THUMB] = images.thumb(i)
    fig, ax = plt.subplots(figsize=(1.0 + per_row * 0.6, 0.3 + len(classes) * 1.2))
    ax.imshow(canvas)
    ax.set_yticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=7)
    ax.set_xticks([])
    ax.set_title(title + ("  (red frame: mislabeled, orange: corrupted)" if flags else ""), fontsize=8)
    save_figure(path, fig)
    plt.close(fig)
    return cells, canvas


def class_counts(labels, num_classes, score, rates, names, path, title):
    """Bars: kept samples per class at each rate; dashed: the class-balanced budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(score)
    order = np.argsort(score, kind="stable")
    sizes = np.bincount(labels, minlength=num_classes)
    fig, axes = plt.subplots(len(rates), 1, figsize=(max(6, 0.12 * num_classes + 3), 2.0 * len(rates)),
                             squeeze=False, sharex=True)
    counts = {}
    for ax, r in zip(axes[:, 0], rates):
        kept = order[n - kept_count(n, r):]
        c = np.bincount(labels[kept], minlength=num_classes)
        counts[r] = c.tolist()
        ax.bar(np.arange(num_classes), c, color="tab:blue", width=0.8)
        ax.step(np.arange(num_classes + 1) - 0.5, np.r_[_class_budgets(sizes, len(kept)), 0], where="post",
                color="k", linestyle="--", linewidth=1, label="class-balanced budget")
        ax.set_ylabel(f"kept at {r:g}", fontsize=8)
        ax.set_title(f"rate {r:g}: per class min {c.min()}, max {c.max()}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    if num_classes <= 20:
        axes[-1, 0].set_xticks(range(num_classes), [names[i] if i < len(names) else str(i) for i in range(num_classes)],
                               rotation=45, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("class")
    fig.suptitle(title, fontsize=9)
    save_figure(path, fig)
    plt.close(fig)
    return counts


def trajectories(dyn_path, T, score, path, title, k=5):
    """c_t (t = 0..T-2) of the k highest- and k lowest-scored samples, read from the dynamics."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from utils.features import epoch_features
    from utils.scoring import Dynamics
    dyn = Dynamics(dyn_path, T)
    order = np.argsort(score, kind="stable")
    picks = {"kept": order[::-1][:k], "pruned": order[:k]}
    idx = np.concatenate(list(picks.values()))
    c = np.zeros((T - 1, len(idx)))
    prev = None
    for e in range(T):
        if dyn.fmt == "logits":
            z = torch.from_numpy(dyn.read(e, "Output", 0, dyn.n)[idx].astype(np.float32))
            feats, prev = epoch_features(z, None, prev, ("contrib",))
            if e:
                c[e - 1] = feats["contrib"].numpy()
        elif e:
            c[e - 1] = dyn.read(e, "Contrib", 0, dyn.n)[idx]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for j, i in enumerate(idx):
        kind = "kept" if j < k else "pruned"
        ax.plot(np.arange(T - 1), c[:, j], color="tab:blue" if kind == "kept" else "tab:red", alpha=0.8,
                label=f"{k} {kind} ({'highest' if kind == 'kept' else 'lowest'} scores)" if j in (0, k) else None)
    ax.set_xlabel("t (contribution between epochs t and t+1)")
    ax.set_ylabel("c_t")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(path, fig)
    plt.close(fig)
    return {kind: v.tolist() for kind, v in picks.items()}


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    from tqdm import tqdm
    from utils.agreement import write_agreement
    args = parse_args(argv)
    if not os.path.isdir(args.mask_dir):
        raise UserError(f"{args.mask_dir} is not a folder: pass the --mask_path of importance_evaluation.py")
    if not all(0 <= r < 1 for r in args.rates):
        raise UserError(f"--rates are pruning rates in [0, 1), got {args.rates}")
    if args.classes < 1 or args.per_row < 1:
        raise UserError("--classes and --per_row must be at least 1")
    scores = load_scores(args.mask_dir)
    infos = [i for _, i in scores.values() if i]
    dataset = args.dataset or next((i.get("dataset") for i in infos if i.get("dataset")), None)
    data_path = args.data_path or next((i.get("data_path") for i in infos if i.get("data_path")), None) or "./data"
    if dataset is None:
        raise UserError(f"the scores in {args.mask_dir} do not say which data set they are of: pass --dataset "
                        f"(and --data_path)")
    images = Images(dataset, data_path)
    n = len(next(iter(scores.values()))[0])
    if len(images.labels) != n:
        raise UserError(f"the scores in {args.mask_dir} have {n} samples, {dataset} in {data_path} has "
                        f"{len(images.labels)}: pass the data set they were computed on")
    run_folder = next((i.get("dynamics_run") for i in infos if i.get("dynamics_run")), None)
    labels = images.labels
    if run_folder and os.path.exists(os.path.join(run_folder, "train_labels.npy")):
        labels = np.load(os.path.join(run_folder, "train_labels.npy"))   # the labels trained on (noise)
    flags = flags_of(run_folder, n)
    num_classes = max(int(labels.max()) + 1, len(images.names))
    classes = list(range(min(args.classes, num_classes)))
    out = ensure_writable_dir(args.out or os.path.join(args.mask_dir, "report"), "--out")

    md = [f"# What the scores keep: {dataset}, N = {n}", "",
          f"Scores from `{os.path.abspath(args.mask_dir)}`; pruning rates {', '.join(f'{r:g}' for r in args.rates)} "
          "(fraction removed). Higher score = kept.", ""]
    grids, counts, traj = {}, {}, {}
    for tag, (score, info) in tqdm(scores.items(), desc="report", unit="score", disable=not sys.stderr.isatty()):
        grids[tag], _ = grid(images, labels, score, classes, args.per_row, flags, os.path.join(out, f"grid_{tag}.png"),
                          f"{tag}: per class, highest scores (kept first) and lowest (pruned first)")
        counts[tag] = class_counts(labels, num_classes, score, args.rates, images.names,
                                   os.path.join(out, f"classes_{tag}.png"), f"{tag}: kept samples per class")
        md += [f"## {tag}", "",
               f"![grid](grid_{tag}.png)", "",
               "Each class's two rows: the highest-scored training images (kept first) and the lowest-scored "
               "(pruned first)" + (" — red frames mislabeled, orange corrupted samples." if flags else "."), "",
               f"![classes](classes_{tag}.png)", "",
               "Kept samples per class at each pruning rate; the dashed line is the budget a class-balanced "
               "selection would give each class.", ""]
        dyn_path = args.dynamics_path or info.get("dynamics_path")
        T = info.get("trajectory_len")
        if info.get("method", "tdds" if tag.startswith("win") else None) == "tdds" and dyn_path and T:
            if os.path.isdir(dyn_path) and T >= 2:
                traj[tag] = trajectories(dyn_path, T, score, os.path.join(out, f"trajectory_{tag}.png"),
                                         f"{tag}: TDDS contributions c_t of the 5 highest and 5 lowest scores")
                md += [f"![trajectory](trajectory_{tag}.png)", "",
                       "The per-epoch contributions c_t that TDDS's score summarises: kept samples (blue) keep "
                       "changing late in training, pruned ones (red) settle early.", ""]
    agreement = ""
    if len(scores) > 1:
        agreement = write_agreement({t: s for t, (s, _) in scores.items()}, args.rates,
                                    os.path.join(out, "agreement.md"), os.path.join(out, "agreement.png"),
                                    title="Agreement between the scores")
        md += ["## Agreement between the scores", "", "![agreement](agreement.png)", "",
               "Spearman correlation of the scores and Jaccard overlap of the kept sets at each rate "
               "([agreement.md](agreement.md) has the numbers).", ""]
    save_json(os.path.join(out, "grids.json"), grids)
    save_json(os.path.join(out, "class_counts.json"), {t: {f"{r:g}": c for r, c in v.items()} for t, v in counts.items()})
    save_text(os.path.join(out, "report.md"), "\n".join(md) + "\n")
    print(f"wrote {out}/report.md: {len(scores)} scores, {len(classes)} classes in the grids"
          f"{', trajectories for ' + ', '.join(traj) if traj else ''}{', agreement' if agreement else ''}")


if __name__ == "__main__":
    run(main)
