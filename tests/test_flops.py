"""Work across architectures (utils/training/flops.py) against the closed-form FLOPs of the CIFAR ResNets
of He et al.: a k x k convolution from Cin to Cout channels with an H x W output costs 2 Cin Cout k k H W
FLOPs per sample (a multiply and an add per weight and output position), a Linear 2 in out."""
import pytest
import torch

from utils.training import flops
from utils.training.flops import factors, flops_per_sample, forward_share, input_size, work_factor

C = 10   # classes


def conv(c_in, c_out, hw, k=3):
    return 2 * c_in * c_out * k * k * hw * hw


def resnet_he_forward(n, num_classes=C):
    """ResNet-(6n+2) on 32x32: conv 3->16; stage 1: 2n convs 16->16 at 32x32; stage 2: one 16->32 and
    2n-1 32->32 at 16x16; stage 3: one 32->64 and 2n-1 64->64 at 8x8 (option-A shortcuts: no
    convolution); the Linear 64->C."""
    return (conv(3, 16, 32) + 2 * n * conv(16, 16, 32) + conv(16, 32, 16) + (2 * n - 1) * conv(32, 32, 16)
            + conv(32, 64, 8) + (2 * n - 1) * conv(64, 64, 8) + 2 * 64 * num_classes)


def test_one_convolution_counts_as_its_formula():
    """The counter itself on one layer: a 3x3 convolution 16 -> 32, stride 2, 32x32 -> 16x16."""
    from torch.utils.flop_counter import FlopCounterMode
    layer = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
    with FlopCounterMode(display=False) as fc:
        layer(torch.zeros(2, 16, 32, 32))
    assert fc.get_total_flops() / 2 == conv(16, 32, 16) == 2 * 16 * 32 * 3 * 3 * 16 * 16


@pytest.mark.parametrize("arch, n", [("resnet20", 3), ("resnet56", 9)])
def test_resnet_flops_are_the_closed_form(arch, n):
    f = flops_per_sample(arch, C)
    assert f["forward"] == resnet_he_forward(n)
    # backward: the input and weight gradients of every layer (2 x forward), but the first convolution
    # computes no input gradient (the images do not require one)
    assert f["backward"] == 2 * resnet_he_forward(n) - conv(3, 16, 32)
    assert f["train"] == f["forward"] + f["backward"]


def test_work_factor_between_resnet20_and_resnet56():
    train = {n: 3 * resnet_he_forward(n) - conv(3, 16, 32) for n in (3, 9)}
    assert work_factor("resnet56", "resnet56", C) == 1.0 == work_factor("resnet20", "resnet20", C)
    assert work_factor("resnet20", "resnet56", C) == pytest.approx(train[3] / train[9], rel=1e-12)
    assert work_factor("resnet56", "resnet20", C) == pytest.approx(train[9] / train[3], rel=1e-12)
    # close to the ratio of their block convolutions, 18 / 54, not equal: the stem convolution and the
    # Linear do not grow with depth, and the first convolution of stages 2 and 3 costs half the others
    assert abs(work_factor("resnet20", "resnet56", C) - 18 / 54) < 0.015


def test_forward_share():
    share = forward_share("resnet20", "resnet56", C)
    assert 0 < share < 1
    assert share == pytest.approx(resnet_he_forward(3) / (3 * resnet_he_forward(9) - conv(3, 16, 32)), rel=1e-12)
    own = forward_share("resnet56", "resnet56", C)             # a forward pass of the target: about a third
    assert 1 / 3 < own < 0.34
    rec = factors("resnet20", "resnet56", C)
    assert rec["work_factor"] == work_factor("resnet20", "resnet56", C) and rec["forward_share"] == share
    assert set(rec["flops_per_sample"]) == {"resnet20", "resnet56"}


def test_counted_once_and_the_random_streams_untouched():
    flops._count.cache_clear()
    before = torch.get_rng_state()
    first = flops_per_sample("resnet32", 100)
    assert torch.equal(torch.get_rng_state(), before)
    first["forward"] = -1                                        # a caller's copy: the cache stays right
    assert flops_per_sample("resnet32", 100)["forward"] == resnet_he_forward(5, 100)
    assert flops._count.cache_info().hits == 1 and flops._count.cache_info().misses == 1


def test_input_size_and_a_torchvision_model():
    assert input_size("cifar10") == input_size("digits") == 32 and input_size("imagefolder", 160) == 160
    f = flops_per_sample("tv_resnet18", 1000, 224)               # built on the meta device: nothing computed
    assert 3.5e9 < f["forward"] < 3.7e9                          # the well-known 1.8 GMACs
    assert work_factor("tv_resnet18", "tv_resnet18", 1000, 224) == 1.0
