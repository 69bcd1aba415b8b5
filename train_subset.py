"""Step 3 of TDDS: train on the subset that the scores keep.

    python train_subset.py --data_path ./data --dataset cifar100 --arch resnet18 --epochs 200 \
        --learning_rate 0.1 --batch-size 128 --save_path ./checkpoint/pruned-dataset --subset_rate 0.9 \
        --mask_path ./checkpoint/generated_mask/data_mask_win10_ep30.npy \
        --score_path ./checkpoint/generated_mask/score_win10_ep30.npy
    python train_subset.py ... --subset_rate 0.7 --selection ccs --mis_ratio 0.1     # coverage-centric
    python train_subset.py ... --subset_rate 0.7 --selection random                  # the fair baseline
    python train_subset.py ... --subset_rate 0.7 --budget iterations                 # as many steps as the full data
    python train_subset.py ... --subset_rate 0.9 --selection beta \
        --mask_path ./checkpoint/generated_mask/data_mask_dual_ep30.npy ...           # DUAL's Beta sampling
    python train_subset.py ... --subset_rate 0.9 --selection random \
        --teacher ./checkpoint/all-dataset/model_best.pth.tar --kd_alpha 1.0           # distillation
    torchrun --nproc_per_node=4 train_subset.py ...

--subset_rate is the fraction PRUNED: the kept set is mask[int(rate * N):], N - floor(rate * N)
samples (every strategy keeps that many). As published, each batch's mean loss is multiplied by the
batch's mean min-max-normalised score (docs/METHODS.md, "The published loss weighting"); --no_score_weighting turns it off.
--selection beta draws the kept set with DUAL's pruning-rate-adaptive Beta weights, from any score and
the mean_p_<tag>.npy that importance_evaluation.py --method dual writes; --teacher adds distillation
from the full-data model (docs/AGGRESSIVE_PRUNING.md).
"""
import os
import re

import numpy as np
import torch

from utils import dist
from utils.args import DATA_SETTINGS, Parser, add_training_args, check_training_args, without_unused
from utils.errors import UserError, run
from utils.methods import SELECTIONS
from utils.protocol.files import load_json, save_npy
from utils.protocol.fingerprint import file_sha256, run_fingerprint
from utils.protocol.outputs import training_set_info, write_training_set_files
from utils.protocol.run import already_done, open_run
from utils.science.scores import mean_p_name
from utils.science.selection import BETA_C, STRATEGIES, file_tag, load_mask_and_score, loss_weights, select
from utils.training.data import make_batches
from utils.training.distill import check_kd_args, load_teacher
from utils.training.loop import evaluate_only, fit
from utils.training.setup import build_model, run_facts, setup

BUDGETS = ("epochs", "iterations")


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n")[0])
    add_training_args(parser, default_save_path="./checkpoint/pruned-dataset", default_batch_size=128)
    g = parser.add_argument_group("subset")
    g.add_argument("--subset_rate", type=float, default=0.9, help="fraction of the training set PRUNED")
    g.add_argument("--mask_path", type=str, default="", help="data_mask_*.npy from importance_evaluation.py")
    g.add_argument("--score_path", type=str, default="", help="score_*.npy belonging to that mask")
    g.add_argument("--selection", choices=STRATEGIES, default="top",
                   help="top: highest scores (published); ccs: coverage-centric; random: uniform baseline; "
                        "beta: DUAL's Beta sampling (score x Beta pdf of the mean p_y, drawn from --manualSeed)")
    g.add_argument("--mis_ratio", type=float, default=0.0, help="ccs: fraction of hardest samples dropped first")
    g.add_argument("--strata", type=int, default=50, help="ccs: number of equal-width score strata")
    g.add_argument("--beta_c", type=float, default=BETA_C,
                   help="beta: the exponent c in beta = 15 (1 - mu)(1 - rate^c); 4 was tuned on CIFAR by DUAL's "
                        "authors, not on other data sets")
    g.add_argument("--mean_p_path", type=str, default="",
                   help="beta: each sample's mean p_y (N,) (default: mean_p_<tag>.npy beside --mask_path, written "
                        "by --method dual; another score, e.g. TDDS, needs a dual run's file here)")
    g.add_argument("--class_balanced", action="store_true", help="select within each class, budgets by class size")
    g.add_argument("--no_score_weighting", action="store_true",
                   help="plain mean loss instead of the published score-weighted loss")
    g.add_argument("--budget", choices=BUDGETS, default="epochs",
                   help="epochs: --epochs passes over the subset (published); iterations: as many optimizer "
                        "steps as --epochs over the full data at this batch size (CCS, DUAL, D2, ELFS)")
    g = parser.add_argument_group("distillation (Ben-Baruch et al. 2024: learn from the full-data model too)")
    g.add_argument("--teacher", type=str, default=None, metavar="PATH",
                   help="model_best.pth.tar (or checkpoint.pth.tar) of train.py on this same training set")
    g.add_argument("--kd_alpha", type=float, default=None,
                   help="weight of the distillation term, 0..1 (required with --teacher; larger at higher "
                        "pruning rates, e.g. 0.5 up to 50%% pruned, 1.0 at 90%%; untuned here)")
    g.add_argument("--kd_temperature", type=float, default=4.0, help="softmax temperature tau of both models")
    return parser.parse_args(argv)


