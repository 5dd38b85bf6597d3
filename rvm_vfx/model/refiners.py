"""Guided-filter refiners that lift the low-resolution prediction back to the full plate.

Both fit a local linear model ``y ≈ A·x + b`` between the downsampled guide (source RGB plus its
grey mean) and the prediction, then apply A and b, bilinearly enlarged, to the full-resolution guide.
The deep variant learns A from the statistics; the fast variant solves it in closed form.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _guide(src: torch.Tensor) -> torch.Tensor:
    return torch.cat([src, src.mean(1, keepdim=True)], dim=1)


def _apply(a: torch.Tensor, b: torch.Tensor, fine_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = fine_x.shape[2:]
    a = F.interpolate(a, size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size, mode="bilinear", align_corners=False)
    out = a * fine_x + b
    return out[:, :3], out[:, 3:]


class DeepGuidedFilterRefiner(nn.Module):
    def __init__(self, hidden_channels: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, 3, padding=1, bias=False, groups=4)
        self.box_filter.weight.data.fill_(1 / 9)
        self.conv = nn.Sequential(
            nn.Conv2d(4 * 2 + hidden_channels, hidden_channels, 1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, 4, 1, bias=True),
        )

    def forward(
        self, src: torch.Tensor, src_sm: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = _guide(src_sm)
        y = torch.cat([fgr, pha], dim=1)
        mean_x = self.box_filter(x)
        mean_y = self.box_filter(y)
        cov_xy = self.box_filter(x * y) - mean_x * mean_y
        var_x = self.box_filter(x * x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, hid], dim=1))
        b = mean_y - a * mean_x
        return _apply(a, b, _guide(src))


def box_filter_3x3(x: torch.Tensor) -> torch.Tensor:
    """Separable mean over a 3×3 window with zero padding (the border is darkened, as in the original)."""
    c = x.shape[1]
    kx = x.new_full((c, 1, 1, 3), 1 / 3)
    ky = x.new_full((c, 1, 3, 1), 1 / 3)
    x = F.conv2d(x, kx, padding=(0, 1), groups=c)
    return F.conv2d(x, ky, padding=(1, 0), groups=c)


class FastGuidedFilterRefiner(nn.Module):
    """Parameter-free: the refiner the official TF.js export was built with."""

    eps = 1e-5

    def forward(
        self, src: torch.Tensor, src_sm: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = _guide(src_sm)
        y = torch.cat([fgr, pha], dim=1)
        mean_x = box_filter_3x3(x)
        mean_y = box_filter_3x3(y)
        cov_xy = box_filter_3x3(x * y) - mean_x * mean_y
        var_x = box_filter_3x3(x * x) - mean_x * mean_x
        a = cov_xy / (var_x + self.eps)
        b = mean_y - a * mean_x
        return _apply(a, b, _guide(src))
