"""The training losses: the paper's alpha terms where an artist's roto can supervise them, and a hold on
the foreground, which no roto describes.

RVM trains alpha with L1, a Laplacian-pyramid L1 (edges at every scale weigh alike, so a soft hair
edge is not drowned by the large flat areas) and a temporal term on frame differences; we keep all
three, the temporal one only where two keyframes are consecutive. The foreground head would drift
as the shared features move, so it is held (L1, where the roto says there is foreground) to what the
base network predicted on the same plate pixels.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PYRAMID_LEVELS = 5
#: The paper's weight of the temporal terms.
TEMPORAL_WEIGHT = 5.0
#: The foreground hold's weight against the alpha terms.
FOREGROUND_WEIGHT = 1.0

_GAUSS_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = (_GAUSS_1D[:, None] * _GAUSS_1D[None, :]).to(x)
    channels = x.shape[1]
    weight = kernel.expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), weight, groups=channels)


def laplacian_pyramid(x: torch.Tensor, levels: int = PYRAMID_LEVELS) -> list[torch.Tensor]:
    """Band-pass levels of N×C×H×W images, finest first; the last level is the remaining low-pass."""
    bands = []
    current = x
    for _ in range(levels - 1):
        if min(current.shape[-2:]) < 2:
            break
        down = _blur(current)[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def laplacian_loss(pred: torch.Tensor, true: torch.Tensor, levels: int = PYRAMID_LEVELS) -> torch.Tensor:
    """The paper's pyramid loss: L1 per level, weighted 2^level, averaged over the levels."""
    pairs = list(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(true, levels), strict=True))
    total = sum((2.0**level) * F.l1_loss(p, t) for level, (p, t) in enumerate(pairs))
    return total / len(pairs)


def alpha_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """L1 + Laplacian on T×1×H×W alphas of one window, plus the temporal term over consecutive frames."""
    loss = F.l1_loss(pred, true) + laplacian_loss(pred, true)
    if pred.shape[0] > 1:
        loss = loss + TEMPORAL_WEIGHT * F.mse_loss(pred[1:] - pred[:-1], true[1:] - true[:-1])
    return loss


def foreground_hold(pred: torch.Tensor, target: torch.Tensor, true_alpha: torch.Tensor) -> torch.Tensor:
    """L1 of T×3×H×W foregrounds against the base network's, where the roto has any foreground."""
    mask = (true_alpha > 0).to(pred.dtype)
    covered = mask.sum() * 3
    if covered == 0:
        return pred.sum() * 0.0
    return (torch.abs(pred - target) * mask).sum() / covered
