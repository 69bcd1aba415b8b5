"""models: shapes, parameter counts against a hand count, init, channels_last, bf16, errors."""
import math
import subprocess
import sys

import pytest
import torch

from models import ARCH_NAMES, create_model
from utils.errors import UserError

# (block kind, blocks per stage, stage widths, stem width, shortcut used where shape changes)
SPECS = {
    "resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], 64, "conv"),
    "resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], 64, "conv"),
    "resnet50": ("bottleneck", [3, 4, 6, 3], [64, 128, 256, 512], 64, "conv"),
    "resnet101": ("bottleneck", [3, 4, 23, 3], [64, 128, 256, 512], 64, "conv"),
    "resnet20": ("basic", [3, 3, 3], [16, 32, 64], 16, "pad"),
    "resnet32": ("basic", [5, 5, 5], [16, 32, 64], 16, "pad"),
    "resnet44": ("basic", [7, 7, 7], [16, 32, 64], 16, "pad"),
    "resnet56": ("basic", [9, 9, 9], [16, 32, 64], 16, "pad"),
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def reference_param_count(kind, blocks, widths, stem, shortcut, num_classes):
    """Count weights by hand from the papers' layer lists: convs have no bias, BN has 2 per channel."""
    conv = lambda c_in, c_out, k: c_in * c_out * k * k
    bn = lambda c: 2 * c
    total = conv(3, stem, 3) + bn(stem)
    c_in = stem
    for n, w in zip(blocks, widths):
        for _ in range(n):
            if kind == "basic":
                c_out = w
                total += conv(c_in, w, 3) + bn(w) + conv(w, w, 3) + bn(w)
            else:
                c_out = 4 * w
                total += conv(c_in, w, 1) + bn(w) + conv(w, w, 3) + bn(w) + conv(w, c_out, 1) + bn(c_out)
            if c_in != c_out and shortcut == "conv":  # the pad shortcut has no parameters
                total += conv(c_in, c_out, 1) + bn(c_out)
            c_in = c_out
    return total + c_in * num_classes + num_classes


def test_arch_names_cover_the_cifar_models():
    assert sorted(ARCH_NAMES) == sorted(SPECS)


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_param_count_matches_hand_count(arch):
    assert n_params(create_model(arch, 10)) == reference_param_count(*SPECS[arch], 10)


def test_headline_param_counts():
    assert 0.26e6 <= n_params(create_model("resnet20", 10)) <= 0.28e6          # He et al.: 0.27M
    assert abs(n_params(create_model("resnet18", 100)) - 11.22e6) < 0.01e6     # TDDS CIFAR-100


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_output_shape_on_32_and_8_pixel_inputs(arch):
    torch.manual_seed(0)
    model = create_model(arch, 7).train()  # train mode: BN must cope with a 1x1 map on 8x8 input
    with torch.no_grad():
        for size in (32, 8):
            out = model(torch.randn(2, 3, size, size))
            assert out.shape == (2, 7)
            assert torch.isfinite(out).all()


def test_stem_keeps_resolution_and_stages_halve_it():
    """CIFAR stem: 3x3 stride 1, no max-pool, so stage 1 sees the full 32x32 image."""
    for arch, widths in (("resnet18", [64, 128, 256, 512]), ("resnet20", [16, 32, 64])):
        model = create_model(arch, 10).eval()
        shapes = []
        for i in range(len(widths)):
            getattr(model, f"layer{i + 1}").register_forward_hook(lambda m, x, y: shapes.append(tuple(y.shape)))
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        assert shapes == [(1, w, 32 >> i, 32 >> i) for i, w in enumerate(widths)]


def test_init_is_kaiming_fan_out_and_unit_batchnorm():
    torch.manual_seed(0)
    model = create_model("resnet18", 10)
    w = model.layer4[1].conv2.weight  # (512, 512, 3, 3): 2.4M draws, std known to ~0.1%
    expected = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))
    assert abs(w.std().item() / expected - 1) < 0.02
    assert abs(w.mean().item()) < 0.01 * expected
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_fresh_random_init_each_call():
    a, b = create_model("resnet20", 10), create_model("resnet20", 10)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])
def test_channels_last_gives_the_same_logits(arch):
    torch.manual_seed(0)
    model = create_model(arch, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = create_model("resnet20", 10).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 10)
    # bf16 has an 8-bit mantissa: logits agree with fp32 to a few percent of their spread
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_torchvision_model_by_prefix():
    torch.manual_seed(0)
    model = create_model("tv_resnet18", 7).eval()
    assert model.fc.out_features == 7
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_arch_error_lists_choices_in_one_line():
    with pytest.raises(UserError) as e:
        create_model("resnet99", 10)
    msg = str(e.value)
    assert "\n" not in msg and "resnet99" in msg and "tv_" in msg
    assert all(name in msg for name in ARCH_NAMES)
    assert len(msg) < 300  # summarised, not every torchvision name


def test_unknown_torchvision_name_suggests_close_matches():
    with pytest.raises(UserError, match="tv_resnet50"):
        create_model("tv_resnet05", 10)


@pytest.mark.parametrize("bad", [0, -3, 10.0, "10"])
def test_bad_num_classes_is_a_user_error(bad):
    with pytest.raises(UserError, match="positive integer"):
        create_model("resnet20", bad)


def test_import_does_not_load_torchvision():
    code = "import sys, models; assert 'torchvision' not in sys.modules, 'torchvision imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)
