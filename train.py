"""Step 1 of TDDS: train on the full data set and record every sample's training dynamics.

    python train.py --data_path ./data --dataset cifar100 --arch resnet18 --epochs 200 \
        --learning_rate 0.1 --batch-size 100 --dynamics --save_path ./checkpoint/all-dataset
    python train.py --dataset digits --arch resnet20 --epochs 15 --ngpu 0 --dynamics --save_path ./checkpoint/digits
    torchrun --nproc_per_node=4 train.py --dataset imagefolder --data_path /data/imagenet --arch tv_resnet50 \
        --epochs 90 --batch-size 256 --dynamics --dynamics_format contrib --save_path ./checkpoint/in1k

--dynamics writes SAVE_PATH/npy/<e>_Output.npy (N, C) logits, <e>_Loss.npy (N,), <e>_Index.npy (N,)
per epoch (the published layout, rows in dataset order) and targets.npy; see utils/dynamics.py.
"""
import os

import torch

from utils import dist
from utils.args import Parser, add_training_args, check_training_args
from utils.dynamics import DTYPES, FORMATS, DynamicsRecorder
from utils.engine import evaluate_only, fit, open_log, start_run
from utils.errors import run


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n")[0])
    add_training_args(parser, default_save_path="./checkpoint/all-dataset")
    g = parser.add_argument_group("training dynamics")
    g.add_argument("--dynamics", action="store_true", help="record per-sample dynamics into SAVE_PATH/npy")
    g.add_argument("--dynamics_format", choices=FORMATS, default="logits",
                   help="logits: the published (N, C) per epoch; contrib: N floats per epoch (ImageNet scale)")
    g.add_argument("--dynamics_dtype", choices=sorted(DTYPES), default="float32",
                   help="dtype of <e>_Output.npy (float16 halves the files)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_training_args(args)
    device, data, model, resume_from = start_run(args)
    if args.evaluate:
        return evaluate_only(args, model, data)
    log = open_log(args, resume_from)
    log(f"{data.name}: {data.n_train} training / {len(data.test)} test images, {data.num_classes} classes | "
        f"{args.arch} on {device}{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''}"
        f"{' bf16' if args.amp else ''} | {args.epochs} epochs")
    recorder = None
    if args.dynamics:
        recorder = DynamicsRecorder(os.path.join(args.save_path, "npy"), torch.from_numpy(data.targets),
                                    data.num_classes, device, args.dynamics_format, args.dynamics_dtype)
    run_info = {"dataset": data.name, "arch": args.arch, "seed": args.manualSeed, "method": "full",
                "subset_rate": 0.0, "selection": "full", "class_balanced": False,
                "num_train_samples": data.n_train}
    result = fit(args, model, data, torch.arange(data.n_train), device, run_info=run_info,
                 resume_from=resume_from, recorder=recorder, log=log)
    if args.dynamics:
        log(f"dynamics: {args.save_path}/npy/<epoch>_*.npy ({args.dynamics_format}, {args.epochs} epochs); "
            f"next: python importance_evaluation.py --dynamics_path {args.save_path}/npy/")
    dist.cleanup()
    return result


if __name__ == "__main__":
    run(main)
