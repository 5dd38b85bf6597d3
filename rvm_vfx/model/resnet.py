"""ResNet-50 encoder as RVM uses it: layer4 dilated (output stride 16), no classifier.

Attribute names (conv1, bn1, layerN.M.convK, downsample) match the official checkpoint keys.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1, downsample: bool = False) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(cin: int, width: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
    """Dilated stages keep stride 1; their first block stays at dilation 1, the rest use 2."""
    layers = [Bottleneck(cin, width, 1 if dilate else stride, 1, downsample=True)]
    later_dilation = 2 if dilate else 1
    layers += [Bottleneck(width * 4, width, 1, later_dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50Encoder(nn.Module):
    """Returns (f1, f2, f3, f4) = (64@1/2, 256@1/4, 512@1/8, 2048@1/16); no input normalisation."""

    channels = (64, 256, 512, 2048)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 3, 1, False)
        self.layer2 = _stage(256, 128, 4, 2, False)
        self.layer3 = _stage(512, 256, 6, 2, False)
        self.layer4 = _stage(1024, 512, 3, 2, True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = x = self.relu(self.bn1(self.conv1(x)))
        f2 = x = self.layer1(self.maxpool(x))
        f3 = x = self.layer2(x)
        x = self.layer3(x)
        f4 = self.layer4(x)
        return f1, f2, f3, f4
