"""Score every training sample from its recorded training dynamics: TDDS (the default) or a baseline.

TDDS on the dynamics of a full-data run (epochs 0..T-1 of <save_path>/npy/), the paper's CIFAR-100
setting for pruning rate 0.3:

    python importance_evaluation.py --dynamics_path ./checkpoint/all-dataset/npy/ \
        --mask_path ./checkpoint/generated_mask/ --trajectory_len 90 --window_size 10 --decay 0.9

A baseline on the same files (el2n, forgetting, aum, dyn_unc, dual need labels: a folder written by this
project's train.py holds targets.npy; for files of the published train.py name the data set):

    python importance_evaluation.py --dynamics_path ./checkpoint/all-dataset/npy/ --method el2n \
        --trajectory_len 20 --data_path ./data --dataset cifar100

DUAL (Cho et al., ICML 2025) from the first epochs only, for train_subset.py --selection beta:

    python importance_evaluation.py --method dual --trajectory_len 30 --window_size 10

Several values of --trajectory_len, --window_size, --decay score every valid combination while reading
each epoch file once (the same files as one call per combination), plus sensitivity_<method>.md/.png
and one figure of every combination's histogram, score_hist_<method>_grid.png:

    python importance_evaluation.py --trajectory_len 10 20 30 --window_size 5 10 --decay 0.9 0.8

Writes into --mask_path: data_mask_<tag>.npy (dataset indices by ascending score, int64; the
published file train_subset.py reads), score_<tag>.npy (the score sorted ascending, float32),
dataset_score_<tag>.npy (the score in dataset order) and score_hist_<tag>.png, where <tag> is
win<K>_ep<T> for TDDS and <method>_ep<T> for a baseline (_decay<beta> appended when one call scores
several decays, _win<K> for dyn_unc and dual with several window sizes), and info_<tag>.json (what
was scored, from which run, the seconds and device it took). dual also writes mean_p_<tag>.npy, each
sample's mean true-label probability over the same epochs (dataset order), which --selection beta
evaluates. Higher score = more important = kept.
"""
import os
import re
import time

START = time.time()   # the cost ledger counts the whole command, imports included

import numpy as np  # noqa: E402

from utils.args import Parser, given, note_idle  # noqa: E402
from utils.errors import UserError, run  # noqa: E402
from utils.methods import DATASETS, SCORES, describe  # noqa: E402
from utils.protocol.files import (atomic_write, check_writable, load_json, remove_file, save_figure,  # noqa: E402
                                  save_json, save_npy)
from utils.protocol.fingerprint import array_sha256, file_sha256  # noqa: E402
from utils.protocol.lock import FolderLock, check_unlocked  # noqa: E402
from utils.science.scores import (LABEL_METHODS, MEAN_P_METHODS, Dynamics, check_args, check_targets,  # noqa: E402
                                   combinations, compute_scores, mean_p_name, method_labels, output_names,
                                   output_tag)
from utils.training.fraction import FeatureSource, check_extrapolate_args, recorded_subset  # noqa: E402

# the training run's settings copied into info_<tag>.json (from its args.json, when present)
RUN_SETTINGS = ("dataset", "data_path", "arch", "label_noise", "noise_type", "noise_seed", "corrupt_ratio",
                "corruption", "severity", "corrupt_seed")


