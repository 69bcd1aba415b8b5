"""Flags shared by train.py and train_subset.py, defined once. Names and defaults are the published
scripts' (--batch-size, --decay = weight decay, --manualSeed, --ngpu, --save_path, ...); where the
published scripts differ from each other (train.py's batch size is 100, train_subset.py's 128) the
default is a parameter of add_training_args, not a second copy of the flag."""
import argparse
import math
import os
import sys

from utils.methods import CORRUPTIONS, DATASETS, NOISE_TYPES, SELECTIONS, names  # noqa: F401 (declared there)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' only where X says something: not for None, '', False or a help text
    that already names its default."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default in (None, "", False) or "default" in help_text or action.default is argparse.SUPPRESS:
            return help_text
        return super()._get_help_string(action)


class Args(argparse.Namespace):
    """The parsed flags; also knows their defaults (a slot, so not in vars(args): neither in a run's
    fingerprint nor in its args.json), so that a note can name the flags the user gave."""
    __slots__ = ("_defaults",)


class Parser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and a bad flag answered in one line (exit 2)."""

    def __init__(self, **kw):
        super().__init__(formatter_class=_HelpFormatter, **kw)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, Args() if namespace is None else namespace)
        if isinstance(ns, Args):
            ns._defaults = {a.dest: a.default for a in self._actions if a.dest != argparse.SUPPRESS}
        return ns


def given(args):
    """{dest: value} of the flags given a value other than their default ({} when the defaults are unknown)."""
    defaults = getattr(args, "_defaults", None) if isinstance(args, Args) else None
    if not defaults:
        return {}
    return {k: v for k, v in vars(args).items() if k in defaults and v != defaults[k]}


# the settings that decide which training set is trained on (label noise, corruption) and their defaults
DATA_SETTINGS = {"label_noise": 0.0, "noise_type": "symmetric", "noise_seed": 0,
                 "corrupt_ratio": 0.0, "corruption": "gaussian_noise", "severity": 3, "corrupt_seed": 0}
# settings that only act when another one is non-zero: with --label_noise 0, the noise type and seed
# change nothing, and likewise for corruption; comparisons of two runs' settings ignore them then (and a
# note names those given). Where the setting they depend on is not among the settings compared at all
# (train_subset.py has no --dynamics, and keeps --teacher's content, not its path), they are kept.
ONLY_WITH = {"label_noise": ("noise_type", "noise_seed"), "corrupt_ratio": ("corruption", "severity", "corrupt_seed"),
             "dynamic": ("dynamic", "dynamic_ratio", "dynamic_delta"),   # train.py without --dynamic: as before it existed
             "amp": ("amp_dtype",), "dynamics": ("dynamics_format", "dynamics_dtype"),
             "teacher": ("kd_alpha", "kd_temperature")}
# settings that act only at some values of another: InfoBatch's delta, and in train_subset.py the score
RANKED = names(SELECTIONS, ranked=True)   # the selections that read a score
# weighting (a random subset has no score to weight by), ccs's strata, Beta's c; the image size and the
# DataLoader workers of an ImageFolder (CIFAR and digits are held in memory at their own size); TF32 on
# a CUDA device ("device" is a fact of the run, not a flag); the dtype of the (N, C) logits files; the
# score files of a random selection
ONLY_FOR = {"dynamic_delta": ("dynamic", ("infobatch",)), "no_score_weighting": ("selection", RANKED),
            "mis_ratio": ("selection", ("ccs",)), "strata": ("selection", ("ccs",)), "beta_c": ("selection", ("beta",)),
            "image_size": ("dataset", ("imagefolder",)), "workers": ("dataset", ("imagefolder",)),
            "tf32": ("device", ("cuda",)), "dynamics_dtype": ("dynamics_format", ("logits",)),
            "mask_path": ("selection", RANKED), "score_path": ("selection", RANKED)}
# settings added after runs were recorded without them: such a record had the value given here
# (--amp was bf16; convolutions, nearly all of a ResNet's arithmetic, ran in TF32 by PyTorch's default)
ADDED_LATER = {"amp_dtype": "bfloat16", "tf32": "on"}
AMP_DTYPES = ("bfloat16", "float16")


def _key(out, prefix, name):
    """The key of setting `name` in `out`: the flag (with `prefix`), or a fact of the run (bare), or None."""
    return next((k for k in (prefix + name, name) if k in out), None)


def without_unused(settings, prefix=""):
    """A copy of {name: value} (names as args attributes, or with `prefix`, e.g. "--"; facts such as
    "device" bare) without the settings that have no effect: the one they depend on is 0 or unset
    (ONLY_WITH), or has a value at which they do nothing (ONLY_FOR). The one rule of what is a run's
    identity: fingerprints are compared through it, and so are a study's variants."""
    out = dict(settings)
    if prefix + "amp" in out:   # a run's settings (not a partial dict): fill what older records lack
        for name, value in ADDED_LATER.items():
            out.setdefault(prefix + name, value)
    for rate, dependents in ONLY_WITH.items():
        key = _key(out, prefix, rate)
        if key is not None and not out[key]:
            for d in dependents:
                out.pop(prefix + d, None)
    for name, (other, values) in ONLY_FOR.items():
        key = _key(out, prefix, other)
        if key is not None and out[key] not in values:
            out.pop(prefix + name, None)
    return out


