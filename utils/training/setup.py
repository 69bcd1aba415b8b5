"""The start of a training run, before anything is written: device and process group, numerics
(precision, autocast, memory format), the data on the device, the model, and the facts of the run
that its flags do not show (for the run fingerprint)."""
import os

import torch

from utils import dist
from utils.errors import UserError
from utils.protocol.files import check_writable
from utils.protocol.fingerprint import array_sha256
from utils.training.rng import GLOBAL, seed_everything, stream_seed


def setup(args):
    """The first steps of both training scripts, none of which writes anything: device (and process
    group), the data on the device. Returns (device, data). What the run folder holds is read later,
    under its lock (utils.protocol.run.open_run)."""
    from utils.training.data import load_data
    if args.deterministic:   # before CUDA starts: cuBLAS reads this when its handle is created
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn where no deterministic kernel exists
        torch.backends.cudnn.deterministic = True
    check_writable(args.save_path, "--save_path")
    device = dist.setup(args.ngpu)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not args.deterministic
    set_precision(args, device)
    data = load_data(args, device, channels_last(args, device))
    return device, data


def channels_last(args, device):
    return args.amp or device.type == "cuda"


def set_precision(args, device):
    """--tf32 for CUDA's float32 convolutions and matrix products; --amp_dtype where the device has it."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    if args.amp and args.amp_dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp: {torch.cuda.get_device_name(device)} has no bfloat16; use --amp --amp_dtype float16 "
                        f"(with a gradient scaler), or leave out --amp")


def cuda_note(args, device):
    """The log's line about the GPU's numerics, or None on the CPU."""
    if device.type != "cuda":
        return None
    return (f"{torch.cuda.get_device_name(device)}: TF32 {args.tf32} (--tf32), "
            f"{'amp ' + args.amp_dtype if args.amp else 'float32'}, cudnn.benchmark "
            f"{'off, deterministic algorithms (--deterministic)' if args.deterministic else 'on (--deterministic turns it off)'}")


def amp_dtype(args):
    """The autocast dtype of the run, or None without --amp (the `amp` argument of the training functions)."""
    return getattr(torch, getattr(args, "amp_dtype", "bfloat16")) if args.amp else None


def autocast(device, amp):
    """torch.autocast for `amp`: None/False (off), True (bfloat16) or a dtype."""
    return torch.autocast(device.type, dtype=amp if isinstance(amp, torch.dtype) else torch.bfloat16,
                          enabled=bool(amp))


def run_facts(args, data, device):
    """Facts of a run that its flags do not show, for the run fingerprint (utils/protocol/run.py). The
    DataLoader's worker count is none: ImageFolder augmentation is seeded per sample (utils/training/data.py)."""
    return {"device": device.type, "processes": dist.world_size(), "training samples": data.n_train,
            "training labels": array_sha256(data.targets)}


def build_model(args, data, device):
    """The model from torch.manual_seed(--manualSeed), exactly as the published scripts initialise
    it; then each rank's global torch stream (ImageFolder transforms with --workers 0 draw from it)."""
    from models import create_model
    seed_everything(args.manualSeed)                     # the same initial model on every rank
    model = create_model(args.arch, data.num_classes).to(device)
    if channels_last(args, device):
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(stream_seed(args.manualSeed, GLOBAL, dist.rank()))
    return model


def make_scaler(args, device):
    """The GradScaler of --amp --amp_dtype float16, or None (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type) if amp_dtype(args) == torch.float16 else None