def parse_args(argv=None):
    parser = Parser(description=__doc__.split('\n')[0])
    io = parser.add_argument_group('files')
    io.add_argument('--dynamics_path', type=str, default='./checkpoint/all-dataset/npy/',
                    help='folder of <e>_Output.npy/<e>_Index.npy (or --dynamics_format contrib files)')
    io.add_argument('--mask_path', type=str, default='./checkpoint/generated_mask/',
                    help='output folder (created)')
    io.add_argument('--no_plot', action='store_true', help='do not write the score histogram')
    io.add_argument('--overwrite', action='store_true',
                    help='replace a finished scoring of the same file names made with other settings or inputs '
                         '(without it: refused; the same settings and inputs: nothing is rewritten)')
    score = parser.add_argument_group('score (several values: every valid combination, one pass over the files)')
    score.add_argument('--method', type=str, default='tdds', choices=tuple(SCORES),
                       help='score to compute (moderate: from the features of --checkpoint, no dynamics)')
    score.add_argument('--checkpoint', type=str, default=None, metavar='PATH',
                       help='moderate: a checkpoint.pth.tar of train.py; its data set and architecture are used '
                            '(score extrapolation: the model whose features are used, by default the run\'s own)')
    score.add_argument('--extrapolate_k', type=int, default=None, metavar='K',
                       help='dynamics of a train.py --train_fraction run: each other sample gets the mean score of '
                            'its K nearest scored samples in the run\'s penultimate features (by default K = 10)')
    score.add_argument('--trajectory_len', type=int, nargs='+', default=[10], metavar='T',
                       help='T: use epochs 0..T-1')
    score.add_argument('--window_size', type=int, nargs='+', default=[10], metavar='K',
                       help='K: epochs per window (tdds: K >= 3; dyn_unc, dual: K >= 2; dual calls it J)')
    score.add_argument('--decay', type=float, nargs='+', default=[0.9], metavar='BETA',
                       help="TDDS's beta, the weight of the exponential window average (NOT the weight decay "
                            "of the training scripts); several values add _decay<beta> to the file names")
    score.add_argument('--manualSeed', type=int, default=42, help='seed of --method random')
    score.add_argument('--sensitivity_rates', type=float, nargs='+', default=[0.3, 0.5, 0.7, 0.9], metavar='R',
                       help='pruning rates of the kept-set overlaps in sensitivity_<method>.md (several combinations)')
    labels = parser.add_argument_group(f"labels (for {', '.join(LABEL_METHODS)} when the folder has no targets.npy)")
    labels.add_argument('--data_path', type=str, default=None, help='data set root, as for train.py')
    labels.add_argument('--dataset', type=str, default=None, choices=DATASETS, help='data set name, as for train.py')
    compute = parser.add_argument_group('compute')
    compute.add_argument('--chunk_size', type=int, default=None,
                         help='samples scored at a time (by default buffers of ~32 MB; bounds memory)')
    compute.add_argument('--device', type=str, default=None, help='torch device (by default cuda if available, else cpu)')
    return parser.parse_args(argv)


def check_output_dir(path):
    """Fail before the work, not after it, if --mask_path cannot be created or written, or another
    process is writing it."""
    if os.path.isfile(path):
        raise UserError(f"--mask_path {path} is a file; it names the output FOLDER (train_subset.py's "
                        f"--mask_path names a file in it)")
    if os.path.isdir(path):   # writable or not: a finished scoring on a read-only mount is "already scored"
        check_unlocked(path, '--mask_path')
    else:
        check_writable(path, '--mask_path')


def check_not_selection(path):
    """A run's selection/ folder (what each epoch of train.py --dynamic trained on) is not dynamics."""
    if os.path.isdir(path) and any(re.fullmatch(r"\d+_Weight\.npy", f) for f in os.listdir(path)):
        raise UserError(f"--dynamics_path {path} is the selection/ folder of a train.py --dynamic run (the samples each "
                        f"epoch trained on, and their weights), not recorded dynamics: scores need every sample's "
                        f"dynamics in every epoch, the npy/ folder of a run with --dynamics and without --dynamic")


def idle_scoring_flags(args, combos):
    """The flags given that this scoring does not read (for a note; the scoring's record holds only what it reads)."""
    g, idle = given(args), []
    for flag, unused, why in (("window_size", all(K is None for _, K, _ in combos), f"{args.method} has no window"),
                              ("decay", all(b is None for _, _, b in combos), "only tdds has a decay"),
                              ("manualSeed", args.method != 'random', "only --method random draws"),
                              ("checkpoint", args.method != 'moderate', "read by --method moderate only"),
                              ("sensitivity_rates", len(combos) == 1, "they compare several combinations"),
                              ("dataset", args.method not in LABEL_METHODS, f"{args.method} reads no labels"),
                              ("data_path", args.method not in LABEL_METHODS, f"{args.method} reads no labels")):
        if flag in g and unused:
            idle.append(f"--{flag} ({why})")
    return idle