def idle_flags(args, **facts):
    """["--flag value (why)", ...]: the flags given (not at their default) that act on nothing in this
    run, by the rule of `without_unused`; `facts` (e.g. device="cpu") are what the flags do not say."""
    values = given(args)
    kept = without_unused({**vars(args), **facts})
    out = []
    for dest in sorted(values):
        if dest in kept or dest not in vars(args):
            continue
        rate = next((r for r, deps in ONLY_WITH.items() if dest in deps and r != dest), None)
        if rate is not None:
            why = f"acts only with {flag_name(rate)}"
        elif dest in ONLY_FOR:
            other, allowed = ONLY_FOR[dest]
            why = ("acts only on a CUDA device" if other == "device" else
                   f"acts only with {flag_name(other)} {' or '.join(map(str, allowed))}")
        else:
            continue
        shown = "" if values[dest] is True else f" {values[dest]}"
        out.append(f"{flag_name(dest)}{shown} ({why})")
    return out


def note_idle(idle, where="this run"):
    """One note naming the given flags that act on nothing (process 0 of torchrun only)."""
    if idle and os.environ.get("RANK", "0") in ("0", ""):
        print(f"note: {'; '.join(idle)}: no effect in {where}, and not part of its identity")


def flag_name(dest):
    """The command-line spelling of an args attribute (batch_size -> --batch-size)."""
    return "--batch-size" if dest == "batch_size" else f"--{dest}"


def add_training_args(parser, default_save_path, default_batch_size):
    g = parser.add_argument_group("data")
    g.add_argument("--data_path", type=str, default="./data", help="folder holding the data set")
    g.add_argument("--dataset", type=str, default="cifar100", choices=DATASETS,
                   help="digits = scikit-learn's bundled 8x8 digits (no download); "
                        "imagefolder = DATA_PATH/train/<class>/* and DATA_PATH/val/<class>/*")
    g.add_argument("--download", action="store_true",
                   help="(accepted for the published command lines: missing CIFAR files are always downloaded)")
    g.add_argument("--image_size", type=int, default=224, help="crop size for --dataset imagefolder")
    g.add_argument("--workers", type=_workers, default="auto",
                   help="DataLoader worker processes per training process (imagefolder only); auto = the CPU cores "
                        "this process may use, one left for it, at most 16 (docs/GPU.md); more than those cores "
                        "is lowered to them, with a note")

    g = parser.add_argument_group("optimization (SGD, Nesterov, cosine annealing per iteration)")
    g.add_argument("--arch", type=str, default="resnet18",
                   help="resnet18/34/50/101 (CIFAR-style), resnet20/32/44/56, or tv_<torchvision model>")
    g.add_argument("--epochs", type=int, default=200, help="number of epochs to train")
    g.add_argument("--batch-size", type=int, default=default_batch_size,
                   help="global batch size (over all processes)")
    g.add_argument("--learning_rate", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--decay", type=float, default=0.0005,
                   help="weight decay (L2 penalty) of SGD (importance_evaluation.py's --decay is TDDS's beta)")

    g = parser.add_argument_group("robustness experiments (the same flags in train.py and train_subset.py)")
    g.add_argument("--label_noise", type=float, default=DATA_SETTINGS["label_noise"],
                   help="fraction of training labels flipped before training (test labels never change)")
    g.add_argument("--noise_type", choices=NOISE_TYPES, default=DATA_SETTINGS["noise_type"],
                   help="symmetric: uniformly to another class; asymmetric: CIFAR-10 class map, else c -> c+1")
    g.add_argument("--noise_seed", type=int, default=DATA_SETTINGS["noise_seed"],
                   help="which labels are flipped (independent of --manualSeed)")
    g.add_argument("--corrupt_ratio", type=float, default=DATA_SETTINGS["corrupt_ratio"],
                   help="fraction of training images corrupted once at load time (cifar10/100, digits)")
    g.add_argument("--corruption", choices=tuple(CORRUPTIONS), default=DATA_SETTINGS["corruption"],
                   help="kind of image corruption")
    g.add_argument("--severity", type=int, default=DATA_SETTINGS["severity"],
                   help="corruption severity 1..5 (docs/METHODS.md)")
    g.add_argument("--corrupt_seed", type=int, default=DATA_SETTINGS["corrupt_seed"],
                   help="which images are corrupted, and how (independent of --manualSeed)")

    g = parser.add_argument_group("checkpoints and logs")
    g.add_argument("--save_path", type=str, default=default_save_path,
                   help="run folder: checkpoints, log, metrics.json, curve.png")
    g.add_argument("--resume", nargs="?", const="auto", default="", metavar="PATH",
                   help="continue from PATH, or (flag alone) from SAVE_PATH/checkpoint.pth.tar if it exists; "
                        "every setting must be the checkpoint's")
    g.add_argument("--overwrite", action="store_true", help="start again in a save_path that holds a run of other settings "
                   "(a finished run of the same settings is never redone)")
    g.add_argument("--start_epoch", type=int, default=0, help="(published flag; --resume sets the epoch)")
    g.add_argument("--evaluate", action="store_true", help="only evaluate the (resumed) model on the test set")
    g.add_argument("--print_freq", type=int, default=200, help="log a progress line every N iterations")
    g.add_argument("--eval_every", type=int, default=1, metavar="N",
                   help="evaluate on the test set after every N-th epoch and after the last one (1 = every epoch, "
                        "as published); best_acc is over the evaluated epochs; training is the same for any N")
    g.add_argument("--save_every_steps", type=int, default=0, metavar="N",
                   help="also write checkpoint.pth.tar every N optimizer steps, mid-epoch, for machines that die "
                        "without a signal (0 = only after each epoch and on SIGTERM/SIGUSR1)")

    g = parser.add_argument_group("acceleration and randomness")
    g.add_argument("--ngpu", type=int, default=1, help="0 = CPU; >0 = CUDA when present (torchrun for several)")
    g.add_argument("--amp", action="store_true",
                   help="autocast in --amp_dtype + channels_last; recorded logits are rounded to it")
    g.add_argument("--amp_dtype", choices=AMP_DTYPES, default="bfloat16",
                   help="with --amp: bfloat16 (Ampere and newer GPUs, CPUs with AMX) or float16 (any CUDA GPU, "
                        "e.g. V100/T4; with a gradient scaler, whose state the checkpoint keeps)")
    g.add_argument("--tf32", choices=("on", "off"), default="on",
                   help="CUDA (Ampere and newer): TF32 for float32 convolutions and matrix products "
                        "(recorded in the run's settings; no effect on CPU)")
    g.add_argument("--deterministic", action="store_true",
                   help="CUDA: cudnn.benchmark off, deterministic algorithms where PyTorch has them "
                        "(bit-exact reruns and resumes on the same GPU model and software; slower)")
    g.add_argument("--manualSeed", type=int, default=42, help="seed of every random stream")
    return parser


