"""Step 1 of TDDS: train on the full data set and record every sample's training dynamics.

    python train.py --data_path ./data --dataset cifar100 --arch resnet18 --epochs 200 \
        --learning_rate 0.1 --batch-size 100 --dynamics --save_path ./checkpoint/all-dataset
    python train.py ... --stop_epoch 90        # record only the epochs TDDS reads (T = 90); --resume finishes it
    python train.py --dataset digits --arch resnet20 --epochs 15 --ngpu 0 --dynamics --save_path ./checkpoint/digits
    python train.py ... --dynamic infobatch --dynamic_ratio 0.5   # prune while training (InfoBatch or rs2)
    torchrun --nproc_per_node=4 train.py --dataset imagefolder --data_path /data/imagenet --arch tv_resnet50 \
        --epochs 90 --batch-size 256 --dynamics --dynamics_format contrib --save_path ./checkpoint/in1k

--dynamics writes SAVE_PATH/npy/<e>_Output.npy (N, C) logits, <e>_Loss.npy (N,), <e>_Index.npy (N,)
per epoch (the published layout, rows in dataset order) and targets.npy; see utils/training/recorder.py.
--dynamic writes SAVE_PATH/selection/<e>_Index.npy, <e>_Weight.npy (and <e>_Score.npy for InfoBatch):
what each epoch trained on; see utils/training/dynamic_pruning.py.
"""
import os

import torch

from utils import dist
from utils.args import Parser, add_training_args, check_training_args
from utils.errors import UserError, run
from utils.protocol.fingerprint import run_fingerprint
from utils.protocol.outputs import training_set_info, write_training_set_files
from utils.protocol.run import already_done, open_run
from utils.training.dynamic_pruning import METHODS as DYNAMIC_METHODS
from utils.training.dynamic_pruning import DynamicSampler
from utils.training.fraction import TrainFraction, add_fraction_args, check_fraction_args
from utils.training.loop import evaluate_only, fit
from utils.training.recorder import DTYPES, FORMATS, DynamicsRecorder
from utils.training.setup import build_model, run_facts, setup


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
    add_fraction_args(g)
    g = parser.add_argument_group("dynamic pruning (prune while training; docs/METHODS.md)")
    g.add_argument("--dynamic", choices=DYNAMIC_METHODS, default=None,
                   help="infobatch: prune well-learned samples each epoch and up-weight the rest of them; "
                        "rs2: a fresh random subset each epoch, every sample once before any twice")
    g.add_argument("--dynamic_ratio", type=float, default=0.5, metavar="R",
                   help="fraction pruned: InfoBatch's prune ratio of the well-learned samples; RS2 trains "
                        "N - int(R N) samples per epoch")
    g.add_argument("--dynamic_delta", type=float, default=0.875, metavar="D",
                   help="InfoBatch prunes epoch e (0-based) of E while e + 1 <= D E; the rest train on all samples")
    return parser.parse_args(argv)


def check_dynamic_args(args):
    if args.dynamic is None:
        return
    if not 0 <= args.dynamic_ratio < 1:
        raise UserError(f"--dynamic_ratio is the fraction pruned: it must lie in [0, 1), got {args.dynamic_ratio}")
    if not 0 < args.dynamic_delta <= 1:
        raise UserError(f"--dynamic_delta is the fraction of the epochs that prune: it must lie in (0, 1], "
                        f"got {args.dynamic_delta}")
    if args.evaluate:
        raise UserError("--dynamic chooses what a training run trains on: it has no meaning with --evaluate")
    if args.dynamics and args.dynamics_format == "contrib":
        raise UserError("--dynamics_format contrib needs every sample in every epoch, which --dynamic does not "
                        "train: record --dynamics_format logits (the samples each epoch trained)")


