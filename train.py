"""Step 1 of TDDS: train on the full data set and record every sample's training dynamics.

    python train.py --data_path ./data --dataset cifar100 --arch resnet18 --epochs 200 \
        --learning_rate 0.1 --batch-size 100 --dynamics --save_path ./checkpoint/all-dataset
    python train.py ... --stop_epoch 90        # record only the epochs TDDS reads (T = 90); --resume finishes it
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
from utils.engine import build_model, evaluate_only, fit, run_facts, setup
from utils.errors import UserError, run
from utils.run_folder import (already_done, begin_run, resumes_elsewhere, run_fingerprint, settle, training_set_info,
                              write_training_set_files)


def parse_args(argv=None):
    parser = Parser(description=__doc__.split("\n")[0])
    add_training_args(parser, default_save_path="./checkpoint/all-dataset", default_batch_size=100)
    g = parser.add_argument_group("training dynamics")
    g.add_argument("--dynamics", action="store_true", help="record per-sample dynamics into SAVE_PATH/npy")
    g.add_argument("--dynamics_format", choices=FORMATS, default="logits",
                   help="logits: the published (N, C) per epoch; contrib: N floats per epoch (ImageNet scale)")
    g.add_argument("--dynamics_dtype", choices=sorted(DTYPES), default="float32",
                   help="dtype of <e>_Output.npy (float16 halves the files)")
    g.add_argument("--stop_epoch", type=int, default=None, metavar="E",
                   help="train epochs 0..E-1 of the --epochs schedule, then stop with a resumable checkpoint "
                        "(TDDS reads only epochs 0..T-1: E = T saves the rest of the full-data run)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_training_args(args)
    if args.stop_epoch is not None and not 1 <= args.stop_epoch <= args.epochs:
        raise UserError(f"--stop_epoch {args.stop_epoch} must lie in 1..--epochs ({args.epochs})")
    device, data, resume_from = setup(args)                       # reads only, writes nothing
    fingerprint = run_fingerprint(args, **run_facts(args, data, device))
    ck, done = settle(args, fingerprint, resume_from) if not args.evaluate else (None, None)
    if done is not None:
        return already_done(args, done)
    if ck is not None:
        if args.stop_epoch is not None and ck.get("epoch", 0) > args.stop_epoch:
            raise UserError(f"--stop_epoch {args.stop_epoch}: {resume_from} has trained {ck['epoch']} epochs already; "
                            f"resume with a later --stop_epoch, or without it to finish the run")
    model = build_model(args, data, device)
    if args.evaluate:
        return evaluate_only(args, model, data)
    run_id = (ck or {}).get("run_info", {}).get("run_id")           # the run the recorded epochs belong to
    folder = begin_run(args, resuming=ck is not None, fingerprint=fingerprint, run_id=run_id)   # the first write
    log = folder.log
    if dist.is_main_process():
        write_training_set_files(args.save_path, data)
    log(f"{data.name}: {data.n_train} training / {len(data.test)} test images, {data.num_classes} classes | "
        f"{args.arch} on {device}{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''}"
        f"{' amp ' + args.amp_dtype if args.amp else ''} | {args.epochs} epochs"
        f"{f', stopping after {args.stop_epoch}' if args.stop_epoch else ''}")
    if args.dynamics and ck is not None and ck.get("epoch") and resumes_elsewhere(args):
        log(f"note: epochs 0..{ck['epoch'] - 1} were recorded in {os.path.dirname(os.path.abspath(resume_from))}/npy; "
            f"{args.save_path}/npy gets the epochs from {ck['epoch']} on")
    recorder = None
    if args.dynamics:
        recorder = DynamicsRecorder(os.path.join(args.save_path, "npy"), torch.from_numpy(data.targets),
                                    data.num_classes, device, args.dynamics_format, args.dynamics_dtype,
                                    run_id=folder.run_id)
    run_info = {"dataset": data.name, "arch": args.arch, "seed": args.manualSeed, "method": "full",
                "subset_rate": 0.0, "selection": "full", "class_balanced": False,
                "num_train_samples": data.n_train, "budget": "epochs", "run_id": folder.run_id,
                **training_set_info(data)}
    with folder:                                  # an exception marks the folder failed, the lock goes
        result = fit(args, model, data, torch.arange(data.n_train), device, run_info=run_info,
                     fingerprint=fingerprint, ck=ck, resume_from=resume_from, recorder=recorder,
                     stop_epoch=args.stop_epoch, log=log)
        folder.end(result)
    if args.dynamics:
        log(f"dynamics: {args.save_path}/npy/<epoch>_*.npy ({args.dynamics_format}, epochs 0..{result['completed_epochs'] - 1}); "
            f"next: python importance_evaluation.py --dynamics_path {args.save_path}/npy/")
    dist.cleanup()
    return result


if __name__ == "__main__":
    run(main)