def _workers(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a number or auto") from None


def usable_cores():
    """The CPU cores this process may use (torchrun's processes on a node share them), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # macOS
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def default_workers():
    """--workers auto: the CPU cores this process may use, one left for the process itself, at least 1
    and at most 16."""
    return max(1, min(16, usable_cores() - 1))


def _expected_device(args):
    """The device type dist.setup will pick: cuda where --ngpu > 0 and CUDA is present (torch is imported
    here, by the training scripts that have imported it anyway)."""
    if args.ngpu <= 0:
        return "cpu"
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_finite(args):
    """Every float setting must be a number: `--learning_rate nan` would train to chance and exit 0."""
    from utils.errors import UserError
    for dest, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag_name(dest)} must be a finite number, got {value}")


def check_training_args(args):
    from utils.errors import UserError
    check_finite(args)
    note_idle(idle_flags(args, device=_expected_device(args)))
    if args.workers == "auto":
        args.workers = default_workers()
    elif args.dataset == "imagefolder" and args.workers > usable_cores():
        if os.environ.get("RANK", "0") in ("0", ""):
            print(f"note: --workers {args.workers} is more than the {usable_cores()} CPU cores this process may use: "
                  f"using {usable_cores()} (each worker is a process decoding images; more only compete for the cores)")
        args.workers = usable_cores()
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--print_freq", args.print_freq, 1), ("--eval_every", args.eval_every, 1),
                             ("--workers", args.workers, 0),
                             ("--save_every_steps", args.save_every_steps, 0),
                             ("--image_size", args.image_size, 8), ("--ngpu", args.ngpu, 0),
                             ("--manualSeed", args.manualSeed, 0), ("--noise_seed", args.noise_seed, 0),
                             ("--corrupt_seed", args.corrupt_seed, 0)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun
    if args.batch_size < world:
        raise UserError(f"--batch-size {args.batch_size} is the global batch: it must be at least the "
                        f"number of processes ({world})")
    if args.learning_rate <= 0:
        raise UserError(f"--learning_rate must be positive, got {args.learning_rate}")
    if not 0 <= args.momentum < 1:
        raise UserError(f"--momentum must lie in [0, 1), got {args.momentum}")
    if args.decay < 0:
        raise UserError(f"--decay (weight decay) must be >= 0, got {args.decay}")
    if not 0 <= args.label_noise < 1:
        raise UserError(f"--label_noise is a fraction of the training labels: it must lie in [0, 1), got {args.label_noise}")
    if not 0 <= args.corrupt_ratio <= 1:
        raise UserError(f"--corrupt_ratio is a fraction of the training images: it must lie in [0, 1], got {args.corrupt_ratio}")
    if not 1 <= args.severity <= 5:
        raise UserError(f"--severity must be 1..5, got {args.severity}")
    if args.corrupt_ratio > 0 and args.dataset == "imagefolder":
        raise UserError("--corrupt_ratio works on data sets held in memory (cifar10, cifar100, digits), "
                        "not on --dataset imagefolder")
