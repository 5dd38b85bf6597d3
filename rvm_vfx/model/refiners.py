"""Guided-filter refiners that lift the low-resolution prediction back to the full plate.

Both fit a local linear model ``y ≈ A·x + b`` between the downsampled guide (source RGB plus its
grey mean) and the prediction, then apply A and b, bilinearly enlarged, to the full-resolution guide.
The deep variant learns A from the statistics; the fast variant solves it in closed form.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The guide is the RGB plate and its grey mean; the prediction is the foreground residual and alpha.
GUIDE_CHANNELS = 4


def _guide(src: torch.Tensor) -> torch.Tensor:
    return torch.cat([src, src.mean(1, keepdim=True)], dim=1)


# Bytes of enlarged coefficients (8 planes) held per row strip: small enough to stay in a core's L2 cache
# while the strip is applied, large enough that each strip's matrix product has rows to work on.
STRIP_BYTES = 1 << 20


def _source_rows(out_size: int, in_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=False) source rows and weights, the same mapping F.interpolate uses.

    Positions are computed as its CPU kernel computes them for a float32 image given an output size: the
    scale rounded to float, then ``scale · (i + 0.5) − 0.5`` as one fused multiply-add rounded to float
    (emulated in double, which holds the product exactly). In double throughout, the fractions drift from
    its by up to 3e-5 on a 1080-row plate, which the guided filter's coefficients amplify.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32).double()
    exact = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5
    pos = exact.float().clamp(min=0.0).to(device)
    lo = pos.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo, hi, (pos - lo).float()


def bilinear_rows_matrix(out_size: int, in_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The (out × in) matrix whose product with a column of samples is F.interpolate's bilinear enlargement.

    Each row holds the two weights (1 - f, f) of its source rows (one weight 1 where both clamp to the edge),
    so a vertical enlargement becomes a matrix product: BLAS instead of gathering rows and blending them.
    """
    lo, hi, frac = _source_rows(out_size, in_size, device)
    frac = frac.to(dtype)
    rows = torch.arange(out_size, device=device)
    weights = torch.zeros((out_size, in_size), dtype=dtype, device=device)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


