"""Architectures by name: `create_model(arch, num_classes)`.

CIFAR-style names come from models/resnet_cifar.py; any torchvision classification model is
available as `tv_<name>` (random init, for ImageNet-style data). torchvision is imported only
when a tv_ name is asked for, so `import models` stays cheap.
"""
import difflib
import operator

from utils.errors import UserError

from . import resnet_cifar

_CIFAR = {
    "resnet18": resnet_cifar.resnet18,    # the TDDS paper's CIFAR model
    "resnet34": resnet_cifar.resnet34,
    "resnet50": resnet_cifar.resnet50,
    "resnet101": resnet_cifar.resnet101,
    "resnet20": resnet_cifar.resnet20,    # 0.27M parameters: CPU-sized
    "resnet32": resnet_cifar.resnet32,
    "resnet44": resnet_cifar.resnet44,
    "resnet56": resnet_cifar.resnet56,
}
ARCH_NAMES = list(_CIFAR)
TV_PREFIX = "tv_"


def _choices():
    return ", ".join(ARCH_NAMES) + f", or {TV_PREFIX}<any torchvision classification model> (e.g. tv_resnet50)"


def create_model(arch, num_classes):
    """A freshly initialised nn.Module mapping (B, 3, H, W) images to (B, num_classes) logits."""
    try:
        n = operator.index(num_classes)  # accepts numpy integers, rejects 10.0 and "10"
    except TypeError:
        n = 0
    if n < 1:
        raise UserError(f"number of classes must be a positive integer, got {num_classes!r}")
    num_classes = n
    if arch in _CIFAR:
        return _CIFAR[arch](num_classes)
    if isinstance(arch, str) and arch.startswith(TV_PREFIX):
        import torchvision  # lazy: ~1 s of import time nobody training a CIFAR model should pay

        name = arch[len(TV_PREFIX):]
        known = torchvision.models.list_models(module=torchvision.models)  # classification only
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" (did you mean {', '.join(TV_PREFIX + c for c in close)}?)" if close else ""
            raise UserError(f"--arch {arch!r}: torchvision {torchvision.__version__} has no "
                            f"classification model {name!r}{hint}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise UserError(f"--arch {arch!r} is unknown; choose one of {_choices()}")
