"""MattingNetwork: encoder → LR-ASPP → recurrent decoder → projection → guided-filter refiner.

The call signature is the official one so that users' scripts carry over unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .decoder import RecurrentDecoder
from .lraspp import LRASPP
from .mobilenetv3 import MobileNetV3LargeEncoder
from .refiners import DeepGuidedFilterRefiner, FastGuidedFilterRefiner, guided_upsample
from .resnet import ResNet50Encoder

Variant = Literal["mobilenetv3", "resnet50"]
Refiner = Literal["deep_guided_filter", "fast_guided_filter"]

# variant: (encoder, LR-ASPP width, decoder widths for decode3..decode0)
_VARIANTS: dict[str, tuple[type[nn.Module], int, tuple[int, int, int, int]]] = {
    "mobilenetv3": (MobileNetV3LargeEncoder, 128, (80, 40, 32, 16)),
    "resnet50": (ResNet50Encoder, 256, (128, 64, 32, 16)),
}
_REFINERS: dict[str, type[nn.Module]] = {
    "deep_guided_filter": DeepGuidedFilterRefiner,
    "fast_guided_filter": FastGuidedFilterRefiner,
}

# Recurrent state widths (r1..r4) per variant: half the decoder width at each scale.
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def auto_downsample_ratio(height: int, width: int) -> float:
    """The ratio that brings the long side to 512 pixels, the scale the network was trained at."""
    return min(512 / max(height, width), 1.0)


class MattingNetwork(nn.Module):
    def __init__(self, variant: Variant = "mobilenetv3", refiner: Refiner = "deep_guided_filter") -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, not {variant!r}")
        if refiner not in _REFINERS:
            raise ValueError(f"refiner must be one of {sorted(_REFINERS)}, not {refiner!r}")
        self.variant = variant
        self.refiner_name = refiner
        encoder_cls, aspp_channels, decoder_channels = _VARIANTS[variant]
        self.backbone = encoder_cls()
        f1, f2, f3, f4 = encoder_cls.channels  # type: ignore[attr-defined]
        self.aspp = LRASPP(f4, aspp_channels)
        self.decoder = RecurrentDecoder((f1, f2, f3, aspp_channels), decoder_channels)
        self.project_mat = Projection(decoder_channels[-1], 4)
        self.project_seg = Projection(decoder_channels[-1], 1)
        self.refiner = _REFINERS[refiner]()
        # Set by optimize_for_inference: the low-resolution branch then runs channels-last while the
        # full-resolution plate stays plane-major for the refiner's row strips.
        self.channels_last_inputs = False

    def forward(
        self,
        src: torch.Tensor,
        r1: torch.Tensor | None = None,
        r2: torch.Tensor | None = None,
        r3: torch.Tensor | None = None,
        r4: torch.Tensor | None = None,
        downsample_ratio: float = 1.0,
        segmentation_pass: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """``src`` is B×3×H×W or B×T×3×H×W in [0, 1] sRGB; states are None at the start of a shot."""
        clip = src.ndim == 5
        if clip:
            b, t = src.shape[:2]
            src = src.flatten(0, 1)
        elif src.ndim == 4:
            b, t = src.shape[0], 1
        else:
            raise ValueError(f"src must be B×3×H×W or B×T×3×H×W, got shape {tuple(src.shape)}")

        if downsample_ratio != 1:
            src_sm = F.interpolate(
                src, scale_factor=downsample_ratio, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        else:
            src_sm = src
        if self.channels_last_inputs:
            src_sm = src_sm.contiguous(memory_format=torch.channels_last)

        f1, f2, f3, f4 = self.backbone(src_sm)
        f4 = self.aspp(f4)
        hid, r1, r2, r3, r4 = self.decoder(src_sm, f1, f2, f3, f4, r1, r2, r3, r4, t)

        def unfold(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(0, (b, t)) if clip else x

        if segmentation_pass:
            return unfold(self.project_seg(hid)), r1, r2, r3, r4

        mat = self.project_mat(hid)
        fgr_residual, pha = mat[:, :3], mat[:, 3:]
        if downsample_ratio != 1:
            # The guided filter subtracts nearly equal local moments (var = E[x²] − E[x]²): in half or bf16 that
            # cancellation destroys it (alpha off by up to 1.0), so it, and the enlargement it drives, always run
            # in at least float32, outside any autocast; a half network keeps its refiner's weights in float32.
            with torch.autocast(device_type=src.device.type, enabled=False):
                dtype = torch.promote_types(src.dtype, torch.float32)
                coef_a, coef_b = self.refiner(src_sm.to(dtype), fgr_residual.to(dtype), pha.to(dtype), hid.to(dtype))
                fgr, pha = guided_upsample(coef_a, coef_b, src.to(dtype))
        else:
            fgr = (fgr_residual + src).clamp(0.0, 1.0)
            pha = pha.clamp(0.0, 1.0)
        return unfold(fgr), unfold(pha), r1, r2, r3, r4
