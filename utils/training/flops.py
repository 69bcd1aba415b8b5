"""Work across architectures: what one sample pass of a model costs, measured.

Work is counted in sample passes of the TARGET model (the one a subset run trains): one training
pass (forward + backward) of one sample of the target = 1. A training pass of another architecture
A counts work_factor(A, target) = its forward+backward FLOPs per sample / the target's; a
forward-only pass of A (feature extraction, a teacher) counts forward_share(A, target) = A's forward
FLOPs per sample / the target's forward+backward FLOPs (docs/STUDIES.md, "Work across architectures").

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on a batch of BATCH samples (the count
divided by it) of a freshly built model on the meta device (shapes only: nothing is computed, no
memory is taken, the random streams are untouched), once per (arch, num_classes, image size,
channels) in a process. The counter counts the matrix products and convolutions (and their
gradients), which are nearly all of a ResNet's arithmetic; normalisation, activations and pooling
are not counted. The training pass is counted in train mode with the input not requiring a gradient,
as in training: the first layer computes no input gradient.
"""
import functools

BATCH = 2   # samples per measured batch (batch norm in train mode needs more than one)


def flops_per_sample(arch, num_classes, image_size=32, channels=3):
    """{"forward": F, "backward": B, "train": F + B}: FLOPs of one sample's pass through `arch`
    (a models.create_model name) with `num_classes` outputs on (channels, image_size, image_size)
    inputs. Counted once per process (a fresh dict each call)."""
    return dict(_count(arch, int(num_classes), int(image_size), int(channels)))


@functools.lru_cache(maxsize=None)
def _count(arch, num_classes, image_size, channels):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import create_model
    with torch.random.fork_rng(devices=[]):
        model, x = _build(create_model, arch, num_classes, (BATCH, channels, image_size, image_size))
        model.train()
        with FlopCounterMode(display=False) as fwd:
            out = model(x)
        with FlopCounterMode(display=False) as bwd:
            out.float().sum().backward()
    f, b = fwd.get_total_flops() / BATCH, bwd.get_total_flops() / BATCH
    return {"forward": f, "backward": b, "train": f + b}


def _build(create_model, arch, num_classes, shape):
    """(model, input) on the meta device; on the CPU for a model that cannot be built there."""
    import torch
    try:
        with torch.device("meta"):
            return create_model(arch, num_classes), torch.empty(shape)
    except (NotImplementedError, RuntimeError):
        return create_model(arch, num_classes), torch.zeros(shape)


def work_factor(arch, target_arch, num_classes, image_size=32, channels=3):
    """Work of one training pass (forward + backward) of one sample through `arch`, in training
    passes of `target_arch`: train FLOPs(arch) / train FLOPs(target). 1 for the target itself."""
    return (flops_per_sample(arch, num_classes, image_size, channels)["train"]
            / flops_per_sample(target_arch, num_classes, image_size, channels)["train"])


def forward_share(arch, target_arch, num_classes, image_size=32, channels=3):
    """Work of one forward-only pass of one sample through `arch` (features, a teacher), in training
    passes of `target_arch`: forward FLOPs(arch) / train FLOPs(target); about 1/3 for the target."""
    return (flops_per_sample(arch, num_classes, image_size, channels)["forward"]
            / flops_per_sample(target_arch, num_classes, image_size, channels)["train"])


def factors(arch, target_arch, num_classes, image_size=32, channels=3):
    """What a work ledger records for passes of `arch` charged to `target_arch`: both factors and the
    measured FLOPs per sample they come from."""
    return {"arch": arch, "target_arch": target_arch, "num_classes": int(num_classes), "image_size": int(image_size),
            "channels": int(channels),
            "work_factor": work_factor(arch, target_arch, num_classes, image_size, channels),
            "forward_share": forward_share(arch, target_arch, num_classes, image_size, channels),
            "flops_per_sample": {a: flops_per_sample(a, num_classes, image_size, channels)
                                 for a in dict.fromkeys((arch, target_arch))},
            "counted_by": "torch.utils.flop_counter.FlopCounterMode"}


def input_size(dataset, image_size=224):
    """The side of the images a model sees for --dataset (cifar10/100 and digits: 32; imagefolder:
    --image_size)."""
    return image_size if dataset == "imagefolder" else 32
