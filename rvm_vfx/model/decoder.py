"""The recurrent decoder: ConvGRU memories at 1/16, 1/8, 1/4 and 1/2 of the (downsampled) input.

Every layer except the GRU sees time folded into the batch (``B*T``); only the GRU walks the T frames,
carrying its hidden state. A B×T call is therefore the same computation as T single-frame calls.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvGRU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, 3, padding=1), nn.Tanh())

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        candidate = self.hh(torch.cat([x, r * h], dim=1))
        # (1 - z)·h + z·candidate, the official update, as one pass over the state instead of four.
        return torch.lerp(h, candidate, z)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` is (B*T, C, H, W) with frames of one clip adjacent; returns outputs in the same layout.

        The state takes the memory layout of ``x``: the update's output follows the state's layout, and a
        plane-major state in a channels-last network made every later concatenation plane-major, so each
        convolution after it paid a full layout copy of its input (512×288: 20 ms of 82 a frame).
        """
        bt, c, height, width = x.shape
        b = bt // t
        if h is None:
            h = x.new_zeros(b, c, height, width)
        if _channels_last_like(x):
            h = h.contiguous(memory_format=torch.channels_last)
        if t == 1:
            h = self.step(x, h)
            return h, h
        frames = x.view(b, t, c, height, width)
        outs = []
        for i in range(t):
            h = self.step(frames[:, i], h)
            outs.append(h)
        return torch.stack(outs, dim=1).flatten(0, 1), h


def _channels_last_like(x: torch.Tensor) -> bool:
    """Whether ``x`` (N×C×H×W, C > 1) is laid out channels-last, or is a channel slice of such a tensor.

    Strides only (no shapes), so that a traced export reads plain integers and records no branch on data.
    """
    return x.stride(1) == 1 and x.stride(3) > 1


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BottleneckBlock(nn.Module):
    """Half of the LR-ASPP features pass through a GRU; the other half skip it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: torch.Tensor, r: torch.Tensor | None, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.split(self.channels // 2, dim=1)
        b, r = self.gru(b, r, t)
        return torch.cat([a, b], dim=1), r


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """×2 bilinear, then cropped: odd sizes upsample one pixel too large and the crop fixes it."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : like.shape[2], : like.shape[3]]


class UpsamplingBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, csrc: int, cout: int) -> None:
        super().__init__()
        self.out_channels = cout
        self.conv = nn.Sequential(*_conv_bn_relu(cin + cskip + csrc, cout))
        self.gru = ConvGRU(cout // 2)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, src: torch.Tensor, r: torch.Tensor | None, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([_upsample_to(x, src), skip, src], dim=1)
        x = self.conv(x)
        a, b = x.split(self.out_channels // 2, dim=1)
        b, r = self.gru(b, r, t)
        return torch.cat([a, b], dim=1), r


class OutputBlock(nn.Module):
    def __init__(self, cin: int, csrc: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn_relu(cin + csrc, cout), *_conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([_upsample_to(x, src), src], dim=1))


class RecurrentDecoder(nn.Module):
    def __init__(
        self, feature_channels: tuple[int, int, int, int], decoder_channels: tuple[int, int, int, int]
    ) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)
        f1, f2, f3, f4 = feature_channels
        d3, d2, d1, d0 = decoder_channels
        self.decode4 = BottleneckBlock(f4)
        self.decode3 = UpsamplingBlock(f4, f3, 3, d3)
        self.decode2 = UpsamplingBlock(d3, f2, 3, d2)
        self.decode1 = UpsamplingBlock(d2, f1, 3, d1)
        self.decode0 = OutputBlock(d1, 3, d0)

    def forward(
        self,
        s0: torch.Tensor,
        f1: torch.Tensor,
        f2: torch.Tensor,
        f3: torch.Tensor,
        f4: torch.Tensor,
        r1: torch.Tensor | None,
        r2: torch.Tensor | None,
        r3: torch.Tensor | None,
        r4: torch.Tensor | None,
        t: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.avgpool(s0)
        s2 = self.avgpool(s1)
        s3 = self.avgpool(s2)
        x4, r4 = self.decode4(f4, r4, t)
        x3, r3 = self.decode3(x4, f3, s3, r3, t)
        x2, r2 = self.decode2(x3, f2, s2, r2, t)
        x1, r1 = self.decode1(x2, f1, s1, r1, t)
        return self.decode0(x1, s0), r1, r2, r3, r4