ARRAYS = ('mask', 'score', 'dataset_score')   # the files info_<tag>.json vouches for (sha256 each)


def to_write(args, planned):
    """The subset of `planned` {tag: (paths {kind: path}, scoring)} that must be (re)written. A tag whose
    info_<tag>.json records the same scoring (settings and inputs) and whose files are intact is already
    scored: left out, nothing rewritten. One recorded with another scoring is refused unless --overwrite."""
    todo, done = {}, []
    for tag, (paths, scoring) in planned.items():
        info = load_json(paths['info'])
        if info is None:
            if any(os.path.exists(paths[k]) for k in ARRAYS):
                print(f"note: {paths['mask']} has no info_{tag}.json (a scoring that did not finish, or files from "
                      f"elsewhere): replacing it")
            todo[tag] = planned[tag]
            continue
        was = info.get('scoring') or {}
        diffs = [f"{k} {was.get(k)!r} (now {v!r})" for k, v in scoring.items() if was.get(k) != v]
        if diffs and not args.overwrite:
            raise UserError(f"{paths['info']} records a scoring with {', '.join(diffs)}: its files may have trained "
                            f"subsets already; write into another --mask_path, or --overwrite to replace it")
        intact = all(os.path.exists(paths[k]) and file_sha256(paths[k]) == (info.get('sha256') or {}).get(k)
                     for k in ARRAYS)
        if diffs or not intact:
            todo[tag] = planned[tag]
        else:
            done.append(tag)
    for tag in done:
        print(f"already scored: {planned[tag][0]['info']} (the same settings and inputs); nothing rewritten")
    return todo


def decide_under(lock, args, planned):
    """to_write again, now that the lock is held: what another scorer committed meanwhile counts (the same
    scoring: already scored; another: refused). Refused or nothing to do: the lock goes, leaving no trace."""
    try:
        todo = to_write(args, planned)
    except UserError:
        lock.release(refused=True)
        raise
    if not todo:
        lock.release(refused=True)
    return todo


def commit(args, written, start):
    """The scoring's record, written last: info_<tag>.json with the seconds of the whole call and the
    sha256 of the files it vouches for."""
    seconds = time.time() - start
    for tag, (paths, info) in written.items():
        save_json(paths['info'], {**info, 'seconds': seconds,
                                  'sha256': {k: file_sha256(paths[k]) for k in ARRAYS + ('mean_p',) if k in paths}})
        print(f"wrote {paths['info']}: what was scored, from which run, in how many seconds")
    return seconds


def uncommit(paths):
    """Before new arrays are written: the old record goes first (so that a cut-short scoring has no
    info and is never trusted), and the old histogram (so that --no_plot leaves none of another scoring)."""
    for k in ('info', 'hist'):
        remove_file(paths[k])


def load_labels(args, dyn):
    """Labels from --data_path/--dataset, or None (then dyn.targets is used, if the method needs any)."""
    if args.method not in LABEL_METHODS or dyn.fmt != 'logits':
        return None
    if args.data_path is None and args.dataset is None:
        return None
    if args.data_path is None or args.dataset is None:
        raise UserError("--data_path and --dataset go together: pass both to read the labels from the data set")
    from utils.training.data import load_targets  # only this branch needs the data set code
    y = check_targets(load_targets(args.data_path, args.dataset), dyn.n_all, dyn.num_classes,
                      f"--dataset {args.dataset} in {args.data_path}")
    y = y if dyn.subset is None else y[dyn.subset]   # a --train_fraction run's samples
    if dyn.targets is not None and (dyn.targets != y).any():
        raise UserError(f"the labels of --dataset {args.dataset} in {args.data_path} differ from "
                        f"{os.path.join(dyn.path, 'targets.npy')} (the labels trained on) for {(dyn.targets != y).sum()} "
                        f"samples; a run with --label_noise trained on flipped labels: drop --data_path and "
                        f"--dataset to score with targets.npy")
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


def training_run(dynamics_path):
    """(folder, its args.json "args") of the run that recorded the dynamics, or (None, {})."""
    folder = os.path.dirname(os.path.abspath(dynamics_path.rstrip('/')))
    recorded = load_json(os.path.join(folder, 'args.json'))
    return (folder, recorded.get('args') or {}) if recorded is not None else (None, {})


