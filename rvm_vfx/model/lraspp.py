"""LR-ASPP head: a 1×1 projection gated by a global-context attention vector."""

from __future__ import annotations

import torch
from torch import nn


class LRASPP(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        # Index 0 is the parameter-free pooling, so the conv sits at key ``aspp2.1`` as in the checkpoint.
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp1(x) * self.aspp2(x)
