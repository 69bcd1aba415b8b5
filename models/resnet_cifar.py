"""CIFAR-style ResNets.

Two families, both built for small (32x32) images:

- ResNet18/34/50/101 as the published TDDS code builds them (its `models/resnet.py`): the ImageNet
  ResNet with its 7x7 stride-2 stem and max-pool replaced by one 3x3 stride-1 conv, so a 32x32
  image keeps 32x32 resolution into the first stage (stages 64/128/256/512 channels), an adaptive
  final pool (any input of at least 8x8 works). Same layers in the same creation order, so the same
  seed gives bit-identical initial weights (tests/test_trust.py checks this against an independent
  definition); only two names differ: the published `downsample` and `fc` are `shortcut` and
  `linear` here, so a published checkpoint needs those keys renamed (and DataParallel's `module.`
  prefix removed) to load.
- ResNet20/32/44/56 of He et al. 2016, Sec. 4.2: 3 stages of n BasicBlocks with 16/32/64 channels
  and parameter-free ("option A") shortcuts, depth 6n+2. Small enough (0.27M parameters for
  ResNet20) to train on a CPU.

Weights are initialised as the published code and torchvision do: convs from N(0, 2 / (k*k*out
channels)) (kaiming-normal, fan_out), BatchNorm at weight 1 / bias 0, PyTorch's default for the
linear classifier.
"""
import torch.nn as nn
import torch.nn.functional as F


def init_weights(model):
    """torchvision's ResNet init; the random stream is whatever torch's global generator holds."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_shortcut(c_in, c_out, stride):
    """1x1 conv + BN projection where a block changes shape ("option B"); identity otherwise."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs; output channels = planes."""
    expansion = 1

    def __init__(self, c_in, planes, stride=1, shortcut=None):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut if shortcut is not None else conv_shortcut(c_in, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand; output channels = 4 * planes."""
    expansion = 4

    def __init__(self, c_in, planes, stride=1):
        super().__init__()
        c_out = self.expansion * planes
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = conv_shortcut(c_in, c_out, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """kuangliu-style CIFAR ResNet: 3x3 stem, 4 stages (64/128/256/512), avg pool, linear."""

    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        c_in = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(c_in, planes, stride))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x):  # x: (B, 3, H, W), H, W >= 8
        out = F.relu(self.bn1(self.conv1(x)))                                  # (B, 64, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))          # (B, 512e, H/8, W/8)
        return self.linear(self.pool(out).flatten(1))                         # (B, num_classes)


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by 2 and zero-pad the new channels; no parameters."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.pad = c_out - c_in

    def forward(self, x):  # (B, C, H, W) -> (B, C + pad, H/2, W/2)
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class ResNetHe(nn.Module):
    """He et al. 2016 CIFAR ResNet of depth 6n+2: 16/32/64 channels, 3 stages of n BasicBlocks."""

    def __init__(self, n, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        c_in = 16
        stages = []
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                shortcut = PadShortcut(c_in, planes) if stride != 1 else None
                blocks.append(BasicBlock(c_in, planes, stride, shortcut))
                c_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x):  # x: (B, 3, H, W), H, W >= 4
        out = F.relu(self.bn1(self.conv1(x)))                     # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))          # (B, 64, H/4, W/4)
        return self.linear(self.pool(out).flatten(1))            # (B, num_classes)


def resnet18(num_classes=10):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes=10):
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes=10):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def resnet101(num_classes=10):
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes)


def resnet20(num_classes=10):
    return ResNetHe(3, num_classes)


def resnet32(num_classes=10):
    return ResNetHe(5, num_classes)


def resnet44(num_classes=10):
    return ResNetHe(7, num_classes)


def resnet56(num_classes=10):
    return ResNetHe(9, num_classes)
