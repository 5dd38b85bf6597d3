"""MobileNetV3-Large encoder as RVM uses it: output stride 16, skip features at 1/2, 1/4, 1/8, 1/16.

Module names (``features.N.block.M``) follow the layout of the official checkpoint so that its
state_dict loads key for key; the classifier head is absent because RVM never had one.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (in, kernel, expanded, out, squeeze-excite, hardswish, stride, dilation) for features[1..15].
# The last stage trades its stride for dilation so the encoder stops at 1/16 resolution.
BLOCKS: tuple[tuple[int, int, int, int, bool, bool, int, int], ...] = (
    (16, 3, 16, 16, False, False, 1, 1),
    (16, 3, 64, 24, False, False, 2, 1),
    (24, 3, 72, 24, False, False, 1, 1),
    (24, 5, 72, 40, True, False, 2, 1),
    (40, 5, 120, 40, True, False, 1, 1),
    (40, 5, 120, 40, True, False, 1, 1),
    (40, 3, 240, 80, False, True, 2, 1),
    (80, 3, 200, 80, False, True, 1, 1),
    (80, 3, 184, 80, False, True, 1, 1),
    (80, 3, 184, 80, False, True, 1, 1),
    (80, 3, 480, 112, True, True, 1, 1),
    (112, 3, 672, 112, True, True, 1, 1),
    (112, 5, 672, 160, True, True, 1, 2),
    (160, 5, 960, 160, True, True, 1, 2),
    (160, 5, 960, 160, True, True, 1, 2),
)

BN_EPS = 0.001


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts the way MobileNet does, so squeeze widths match the checkpoint."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv, BatchNorm(eps 1e-3), optional activation; indices 0/1 match the checkpoint keys."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gating; ``fc1``/``fc2`` are 1×1 convolutions with bias, as in the checkpoint."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels / 4, 8)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = torch.relu(self.fc1(scale))
        scale = nn.functional.hardsigmoid(self.fc2(scale))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(
        self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hswish: bool, stride: int, dilation: int
    ) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, activation=act))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, dilation=dilation, activation=act))
        if se:
            layers.append(SqueezeExcitation(expanded))
        layers.append(ConvBNAct(expanded, cout, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3LargeEncoder(nn.Module):
    """Returns (f1, f2, f3, f4) = (16@1/2, 24@1/4, 40@1/8, 960@1/16); normalises ImageNet-style inside."""

    channels = (16, 24, 40, 960)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 16, 3, stride=2, activation=nn.Hardswish)]
        layers += [InvertedResidual(*spec) for spec in BLOCKS]
        layers.append(ConvBNAct(160, 960, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        # Written as one loop over the layers so that TorchScript compiles it (rvm_vfx.export scripts it).
        skips: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == 1 or index == 3 or index == 6:  # f1, f2, f3: the last layers at 1/2, 1/4, 1/8
                skips.append(x)
        return skips[0], skips[1], skips[2], x