def guided_upsample(a: torch.Tensor, b: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply low-resolution coefficients to the full plate and return the final (fgr, pha).

    Equivalent to ``out = up(a)·cat(src, mean(src)) + up(b)``, ``fgr = clamp(src + out_rgb)``,
    ``pha = clamp(out_a)``, but fused: ``src + a·src`` is folded into ``(a + 1)·src`` at low
    resolution; the bilinear enlargement is done horizontally once at low height, then vertically per row
    strip as one matrix product of the strip's band of :func:`bilinear_rows_matrix` with the source rows
    it reads (the 8 coefficient planes side by side); each strip is applied while it is in cache and the
    results land in preallocated outputs. At HD and 4K this is a large part of the frame's time. The sums
    are the same two products as F.interpolate's, added in another order: within 1e-6 of it.

    The fused path writes into preallocated outputs, which autograd cannot follow; training (``rvm-vfx
    finetune``, coefficients that require grad) takes the plain formula above instead.
    """
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _guided_upsample_differentiable(a, b, src)
    n, _, height, width = src.shape
    low_height = a.shape[2]
    src = src.contiguous()  # row strips of a plane-major layout are contiguous: the fast case
    a = a.clone()
    a[:, :3] += 1.0
    low = torch.cat([a, b], dim=1)
    planes = low.shape[1]
    # Laid out (low row, plane, column), so that a strip of output rows is one (rows × band) @ (band × 8W)
    # product; the horizontal pass (linear along each row) writes that layout directly.
    by_row = low.permute(0, 2, 1, 3).reshape(n * low_height, planes, low.shape[3])
    by_row = F.interpolate(by_row, size=width, mode="linear", align_corners=False).view(n, low_height, planes * width)
    weights = bilinear_rows_matrix(height, low_height, src.device, by_row.dtype)
    lo, hi, _ = _source_rows(height, low_height, torch.device("cpu"))
    strip_rows = max(8, STRIP_BYTES // (planes * width * by_row.element_size()))
    fgr = torch.empty((n, 3, height, width), dtype=src.dtype, device=src.device)
    pha = torch.empty((n, 1, height, width), dtype=src.dtype, device=src.device)
    for y0 in range(0, height, strip_rows):
        y1 = min(y0 + strip_rows, height)
        band0, band1 = int(lo[y0]), int(hi[y1 - 1]) + 1
        rows = torch.matmul(weights[y0:y1, band0:band1], by_row[:, band0:band1])
        rows = rows.view(n, y1 - y0, planes, width).transpose(1, 2)  # (n, 8, rows, W), a view
        block = src[:, :, y0:y1]
        torch.addcmul(rows[:, 4:7], rows[:, 0:3], block, out=fgr[:, :, y0:y1]).clamp_(0.0, 1.0)
        torch.addcmul(rows[:, 7:8], rows[:, 3:4], block.mean(1, keepdim=True), out=pha[:, :, y0:y1]).clamp_(0.0, 1.0)
    return fgr, pha


def _guided_upsample_differentiable(
    a: torch.Tensor, b: torch.Tensor, src: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``guided_upsample`` as the official formula, through operations autograd can differentiate."""
    size = src.shape[2:]
    up_a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    up_b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    out = up_a * _guide(src) + up_b
    return (src + out[:, :3]).clamp(0.0, 1.0), out[:, 3:].clamp(0.0, 1.0)


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
        self, src_sm: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution coefficients (A, b); :func:`guided_upsample` applies them to the full plate."""
        x = _guide(src_sm)
        y = torch.cat([fgr, pha], dim=1)
        mean_x = self.box_filter(x)
        mean_y = self.box_filter(y)
        cov_xy = self.box_filter(x * y) - mean_x * mean_y
        var_x = self.box_filter(x * x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, hid], dim=1))
        return a, mean_y - a * mean_x


def box_filter_3x3(x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Separable mean over a 3×3 window with zero padding (the border is darkened, as in the original).

    ``kx`` and ``ky`` are the 1×3 and 3×1 taps of 1/3 for each of the 4 channels of the guide (and of the
    prediction): constants of the refiner, so they follow its device and dtype, and an exported graph sees
    kernels of fixed shape.
    """
    x = F.conv2d(x, kx, padding=(0, 1), groups=kx.shape[0])
    return F.conv2d(x, ky, padding=(1, 0), groups=kx.shape[0])


class FastGuidedFilterRefiner(nn.Module):
    """Parameter-free: the refiner the official TF.js export was built with."""

    def __init__(self) -> None:
        super().__init__()
        self.eps = 1e-5  # an instance attribute, which TorchScript sees (it ignores class attributes)
        # Not persistent: they are not weights, and the official state_dict has no such keys.
        self.register_buffer("box_x", torch.full((GUIDE_CHANNELS, 1, 1, 3), 1 / 3), persistent=False)
        self.register_buffer("box_y", torch.full((GUIDE_CHANNELS, 1, 3, 1), 1 / 3), persistent=False)

    def forward(
        self, src_sm: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution coefficients (A, b); :func:`guided_upsample` applies them to the full plate."""
        x = _guide(src_sm)
        y = torch.cat([fgr, pha], dim=1)
        kx, ky = self.box_x.to(x.dtype), self.box_y.to(x.dtype)
        mean_x = box_filter_3x3(x, kx, ky)
        mean_y = box_filter_3x3(y, kx, ky)
        cov_xy = box_filter_3x3(x * y, kx, ky) - mean_x * mean_y
        var_x = box_filter_3x3(x * x, kx, ky) - mean_x * mean_x
        a = cov_xy / (var_x + self.eps)
        return a, mean_y - a * mean_x
