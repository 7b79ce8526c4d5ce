"""The CIFAR-10 ResNets of He et al. 2015, section 4.2 (6n+2 layers: 20, 32, ..., 1202).

Written out as plain model code (not a torchvision variant) because the CIFAR design
differs in ways a flag would hide: a 3x3 stem without max-pooling, three stages of
16/32/64 channels, and the parameter-free "option A" shortcut. Parameter names follow
akamaster/pytorch_resnet_cifar10 (classifier ``linear``, not ``fc``) so the published
checkpoints in ``shared/models/cifar10-resnet`` load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the alias every PyTorch model uses
from torch import Tensor, nn

#: torchvision ``CIFAR10`` class order, which the upstream trainer used. A swap of two
#: names would silently mislabel both classes, so this order is checked by a test.
CIFAR10_LABELS: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: The upstream trainer normalised with the ImageNet statistics, not CIFAR's own; using
#: CIFAR statistics costs ~0.3 points, (0.5, 0.5, 0.5) ~18 points (shared README).
CIFAR_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CIFAR_INPUT_SIZE = 32


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BatchNorm that follows has one)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut for a block that halves the map and doubles the channels.

    Subsamples by 2 and zero-pads the channel dimension *equally on both sides*, as the
    upstream code does with ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))``.
    Appending all the zeros at the end loads without error but drops the pretrained
    ResNet-20 to ~14 % accuracy, because every identity channel lands on the wrong
    residual channel. A module (not a lambda) so tracing, scripting and ONNX export work.
    """

    def __init__(self, pad_channels: int) -> None:
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: Tensor) -> Tensor:
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C
        # before, C after).
        return F.pad(
            x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels), "constant", 0.0
        )


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ValueError(
                    "option A shortcut supports only stride 2 with doubled channels, got "
                    f"stride {stride}, {in_planes} -> {planes} channels"
                )
            self.shortcut = OptionAShortcut(planes // 4)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks_per_stage`` blocks (16/32/64 ch), pool, ``linear``."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1 = self._make_layer(16, blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(32, blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            # Kaiming init as upstream, so a random export has sane logit magnitudes.
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(torch.flatten(out, 1))


def _cifar_resnet(depth: int, *, num_classes: int) -> CifarResNet:
    """Depth 6n+2 -> n blocks per stage; other depths do not exist in this family."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, ...), got {depth}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes)


def resnet20(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(20, num_classes=num_classes)


def resnet32(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(32, num_classes=num_classes)


def resnet44(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(44, num_classes=num_classes)


def resnet56(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(56, num_classes=num_classes)


def resnet110(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(110, num_classes=num_classes)


def resnet1202(*, num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(1202, num_classes=num_classes)
