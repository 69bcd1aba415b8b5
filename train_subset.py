"""Step 3 of TDDS: train on the subset that the scores keep.

    python train_subset.py --data_path ./data --dataset cifar100 --arch resnet18 --epochs 200 \
        --learning_rate 0.1 --batch-size 128 --save_path ./checkpoint/pruned-dataset --subset_rate 0.9 \
        --mask_path ./checkpoint/generated_mask/data_mask_win10_ep30.npy \
        --score_path ./checkpoint/generated_mask/score_win10_ep30.npy
    python train_subset.py ... --subset_rate 0.7 --selection ccs --mis_ratio 0.1     # coverage-centric
    python train_subset.py ... --subset_rate 0.7 --selection random                  # the fair baseline
    torchrun --nproc_per_node=4 train_subset.py ...

--subset_rate is the fraction PRUNED: the kept set is mask[int(rate * N):], N - floor(rate * N)
samples (every strategy keeps that many). As published, each batch's mean loss is multiplied by the
batch's mean min-max-normalised score (see README, "Loss weighting"); --no_score_weighting turns it off.
"""
import os
import re

import numpy as np
import torch

from utils import dist
from utils.args import Parser, add_training_args, check_training_args
from utils.engine import evaluate_only, fit, open_log, start_run
from utils.errors import UserError, run
from utils.io import save_npy
from utils.selection import STRATEGIES, load_mask_and_score, loss_weights, select


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n")[0])
    add_training_args(parser, default_save_path="./checkpoint/pruned-dataset")
    g = parser.add_argument_group("subset")
    g.add_argument("--subset_rate", type=float, default=0.3, help="fraction of the training set PRUNED")
    g.add_argument("--mask_path", type=str, default="", help="data_mask_*.npy from importance_evaluation.py")
    g.add_argument("--score_path", type=str, default="", help="score_*.npy belonging to that mask")
    g.add_argument("--selection", choices=STRATEGIES, default="top",
                   help="top: highest scores (published); ccs: coverage-centric; random: uniform baseline")
    g.add_argument("--mis_ratio", type=float, default=0.0, help="ccs: fraction of hardest samples dropped first")
    g.add_argument("--strata", type=int, default=50, help="ccs: number of equal-width score strata")
    g.add_argument("--class_balanced", action="store_true", help="select within each class, budgets by class size")
    g.add_argument("--no_score_weighting", action="store_true",
                   help="plain mean loss instead of the published score-weighted loss")
    return parser.parse_args(argv)


def method_name(score_path, selection):
    """'tdds' for score_win{K}_ep{T}.npy, M for score_{M}_ep{T}.npy, 'random' for random selection."""
    if selection == "random":
        return "random"
    name = os.path.basename(score_path or "")
    if re.fullmatch(r"score_win\d+_ep\d+\.npy", name):
        return "tdds"
    m = re.fullmatch(r"score_(\w+?)_ep\d+\.npy", name)
    return m.group(1) if m else "custom"


def main(argv=None):
    args = parse_args(argv)
    check_training_args(args)
    if not 0 <= args.subset_rate < 1:
        raise UserError(f"--subset_rate is the fraction pruned and must lie in [0, 1), got {args.subset_rate}")
    if args.selection != "random" and not args.mask_path:
        raise UserError(f"--selection {args.selection} needs --mask_path (a data_mask_*.npy from importance_evaluation.py)")
    if args.selection == "ccs" and not args.score_path:
        raise UserError("--selection ccs needs --score_path (the score_*.npy of the mask)")
    device, data, model, resume_from = start_run(args)
    n = data.n_train
    order = score = None
    if args.mask_path:
        order, score = load_mask_and_score(args.mask_path, args.score_path or None, n, data.name)
    kept = select(order, score, args.subset_rate, args.selection, seed=args.manualSeed,
                  mis_ratio=args.mis_ratio, strata=args.strata, class_balanced=args.class_balanced,
                  targets=data.targets, n=n)
    weighted = score is not None and not args.no_score_weighting and args.selection != "random"
    weights = torch.from_numpy(loss_weights(score)).to(device) if weighted else None
    if args.evaluate:
        return evaluate_only(args, model, data)
    log = open_log(args, resume_from)
    if dist.is_main_process():
        save_npy(os.path.join(args.save_path, "subset_indices.npy"), kept)
    method = method_name(args.score_path, args.selection)
    classes = np.bincount(data.targets[kept], minlength=data.num_classes)
    log(f"{data.name}: keeping {len(kept)} of {n} samples (pruning rate {args.subset_rate}, {method}, "
        f"selection {args.selection}{', class-balanced' if args.class_balanced else ''}); "
        f"per class min {classes.min()} max {classes.max()} | {args.save_path}/subset_indices.npy")
    if weighted:
        log(f"score-weighted loss: mean weight u of the kept set {weights[torch.from_numpy(kept).to(device)].mean().item():.3f} "
            f"(the effective learning rate is scaled by about that; --no_score_weighting turns it off)")
    run_info = {"dataset": data.name, "arch": args.arch, "seed": args.manualSeed, "method": method,
                "subset_rate": args.subset_rate, "selection": args.selection,
                "class_balanced": args.class_balanced, "score_weighting": weighted,
                "mask_path": args.mask_path, "score_path": args.score_path,
                "num_train_samples": int(len(kept))}
    result = fit(args, model, data, torch.from_numpy(kept), device, run_info=run_info,
                 resume_from=resume_from, weights=weights, log=log)
    dist.cleanup()
    return result


if __name__ == "__main__":
    run(main)