def score_info(mask_path):
    """importance_evaluation.py's info_<tag>.json beside data_mask_<tag>.npy, or {} (published files)."""
    tag = file_tag(mask_path, "data_mask_")
    if tag is None:
        return {}
    path = os.path.join(os.path.dirname(mask_path), f"info_{tag}.json")
    return load_json(path, {})


def method_name(score_path, selection, info):
    """The info file's method, else from the name: 'tdds' for score_win{K}_ep{T}*.npy, M for
    score_{M}_ep{T}*.npy or score_{M}.npy; 'random' for random selection."""
    if selection == "random":
        return "random"
    if info.get("method"):
        return info["method"]
    name = os.path.basename(score_path or "")
    if re.fullmatch(r"score_win\d+_ep\d+.*\.npy", name):
        return "tdds"
    m = re.fullmatch(r"score_([a-z0-9]+(?:_[a-z]+)?)(?:_ep\d+.*)?\.npy", name)
    return m.group(1) if m else "custom"


def check_same_training_set(args, info):
    """Refuse a mask scored on dynamics of another data set, or whose training set (label noise,
    corruption) differs."""
    if info.get("dataset") and info["dataset"] != args.dataset:
        raise UserError(f"--mask_path {args.mask_path} was scored on {info['dataset']}, this run trains on "
                        f"--dataset {args.dataset}")
    scored = without_unused({k: d if info[k] is None else info[k] for k, d in DATA_SETTINGS.items() if k in info})
    here = without_unused({k: getattr(args, k) for k in DATA_SETTINGS})
    for key in DATA_SETTINGS:
        if key in scored and scored[key] != here.get(key):
            raise UserError(f"--mask_path {args.mask_path} was scored on dynamics recorded with --{key} {scored[key]}, "
                            f"this run has --{key} {here.get(key, getattr(args, key))}: train on the data set that was scored")


def check_scoring_committed(args, info, files):
    """The mask and score files must be the ones their info_<tag>.json (the scoring's commit record)
    describes: otherwise they were replaced after that scoring, or a scoring was cut short."""
    recorded = info.get("sha256") or {}
    for flag, key in (("--mask_path", "mask"), ("--score_path", "score")):
        have = files.get(f"content of {flag}")
        if have and recorded.get(key) and have != recorded[key]:
            raise UserError(f"{flag} {getattr(args, flag[2:])} is not the file its info_{info.get('tag')}.json describes "
                            f"(replaced after that scoring, or a scoring that did not finish): score again")


