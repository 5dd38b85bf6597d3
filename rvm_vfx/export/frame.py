"""The network as one recurrent step, state in and state out: the form every export of it takes.

``MattingNetwork.forward`` is written for the engine: clips folded into the batch, a segmentation pass,
and a guided upsampling fused into row strips whose Python loop runs once per 64 rows, a count a graph
would freeze at the example's height. :class:`RecurrentFrame` reuses the same modules (the same weights)
and computes the same frame with the official formula instead: coefficients enlarged by one bilinear
resize, ``A·[src, mean(src)] + b``, clamped. The export tests hold it to ``MattingNetwork`` frame by frame.

It compiles with TorchScript (no tracing), so sizes, devices and dtypes stay the caller's, and it traces
into an ONNX graph whose only size-dependent parts are ``Shape`` and ``Resize`` nodes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..model import STATE_CHANNELS, MattingNetwork
from ..session import network_input_size

#: The recurrent states r1..r4 live at 1/2, 1/4, 1/8 and 1/16 of the downsampled frame (rounded up: every
#: stride-2 layer and the decoder's ceil-mode pooling keep a half pixel).
STATE_STRIDES = (2, 4, 8, 16)


def state_shapes(
    height: int, width: int, downsample_ratio: float = 1.0, variant: str = "mobilenetv3", batch: int = 1
) -> tuple[tuple[int, int, int, int], ...]:
    """The shapes of r1..r4 for a ``height``×``width`` plate: what a caller's first frame passes as zeros.

    For example 1920×1080 at ratio 0.25 (the encoder sees 480×270), MobileNetV3:
    r1 (1, 16, 135, 240), r2 (1, 20, 68, 120), r3 (1, 40, 34, 60), r4 (1, 64, 17, 30).
    """
    if variant not in STATE_CHANNELS:
        raise ValueError(f"variant must be one of {sorted(STATE_CHANNELS)}, not {variant!r}")
    low_h, low_w = network_input_size(height, width, downsample_ratio)
    return tuple(
        (batch, channels, -(-low_h // stride), -(-low_w // stride))
        for channels, stride in zip(STATE_CHANNELS[variant], STATE_STRIDES, strict=True)
    )


def zero_states(
    height: int,
    width: int,
    downsample_ratio: float,
    variant: str = "mobilenetv3",
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """The state a shot starts from: zeros of :func:`state_shapes`, which is what the network assumes for None."""
    return [torch.zeros(shape, dtype=dtype) for shape in state_shapes(height, width, downsample_ratio, variant, batch)]


class RecurrentFrame(nn.Module):
    """One B×3×H×W frame through the network: ``(fgr, pha, r1, r2, r3, r4)``, the official call's results.

    States may be None (a shot's first frame: the decoder starts from zeros) or the previous call's.
    """

    def __init__(self, net: MattingNetwork) -> None:
        super().__init__()
        self.backbone = net.backbone
        self.aspp = net.aspp
        self.decoder = net.decoder
        self.project_mat = net.project_mat
        self.refiner = net.refiner

    def forward(
        self,
        src: torch.Tensor,
        r1: torch.Tensor | None = None,
        r2: torch.Tensor | None = None,
        r3: torch.Tensor | None = None,
        r4: torch.Tensor | None = None,
        downsample_ratio: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if downsample_ratio != 1.0:
            src_sm = F.interpolate(
                src, scale_factor=downsample_ratio, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        else:
            src_sm = src
        f1, f2, f3, f4 = self.backbone(src_sm)
        hid, r1, r2, r3, r4 = self.decoder(src_sm, f1, f2, f3, self.aspp(f4), r1, r2, r3, r4, 1)
        mat = self.project_mat(hid)
        residual, pha = mat[:, :3], mat[:, 3:]
        if downsample_ratio != 1.0:
            # The guided filter subtracts nearly equal local moments (var = E[x²] − E[x]²), which half precision
            # cannot hold (alpha off by up to 1.0 measured): it, and the enlargement it drives, run in float32
            # whatever the network's dtype (a half export keeps the refiner's weights in float32).
            io_dtype = src.dtype
            src, src_sm, residual, pha, hid = src.float(), src_sm.float(), residual.float(), pha.float(), hid.float()
            coef_a, coef_b = self.refiner(src_sm, residual, pha, hid)
            coeffs = F.interpolate(
                torch.cat([coef_a, coef_b], dim=1),
                size=(src.shape[2], src.shape[3]),
                mode="bilinear",
                align_corners=False,
            )
            refined = coeffs[:, :4] * torch.cat([src, src.mean(1, keepdim=True)], dim=1) + coeffs[:, 4:]
            residual, pha = refined[:, :3], refined[:, 3:]
            return (residual + src).clamp(0.0, 1.0).to(io_dtype), pha.clamp(0.0, 1.0).to(io_dtype), r1, r2, r3, r4
        return (residual + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0), r1, r2, r3, r4


class FixedRatioFrame(nn.Module):
    """:class:`RecurrentFrame` with the ratio a constant and every state an input: the ONNX graph.

    A constant ratio makes every Resize one by constant scales (or to sizes read with ``Shape``), never a
    float network input driving a shape, which TensorRT refuses ("network input that is shape tensor must
    have type Int32", as the official RVM ONNX files with a ``downsample_ratio`` input hit).
    """

    def __init__(self, frame: RecurrentFrame, downsample_ratio: float) -> None:
        super().__init__()
        self.frame = frame
        self.downsample_ratio = float(downsample_ratio)

    def forward(
        self, src: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, r3: torch.Tensor, r4: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.frame(src, r1, r2, r3, r4, self.downsample_ratio)