def plot_grid(path, scores, method):
    """One figure, one panel per combination. Drawing a dozen separate figures took as long as the scoring
    itself; one figure whose panels share the y axis (log10 counts on a linear axis: log-scale tick
    machinery is what is slow in matplotlib) costs less than one histogram did."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cols = min(4, len(scores))
    rows = -(-len(scores) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax, (tag, score) in zip(axes.flat, scores.items()):
        counts, edges = np.histogram(score, bins=100)
        ax.stairs(np.log10(np.maximum(counts, 1)), edges, fill=True)   # empty bins drawn at 0 (one sample)
        ax.set_title(tag, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(scores):]:
        ax.axis('off')
    fig.supxlabel('score (higher = kept)')
    fig.supylabel('log10 samples per bin')
    fig.suptitle(f'{method}: {len(scores)} combinations, N={len(next(iter(scores.values())))}')
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
    plt.close(fig)


def write_score(args, score, out, what, plot=True):
    """The mask, score and dataset_score files of one score (N,) (+ histogram unless plot=False: a grid
    draws one figure for all) at the paths `out` ({kind: path}); its info_<tag>.json comes last (commit)."""
    uncommit(out)
    n = len(score)
    mask = np.argsort(score, kind='stable').astype(np.int64)               # ascending: kept = the tail
    save_npy(out['mask'], mask)
    print(f"wrote {out['mask']}: ({n},) int64 dataset indices by ascending score (keep the tail)")
    save_npy(out['score'], score[mask])
    print(f"wrote {out['score']}: ({n},) float32 score sorted ascending, "
          f"min {score[mask[0]]:.4g} median {np.median(score):.4g} max {score[mask[-1]]:.4g}")
    save_npy(out['dataset_score'], score)
    print(f"wrote {out['dataset_score']}: ({n},) float32 score in dataset order")
    if plot and not args.no_plot:
        plot_histogram(out['hist'], score, f"{what}, N={n}")
        print(f"wrote {out['hist']}: histogram of the score (log counts)")


def moderate(args, start):
    """--method moderate: features of the training images under the checkpoint's model."""
    import torch

    from utils.science.moderate import moderate_score
    from utils.training.checkpoint_features import checkpoint_features, read_checkpoint, run_settings
    if not args.checkpoint:
        raise UserError("--method moderate needs --checkpoint (a checkpoint.pth.tar written by train.py)")
    if not os.path.exists(args.checkpoint):   # a folder: load_checkpoint says which file to give
        raise UserError(f"--checkpoint {args.checkpoint}: no such file")
    check_output_dir(args.mask_path)
    ck = read_checkpoint(args.checkpoint)
    run = run_settings(ck, args.checkpoint, args.data_path, args.dataset)
    paths = {k: os.path.join(args.mask_path, v) for k, v in output_names('moderate', 0, 0).items()}
    scoring = {'method': 'moderate', 'checkpoint': f"sha256 {file_sha256(args.checkpoint)}"}
    if not to_write(args, {'moderate': (paths, scoring)}):
        return
    check_writable(args.mask_path, '--mask_path')
    device = torch.device(resolve_device(args.device))
    print(f"moderate from the features of {args.checkpoint} ({run.get('arch')}, epoch {ck.get('epoch')}) on "
          f"{run.get('dataset')}, {device}")
    features, data = checkpoint_features(ck, run, device)   # the training set as trained (noise, corruption)
    _, score = moderate_score(features, data.targets)
    lock = FolderLock(args.mask_path, '--mask_path').acquire()
    if not decide_under(lock, args, {'moderate': (paths, scoring)}):
        return
    info = {'method': 'moderate', 'scoring': scoring, 'tag': 'moderate', 'trajectory_len': None, 'window_size': None, 'decay': None,
            'seed': None, 'checkpoint': os.path.abspath(args.checkpoint), 'checkpoint_epoch': ck.get('epoch'),
            'num_samples': data.n_train, 'num_classes': data.num_classes, 'dynamics_path': None,
            'dynamics_run': os.path.dirname(os.path.abspath(args.checkpoint)),
            **{k: run.get(k) for k in RUN_SETTINGS}, 'combinations': 1, 'device': str(device),
            'what': describe('moderate', arch=run.get('arch'), epoch=ck.get('epoch'))}
    info['files'] = {k: v for k, v in output_names('moderate', 0, 0).items() if k in ARRAYS}
    try:
        write_score(args, score, paths, info['what'])
        lock.ensure_owned()
        commit(args, {'moderate': (paths, info)}, start)
    finally:
        lock.release()


