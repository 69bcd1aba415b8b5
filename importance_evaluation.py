"""Score every training sample from its recorded training dynamics: TDDS (the default) or a baseline.

TDDS on the dynamics of a full-data run (epochs 0..T-1 of <save_path>/npy/), the paper's CIFAR-100
setting for pruning rate 0.3:

    python importance_evaluation.py --dynamics_path ./checkpoint/all-dataset/npy/ \
        --mask_path ./checkpoint/generated_mask/ --trajectory_len 90 --window_size 10 --decay 0.9

A baseline on the same files (el2n, forgetting, aum, dyn_unc need labels: a folder written by this
project's train.py holds targets.npy; for files of the published train.py name the data set):

    python importance_evaluation.py --dynamics_path ./checkpoint/all-dataset/npy/ --method el2n \
        --trajectory_len 20 --data_path ./data --dataset cifar100

Writes into --mask_path: data_mask_<tag>.npy (dataset indices by ascending score, int64; the
published file train_subset.py reads), score_<tag>.npy (the score sorted ascending, float32),
dataset_score_<tag>.npy (the score in dataset order) and score_hist_<tag>.png, where <tag> is
win<K>_ep<T> for TDDS and <method>_ep<T> for a baseline. Higher score = more important = kept.
"""
import os
import time

import numpy as np

from utils.args import DATASETS, Parser
from utils.errors import UserError, run
from utils.io import ensure_writable_dir, save_figure, save_npy
from utils.scoring import (LABEL_METHODS, METHODS, Dynamics, check_args, check_targets, compute_score,
                           method_labels, output_names)


def parse_args(argv=None):
    parser = Parser(description=__doc__.split('\n')[0])
    io = parser.add_argument_group('files')
    io.add_argument('--dynamics_path', type=str, required=True,
                    help='folder of <e>_Output.npy/<e>_Index.npy (or --dynamics_format contrib files)')
    io.add_argument('--mask_path', type=str, default='./checkpoint/generated_mask/',
                    help='output folder (created)')
    io.add_argument('--no_plot', action='store_true', help='do not write the score histogram')
    score = parser.add_argument_group('score')
    score.add_argument('--method', type=str, default='tdds', choices=METHODS, help='score to compute')
    score.add_argument('--trajectory_len', type=int, default=30, help='T: use epochs 0..T-1')
    score.add_argument('--window_size', type=int, default=10, help='K: epochs per window (tdds, dyn_unc)')
    score.add_argument('--decay', type=float, default=0.9, help='beta of the exponential window weights (tdds)')
    score.add_argument('--manualSeed', type=int, default=42, help='seed of --method random')
    labels = parser.add_argument_group('labels (for el2n, forgetting, aum, dyn_unc when the folder has no targets.npy)')
    labels.add_argument('--data_path', type=str, default=None, help='data set root, as for train.py')
    labels.add_argument('--dataset', type=str, default=None, choices=DATASETS, help='data set name, as for train.py')
    compute = parser.add_argument_group('compute')
    compute.add_argument('--chunk_size', type=int, default=None,
                         help='samples scored at a time (default: buffers of ~32 MB; bounds memory)')
    compute.add_argument('--device', type=str, default=None, help='torch device (default: cuda if available, else cpu)')
    return parser.parse_args(argv)


def check_output_dir(path):
    """Fail before the work, not after it, if --mask_path cannot be created or written."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"--mask_path {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--mask_path {path}: {parent} is not writable")


def load_labels(args, dyn):
    """Labels from --data_path/--dataset, or None (then dyn.targets is used, if the method needs any)."""
    if args.method not in LABEL_METHODS or dyn.fmt != 'logits':
        return None
    if args.data_path is None and args.dataset is None:
        return None
    if args.data_path is None or args.dataset is None:
        raise UserError("--data_path and --dataset go together: pass both to read the labels from the data set")
    from utils.data import load_targets   # only this branch needs the data set code
    y = check_targets(load_targets(args.data_path, args.dataset), dyn.n, dyn.num_classes,
                      f"--dataset {args.dataset} in {args.data_path}")
    if dyn.targets is not None and (dyn.targets != y).any():
        raise UserError(f"the labels of --dataset {args.dataset} in {args.data_path} differ from "
                        f"{os.path.join(dyn.path, 'targets.npy')} for {(dyn.targets != y).sum()} samples")
    return y


def resolve_device(name):
    import torch
    if name is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return name


def plot_histogram(path, score, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(score, bins=100, log=True)
    ax.set_xlabel('score (higher = kept)')
    ax.set_ylabel('samples')
    ax.set_title(title)
    save_figure(path, fig)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    T, K = args.trajectory_len, args.window_size
    check_args(args.method, T, K, args.decay, args.chunk_size)
    check_output_dir(args.mask_path)
    if args.method == 'tdds' and K == 2:
        print("note: --window_size 2 puts one contribution in each window, so every TDDS score is 0; use K >= 3")
    dyn = Dynamics(args.dynamics_path, T)
    targets = method_labels(dyn, args.method, load_labels(args, dyn))   # None if not needed
    device = resolve_device(args.device) if args.method != 'random' else 'cpu'
    what = {'tdds': f'TDDS (T={T}, K={K}, decay={args.decay})', 'random': f'random (seed {args.manualSeed})',
            'dyn_unc': f'dyn_unc (T={T}, K={K})'}.get(args.method, f'{args.method} (T={T})')
    shape = f'{dyn.n} x {dyn.num_classes} logits' if dyn.fmt == 'logits' else f'{dyn.n} samples, per-epoch features'
    print(f"{what} from {args.dynamics_path}: {shape}, {dyn.epochs_recorded} epochs recorded, on {device}")

    score = compute_score(dyn, args.method, T, K, args.decay, targets=targets, seed=args.manualSeed,
                          chunk_size=args.chunk_size, device=device)   # (N,) dataset order
    mask = np.argsort(score, kind='stable').astype(np.int64)           # ascending: kept = the tail

    ensure_writable_dir(args.mask_path, '--mask_path')
    names = output_names(args.method, T, K)
    out = {k: os.path.join(args.mask_path, v) for k, v in names.items()}
    save_npy(out['mask'], mask)
    print(f"wrote {out['mask']}: ({dyn.n},) int64 dataset indices by ascending score (keep the tail)")
    save_npy(out['score'], score[mask])
    print(f"wrote {out['score']}: ({dyn.n},) float32 score sorted ascending, "
          f"min {score[mask[0]]:.4g} median {np.median(score):.4g} max {score[mask[-1]]:.4g}")
    save_npy(out['dataset_score'], score)
    print(f"wrote {out['dataset_score']}: ({dyn.n},) float32 score in dataset order")
    if not args.no_plot:
        plot_histogram(out['hist'], score, f"{what}, N={dyn.n}")
        print(f"wrote {out['hist']}: histogram of the score (log counts)")
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == '__main__':
    run(main)