def main(argv=None):
    args = parse_args(argv)
    check_training_args(args)
    check_dynamic_args(args)
    check_fraction_args(args)
    if args.stop_epoch is not None and not 1 <= args.stop_epoch <= args.epochs:
        raise UserError(f"--stop_epoch {args.stop_epoch} must lie in 1..--epochs ({args.epochs})")
    device, data = setup(args)                                    # reads only, writes nothing
    fingerprint = run_fingerprint(args, **run_facts(args, data, device))
    fraction = TrainFraction(args, data.n_train)                  # every sample, or --train_fraction's
    model = build_model(args, data, device)                       # (an unknown --arch stops here)
    if args.evaluate:
        return evaluate_only(args, model, data)
    folder = open_run(args, fingerprint, stop_epoch=args.stop_epoch)   # lock, read, decide (or refuse)
    if folder.done is not None:
        return already_done(args, folder.done)
    ck, resume_from = folder.ck, folder.resume_from
    folder.begin(run_id=(ck or {}).get("run_info", {}).get("run_id"))   # the first write; a resumed run keeps its id
    log = folder.log
    if dist.is_main_process():
        write_training_set_files(args.save_path, data)
        fraction.write(args.save_path, log)
    log(f"{data.name}: {data.n_train} training / {len(data.test)} test images, {data.num_classes} classes | "
        f"{args.arch} on {device}{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''}"
        f"{' amp ' + args.amp_dtype if args.amp else ''} | {args.epochs} epochs"
        f"{f' | {args.dynamic} pruning {args.dynamic_ratio}' if args.dynamic else ''}"
        f"{f', stopping after {args.stop_epoch}' if args.stop_epoch else ''}")
    if args.dynamics and ck is not None and ck.get("epoch") and folder.decision.get("elsewhere"):
        log(f"note: epochs 0..{ck['epoch'] - 1} were recorded in {os.path.dirname(os.path.abspath(resume_from))}/npy; "
            f"{args.save_path}/npy gets the epochs from {ck['epoch']} on")
    recorder = None
    if args.dynamics:
        recorder = DynamicsRecorder(os.path.join(args.save_path, "npy"), torch.from_numpy(data.targets),
                                    data.num_classes, device, args.dynamics_format, args.dynamics_dtype,
                                    run_id=folder.run_id, every_sample=args.dynamic is None and fraction.whole)
    run_info = {"dataset": data.name, "arch": args.arch, "seed": args.manualSeed, "method": "full",
                "subset_rate": 0.0, "selection": "full", "class_balanced": False,
                "num_train_samples": data.n_train, "budget": "epochs", "run_id": folder.run_id,
                **training_set_info(data), **fraction.info}
    sampler = None
    if args.dynamic:
        sampler = DynamicSampler(args.dynamic, data.n_train, args.epochs, args.dynamic_ratio, args.dynamic_delta,
                                 args.manualSeed, device, folder=os.path.join(args.save_path, "selection"),
                                 fresh=ck is None or folder.decision.get("elsewhere", False), log=log)
        run_info.update({"method": args.dynamic, "selection": "dynamic", "subset_rate": args.dynamic_ratio,
                         "dynamic_ratio": args.dynamic_ratio, "full_train_samples": data.n_train,
                         **({"dynamic_delta": args.dynamic_delta} if args.dynamic == "infobatch" else
                            {"num_train_samples": sampler.epoch_size})})
    with folder:                                  # an exception marks the folder failed, the lock goes
        result = fit(args, model, data, fraction.indices, device, run_info=run_info,
                     fingerprint=fingerprint, ck=ck, resume_from=resume_from, recorder=recorder,
                     stop_epoch=args.stop_epoch, log=log, sampler=sampler)
        folder.end(result)
    if args.dynamics:   # scores need every sample in every epoch: no next step that would be refused
        every = args.dynamic is None or args.dynamic_ratio == 0
        log(f"dynamics: {args.save_path}/npy/<epoch>_*.npy ({args.dynamics_format}, epochs 0..{result['completed_epochs'] - 1}); "
            + (f"next: python importance_evaluation.py --dynamics_path {args.save_path}/npy/" if every else
               f"not for importance_evaluation.py: --dynamic {args.dynamic} trains part of the samples in each epoch, "
               f"and scores need every sample in every epoch (record them in a run without --dynamic)"))
    dist.cleanup()
    return result


if __name__ == "__main__":
    run(main)