def checked_combinations(args):
    """The (T, K, decay) combinations to score (the impossible ones skipped with a note, or refused when
    none is left), and how their file names tell them apart."""
    combos, skipped = combinations(args.method, args.trajectory_len, args.window_size, args.decay)
    for T, K, why in skipped:
        if combos:
            print(f"note: skipping T={T}, K={K}: {why}")
    if not combos:
        raise UserError(skipped[0][2] + f" for --method {args.method}")
    for T, K, beta in combos:
        check_args(args.method, T, K if K is not None else 2, beta if beta is not None else 0.9, args.chunk_size)
    several = {'name_decay': len(set(args.decay)) > 1, 'name_window': len(set(args.window_size)) > 1}
    tags = [output_tag(args.method, T, K, beta, **several) for T, K, beta in combos]
    for i, tag in enumerate(tags):
        if tag in tags[:i]:
            a, b = combos[tags.index(tag)], combos[i]
            raise UserError(f"(T, K, decay) = {a} and {b} would write the same files ({tag}): give distinct values")
    return combos, several


def planned_scorings(args, combos, several, dyn, targets, extrapolation):
    """{tag: ({kind: path}, the scoring: what decides its files)} of every combination."""
    planned = {}
    for T, K, beta in combos:
        names = output_names(args.method, T, K, beta, **several)
        scoring = {'method': args.method, 'trajectory_len': T, 'window_size': K, 'decay': beta,
                   'seed': args.manualSeed if args.method == 'random' else None, 'num_samples': dyn.n,
                   'dynamics': dyn.identity(T) if args.method != 'random' else None,
                   'labels': f"sha256 {array_sha256(targets)[:16]}" if targets is not None else None,
                   **({'extrapolation': extrapolation} if extrapolation is not None else {})}
        planned[output_tag(args.method, T, K, beta, **several)] = \
            ({kind: os.path.join(args.mask_path, v) for kind, v in names.items()}, scoring)
    return planned


