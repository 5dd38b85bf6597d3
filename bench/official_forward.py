"""The official RVM forward pass, op for op, as the baseline the engine's speed is measured against.

The issue's goal is "2x the official code in the same run, same weights, same frames". The official code
(github.com/PeterL1n/RobustVideoMatting, ``model/*.py``) needs torchvision for its encoder and is GPL-3, so it
is not copied here; this module issues the same torch operations in the same order on the same modules,
which is what its speed is:

* encoder, LR-ASPP, projection: the loaded (unoptimised) network's own modules: eager, BatchNorm unfolded,
  plane-major, the same layers as torchvision's ``MobileNetV3`` blocks and the official LR-ASPP.
* the recurrent decoder: walked here with the official block bodies (``nn.Upsample(scale_factor=2)`` then
  crop, concatenate, conv; ConvGRU ``ih``/``hh`` and the update ``(1 - z) * h + z * c``; zero state at a
  shot's start) over the network's decoder layers, so that speed-ups made to the engine's decoder do not
  leak into the baseline.
* the refiner: the official ``FastGuidedFilter`` / ``DeepGuidedFilter`` - box filters at low resolution, then
  ``F.interpolate`` of A and b to the full plate, ``A * hr_x + b`` on the 4-channel guide, split - and the
  official ``fgr = (fgr_residual + src).clamp(0, 1)``, ``pha.clamp(0, 1)``.

It is a baseline, not an engine path: nothing in ``rvm_vfx`` imports it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rvm_vfx.model import MattingNetwork
from rvm_vfx.model.decoder import BottleneckBlock, ConvGRU, OutputBlock, RecurrentDecoder, UpsamplingBlock
from rvm_vfx.model.refiners import DeepGuidedFilterRefiner


def _official_gru(gru: ConvGRU, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    if h is None:
        h = torch.zeros_like(x)
    r, z = gru.ih(torch.cat([x, h], dim=1)).split(gru.channels, dim=1)
    c = gru.hh(torch.cat([x, r * h], dim=1))
    return (1 - z) * h + z * c


def _official_upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : like.size(2), : like.size(3)]


def _official_bottleneck(block: BottleneckBlock, x: torch.Tensor, r: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    a, b = x.split(block.channels // 2, dim=-3)
    r = _official_gru(block.gru, b, r)
    return torch.cat([a, r], dim=-3), r


def _official_upsampling(
    block: UpsamplingBlock, x: torch.Tensor, f: torch.Tensor, s: torch.Tensor, r: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    x = block.conv(torch.cat([_official_upsample(x, s), f, s], dim=1))
    a, b = x.split(block.out_channels // 2, dim=1)
    r = _official_gru(block.gru, b, r)
    return torch.cat([a, r], dim=1), r


def _official_output(block: OutputBlock, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return block.conv(torch.cat([_official_upsample(x, s), s], dim=1))


def _official_decoder(
    decoder: RecurrentDecoder,
    s0: torch.Tensor,
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    states: tuple[torch.Tensor | None, ...],
) -> tuple[torch.Tensor, ...]:
    f1, f2, f3, f4 = features
    r1, r2, r3, r4 = states
    s1 = decoder.avgpool(s0)
    s2 = decoder.avgpool(s1)
    s3 = decoder.avgpool(s2)
    x4, r4 = _official_bottleneck(decoder.decode4, f4, r4)
    x3, r3 = _official_upsampling(decoder.decode3, x4, f3, s3, r3)
    x2, r2 = _official_upsampling(decoder.decode2, x3, f2, s2, r2)
    x1, r1 = _official_upsampling(decoder.decode1, x2, f1, s1, r1)
    return _official_output(decoder.decode0, x1, s0), r1, r2, r3, r4


def _official_box_filter(x: torch.Tensor, r: int = 1) -> torch.Tensor:
    """The official ``BoxFilter``: separable mean by two grouped convolutions, kernels built each call."""
    size = 2 * r + 1
    channels = x.shape[1]
    kernel_x = torch.full((channels, 1, 1, size), 1 / size, device=x.device, dtype=x.dtype)
    kernel_y = torch.full((channels, 1, size, 1), 1 / size, device=x.device, dtype=x.dtype)
    x = F.conv2d(x, kernel_x, padding=(0, r), groups=channels)
    return F.conv2d(x, kernel_y, padding=(r, 0), groups=channels)


def _official_refine(
    model: MattingNetwork,
    fine_src: torch.Tensor,
    base_src: torch.Tensor,
    base_fgr: torch.Tensor,
    base_pha: torch.Tensor,
    base_hid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official refiners' ``forward_single_frame``: coefficients at low resolution, applied at full size."""
    fine_x = torch.cat([fine_src, fine_src.mean(1, keepdim=True)], dim=1)
    base_x = torch.cat([base_src, base_src.mean(1, keepdim=True)], dim=1)
    base_y = torch.cat([base_fgr, base_pha], dim=1)
    refiner = model.refiner
    if isinstance(refiner, DeepGuidedFilterRefiner):
        mean_x = refiner.box_filter(base_x)
        mean_y = refiner.box_filter(base_y)
        cov_xy = refiner.box_filter(base_x * base_y) - mean_x * mean_y
        var_x = refiner.box_filter(base_x * base_x) - mean_x * mean_x
        a = refiner.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))
    else:
        mean_x = _official_box_filter(base_x)
        mean_y = _official_box_filter(base_y)
        cov_xy = _official_box_filter(base_x * base_y) - mean_x * mean_y
        var_x = _official_box_filter(base_x * base_x) - mean_x * mean_x
        a = cov_xy / (var_x + 1e-5)
    b = mean_y - a * mean_x
    a = F.interpolate(a, fine_x.shape[2:], mode="bilinear", align_corners=False)
    b = F.interpolate(b, fine_x.shape[2:], mode="bilinear", align_corners=False)
    out = a * fine_x + b
    fgr, pha = out.split([3, 1], dim=1)
    return fgr, pha


class OfficialForward(torch.nn.Module):
    """The official forward pass behind the network's call signature, so the bench times it like any model."""

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self,
        src: torch.Tensor,
        r1: torch.Tensor | None = None,
        r2: torch.Tensor | None = None,
        r3: torch.Tensor | None = None,
        r4: torch.Tensor | None = None,
        downsample_ratio: float = 1.0,
    ) -> tuple[torch.Tensor, ...]:
        """One frame (B×3×H×W) the official way: ``(fgr, pha, r1, r2, r3, r4)``."""
        if downsample_ratio != 1:
            src_sm = F.interpolate(
                src, scale_factor=downsample_ratio, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        else:
            src_sm = src
        f1, f2, f3, f4 = self.model.backbone(src_sm)
        f4 = self.model.aspp(f4)
        hid, r1, r2, r3, r4 = _official_decoder(self.model.decoder, src_sm, (f1, f2, f3, f4), (r1, r2, r3, r4))
        fgr_residual, pha = self.model.project_mat(hid).split([3, 1], dim=-3)
        if downsample_ratio != 1:
            fgr_residual, pha = _official_refine(self.model, src, src_sm, fgr_residual, pha, hid)
        fgr = (fgr_residual + src).clamp(0.0, 1.0)
        pha = pha.clamp(0.0, 1.0)
        return fgr, pha, r1, r2, r3, r4