def check_subset_args(args):
    if not 0 <= args.subset_rate < 1:
        raise UserError(f"--subset_rate is the fraction pruned and must lie in [0, 1), got {args.subset_rate}")
    if args.selection != "random" and not args.mask_path:
        raise UserError(f"--selection {args.selection} needs --mask_path (a data_mask_*.npy from importance_evaluation.py)")
    if SELECTIONS[args.selection].score_values and not args.score_path:
        raise UserError(f"--selection {args.selection} needs --score_path (the score_*.npy of the mask)")
    if args.mean_p_path and args.selection != "beta":
        raise UserError(f"--mean_p_path is read by --selection beta only (this run has --selection {args.selection})")
    if args.selection != "random" and not args.score_path and not args.no_score_weighting:
        raise UserError("the published score-weighted loss needs --score_path (the score_*.npy of the mask); "
                        "pass it, or --no_score_weighting to train with the plain mean loss")
    check_kd_args(args)


def mean_p_file(args):
    """--mean_p_path, else mean_p_<tag>.npy beside data_mask_<tag>.npy."""
    if args.mean_p_path:
        return args.mean_p_path
    tag = file_tag(args.mask_path, "data_mask_")
    if tag is None:
        raise UserError(f"--selection beta: cannot name the mean p_y file of {args.mask_path} (not data_mask_<tag>.npy): "
                        f"pass --mean_p_path")
    return os.path.join(os.path.dirname(args.mask_path), mean_p_name(tag))


def load_mean_p(path, n):
    """(N,) float64 mean p_y in dataset order; a missing or wrong file is one line naming it."""
    if not os.path.isfile(path):
        raise UserError(f"--selection beta needs each sample's mean p_y: no {path} (importance_evaluation.py "
                        f"--method dual writes mean_p_<tag>.npy; for another score pass a dual run's file as --mean_p_path)")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"cannot read {path}: not a .npy array ({type(e).__name__})") from None
    if a.shape != (n,) or a.dtype.kind != "f":
        raise UserError(f"{path} holds {a.dtype} {a.shape}, expected ({n},) floats: the mean p_y of this training set")
    if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
        raise UserError(f"{path} holds values outside [0, 1]: not probabilities")
    return a.astype(np.float64)