def main(argv=None):
    # from the command line (argv None) the seconds count the imports too; a call from Python counts itself
    start = START if argv is None else time.time()
    args = parse_args(argv)
    if args.method == 'moderate':
        check_extrapolate_args(args.extrapolate_k, None, args.method)
        return moderate(args, start)
    combos, several = checked_combinations(args)
    if not all(0 <= r < 1 for r in args.sensitivity_rates):
        raise UserError(f"--sensitivity_rates are pruning rates in [0, 1), got {args.sensitivity_rates}")
    check_output_dir(args.mask_path)
    note_idle(idle_scoring_flags(args, combos), "this scoring")
    check_not_selection(args.dynamics_path)
    T_max = max(T for T, _, _ in combos)
    subset = recorded_subset(args.dynamics_path)              # a --train_fraction run's samples, or None
    k = check_extrapolate_args(args.extrapolate_k, subset, args.method)
    dyn = Dynamics(args.dynamics_path, T_max, subset=subset)
    source = FeatureSource(dyn, args.checkpoint, args.data_path, args.dataset) if subset is not None else None
    targets = method_labels(dyn, args.method, load_labels(args, dyn))   # None if not needed
    device = resolve_device(args.device) if args.method != 'random' else 'cpu'
    shape = f'{dyn.n} x {dyn.num_classes} logits' if dyn.fmt == 'logits' else f'{dyn.n} samples, per-epoch features'
    T0, K0, beta0 = combos[0]
    what = describe(args.method, T=T0, K=K0, decay=beta0, seed=args.manualSeed) if len(combos) == 1 else \
        f'{args.method}, {len(combos)} combinations of (T, K, decay) in one pass'
    print(f"{what} from {args.dynamics_path}: {shape}, {dyn.epochs_recorded} epochs recorded, on {device}")

    if dyn.manifest is None and args.method != 'random':
        print(f"note: {args.dynamics_path} has no manifest.json (files of the published train.py or of an older "
              f"version): that epochs 0..{T_max - 1} come from one run cannot be checked")
    planned = planned_scorings(args, combos, several, dyn, targets, source.identity(k) if source else None)
    todo = to_write(args, planned)
    if not todo:
        return
    check_writable(args.mask_path, '--mask_path')

    scores = compute_scores(dyn, args.method, combos, targets=targets, seed=args.manualSeed, chunk_size=args.chunk_size,
                            device=device, mean_p=args.method in MEAN_P_METHODS)   # each (N,) in dataset order
    scores, mean_ps = scores if args.method in MEAN_P_METHODS else (scores, [None] * len(combos))
    extrapolated = {}
    if source is not None:   # the scores (and mean p_y) of S, extended to every sample (score extrapolation)
        scores, extrapolated = source.extend(scores, k, device)
        mean_ps = source.extend(mean_ps, k, device)[0] if args.method in MEAN_P_METHODS else mean_ps

    lock = FolderLock(args.mask_path, '--mask_path').acquire()          # the first write
    todo = decide_under(lock, args, {tag: planned[tag] for tag in todo})
    if not todo:
        return
    try:
        run_folder, run_args = training_run(args.dynamics_path)
        by_tag, written = {}, {}
        for (T, K, beta), score, mean_p in zip(combos, scores, mean_ps):
            tag = output_tag(args.method, T, K, beta, **several)
            by_tag[tag] = score
            if tag not in todo:
                continue
            paths, scoring = todo[tag]
            uncommit(paths)
            if mean_p is not None:   # what --selection beta evaluates, beside the score it belongs to
                paths['mean_p'] = os.path.join(args.mask_path, mean_p_name(tag))
                save_npy(paths['mean_p'], mean_p)
                print(f"wrote {paths['mean_p']}: ({len(mean_p)},) float32 mean p_y over epochs 0..{T - 1}, dataset order "
                      f"(for train_subset.py --selection beta)")
            info = {'method': args.method, 'tag': tag, 'trajectory_len': T, 'window_size': K, 'decay': beta,
                    'seed': scoring['seed'], 'scoring': scoring,
                    'files': {k: os.path.basename(paths[k]) for k in ARRAYS + ('mean_p',) if k in paths},
                    'num_samples': len(score), 'num_classes': dyn.num_classes, 'epochs_recorded': dyn.epochs_recorded,
                    'dynamics_path': os.path.abspath(args.dynamics_path), 'dynamics_run': run_folder,
                    'dynamics_run_id': dyn.run_id, **{k: run_args.get(k) for k in RUN_SETTINGS},
                    'combinations': len(combos), 'device': str(device), **extrapolated,
                    'what': describe(args.method, T=T, K=K, decay=beta, seed=args.manualSeed)}
            write_score(args, score, paths, info['what'], plot=len(combos) == 1)
            written[tag] = (paths, info)
        if len(combos) > 1 and not args.no_plot:
            hist = os.path.join(args.mask_path, f'score_hist_{args.method}_grid.png')
            plot_grid(hist, by_tag, args.method)
            print(f"wrote {hist}: histogram of each combination's score (log counts), one panel each")
        if len(combos) > 1:
            from utils.science.agreement import write_agreement
            md, png = (os.path.join(args.mask_path, f'sensitivity_{args.method}.{ext}') for ext in ('md', 'png'))
            write_agreement(by_tag, args.sensitivity_rates, md, png,
                            title=f"{args.method}: agreement between the {len(combos)} combinations")
            print(f"wrote {md}, {png}: Spearman correlation and kept-set overlap of every pair of combinations")
        lock.ensure_owned()
        seconds = commit(args, written, start)   # last: the seconds of the whole call are known only now
    finally:
        lock.release()
    print(f"done in {seconds:.1f} s (info_<tag>.json records it for the cost ledger)")


if __name__ == '__main__':
    run(main, way_on="make room (or make --mask_path writable), then run the same command: scorings already committed are not redone")
