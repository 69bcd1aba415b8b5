"""Flags shared by train.py and train_subset.py, defined once. Names and defaults are the published
scripts' (--batch-size, --decay = weight decay, --manualSeed, --ngpu, --save_path, ...)."""
import argparse
import os
import sys

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder")  # utils.data reads them; kept here so
# that parsing flags does not import torch


class Parser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and a bad flag answered in one line (exit 2)."""

    def __init__(self, **kw):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_training_args(parser, default_save_path):
    g = parser.add_argument_group("data")
    g.add_argument("--data_path", type=str, default="./data", help="folder holding the data set")
    g.add_argument("--dataset", type=str, default="cifar100", choices=DATASETS,
                   help="digits = scikit-learn's bundled 8x8 digits (no download); "
                        "imagefolder = DATA_PATH/train/<class>/* and DATA_PATH/val/<class>/*")
    g.add_argument("--download", action="store_true", help="download CIFAR through torchvision if missing")
    g.add_argument("--image_size", type=int, default=224, help="crop size for --dataset imagefolder")
    g.add_argument("--workers", type=int, default=2, help="data loading workers (imagefolder only)")

    g = parser.add_argument_group("optimization (SGD, Nesterov, cosine annealing per iteration)")
    g.add_argument("--arch", type=str, default="resnet18",
                   help="resnet18/34/50/101 (CIFAR-style), resnet20/32/44/56, or tv_<torchvision model>")
    g.add_argument("--epochs", type=int, default=200, help="number of epochs to train")
    g.add_argument("--batch-size", type=int, default=128, help="global batch size (over all processes)")
    g.add_argument("--learning_rate", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--decay", type=float, default=0.0005, help="weight decay (L2 penalty)")

    g = parser.add_argument_group("checkpoints and logs")
    g.add_argument("--save_path", type=str, default=default_save_path,
                   help="run folder: checkpoints, log, metrics.json, curve.png")
    g.add_argument("--resume", nargs="?", const="auto", default="", metavar="PATH",
                   help="continue from PATH, or (flag alone) from SAVE_PATH/checkpoint.pth.tar if it exists")
    g.add_argument("--overwrite", action="store_true", help="start again in a save_path that holds a run")
    g.add_argument("--start_epoch", type=int, default=0, help="(published flag; --resume sets the epoch)")
    g.add_argument("--evaluate", action="store_true", help="only evaluate the (resumed) model on the test set")
    g.add_argument("--print_freq", type=int, default=200, help="log a progress line every N iterations")

    g = parser.add_argument_group("acceleration and randomness")
    g.add_argument("--ngpu", type=int, default=1, help="0 = CPU; >0 = CUDA when present (torchrun for several)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CPU with AMX, or CUDA) + channels_last")
    g.add_argument("--manualSeed", type=int, default=42, help="seed of every random stream")
    return parser


def check_training_args(args):
    from .errors import UserError
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--print_freq", args.print_freq, 1), ("--workers", args.workers, 0),
                             ("--image_size", args.image_size, 8), ("--ngpu", args.ngpu, 0)):
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