def main(argv=None):
    args = parse_args(argv)
    check_training_args(args)
    check_subset_args(args)
    device, data = setup(args)                                    # reads only, writes nothing
    n = data.n_train
    order = score = None
    info = score_info(args.mask_path) if args.mask_path and args.selection != "random" else {}
    if args.mask_path and args.selection != "random":
        check_same_training_set(args, info)
        if not info and dist.is_main_process():
            ambiguous = " (CIFAR-10 and CIFAR-100 both have 50,000 training images)" \
                if args.dataset in ("cifar10", "cifar100") else ""
            noisy = (f", nor that it was scored with --label_noise {args.label_noise} --corrupt_ratio "
                     f"{args.corrupt_ratio}" if args.label_noise or args.corrupt_ratio else "")
            print(f"note: no info_<tag>.json beside {args.mask_path} (published or renamed files): the data set it was "
                  f"scored on cannot be checked{ambiguous}{noisy}")
        order, score = load_mask_and_score(args.mask_path, args.score_path or None, n, data.name)
    mean_p_path = mean_p_file(args) if args.selection == "beta" else ""
    mean_p = load_mean_p(mean_p_path, n) if mean_p_path else None
    kept = select(order, score, args.subset_rate, args.selection, seed=args.manualSeed,
                  mis_ratio=args.mis_ratio, strata=args.strata, class_balanced=args.class_balanced,
                  targets=data.targets, n=n, mean_p=mean_p, beta_c=args.beta_c)
    distill, teacher = load_teacher(args, data, device)          # (None, {}) without --teacher
    weighted = score is not None and not args.no_score_weighting and args.selection != "random"
    files = {f"content of {flag}": file_sha256(path) if path and args.selection != "random" else None
             for flag, path in (("--mask_path", args.mask_path), ("--score_path", args.score_path))}
    check_scoring_committed(args, info, files)
    if mean_p_path:
        files["content of --mean_p_path"] = file_sha256(mean_p_path)
    if teacher:
        files["content of --teacher"] = teacher["teacher_sha256"]
    fingerprint = run_fingerprint(args, **run_facts(args, data, device), **files)   # the paths' content, not the paths
    model = build_model(args, data, device)                       # (an unknown --arch stops here)
    if args.evaluate:
        return evaluate_only(args, model, data)
    folder = open_run(args, fingerprint)                          # lock, read, decide (or refuse)
    if folder.done is not None:
        return already_done(args, folder.done)
    ck, resume_from = folder.ck, folder.resume_from
    folder.begin(run_id=(ck or {}).get("run_info", {}).get("run_id"))   # the first write
    log = folder.log
    if dist.is_main_process():
        save_npy(os.path.join(args.save_path, "subset_indices.npy"), kept)
        write_training_set_files(args.save_path, data)
    method = method_name(args.score_path, args.selection, info)
    classes = np.bincount(data.targets[kept], minlength=data.num_classes)
    log(f"{data.name}: keeping {len(kept)} of {n} samples (pruning rate {args.subset_rate}, {method}, "
        f"selection {args.selection}{', class-balanced' if args.class_balanced else ''}); "
        f"per class min {classes.min()} max {classes.max()} | {args.save_path}/subset_indices.npy")
    weights = mean_u = None
    if weighted:
        weights = torch.from_numpy(loss_weights(score)).to(device)
        mean_u = weights[torch.from_numpy(kept).to(device)].mean().item()
        log(f"score-weighted loss (published): mean weight u of the kept set {mean_u:.3f}, so the effective "
            f"learning rate is scaled by about {mean_u:.3f}{' (the distillation loss too)' if distill else ''}; "
            f"--no_score_weighting turns it off")
    if distill is not None:
        log(f"distillation from {args.teacher} ({teacher['teacher_arch']}, epoch {teacher['teacher_epoch']}, "
            f"best {teacher['teacher_best_acc']}%): loss (1 - {args.kd_alpha}) CE + {args.kd_alpha} "
            f"x {args.kd_temperature}^2 KL")
    total_steps = None
    if args.budget == "iterations":   # the full data's steps at this batch size
        total_steps = args.epochs * len(make_batches(torch.arange(n), args.batch_size, None, 0, dist.world_size()))
    run_info = {"dataset": data.name, "arch": args.arch, "seed": args.manualSeed, "method": method,
                "subset_rate": args.subset_rate, "selection": args.selection,
                "class_balanced": args.class_balanced, "score_weighting": weighted, "mean_weight": mean_u,
                "mask_path": args.mask_path, "score_path": args.score_path, "budget": args.budget,
                "batch_size": args.batch_size, "beta_c": args.beta_c if args.selection == "beta" else None,
                "mean_p_path": mean_p_path or None, **teacher,
                "scored_arch": info.get("arch"), "score_info": info or None,
                "num_train_samples": int(len(kept)), "full_train_samples": n, "run_id": folder.run_id,
                **training_set_info(data), **kept_flagged(kept, data, log)}
    with folder:                                  # an exception marks the folder failed, the lock goes
        result = fit(args, model, data, torch.from_numpy(kept), device, run_info=run_info, fingerprint=fingerprint,
                     ck=ck, resume_from=resume_from, weights=weights, total_steps=total_steps, log=log,
                     distill=distill)
        folder.end(result)
    dist.cleanup()
    return result


def kept_flagged(kept, data, log):
    """How many of the kept samples are mislabeled / corrupted, and how many of those were kept."""
    out = {}
    for name, flagged in (("mislabeled", data.flipped), ("corrupted", data.corrupted)):
        if flagged is None:
            continue
        k = int(flagged[kept].sum())
        out[f"kept_{name}_fraction"] = k / len(kept)
        out[f"{name}_kept_fraction"] = k / int(flagged.sum()) if flagged.any() else None
        log(f"{name}: {k} of the {len(kept)} kept samples ({100 * k / len(kept):.1f}%); "
            f"{k} of all {int(flagged.sum())} {name} samples kept")
    return out


if __name__ == "__main__":
    run(main)
