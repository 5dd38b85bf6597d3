"""The network's fast paths compute what the official code computes, and the speed baseline is the official code."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.nn import functional as F

from rvm_vfx.model import MattingNetwork
from rvm_vfx.model.batchnorm_folding import optimize_for_inference
from rvm_vfx.model.refiners import bilinear_rows_matrix, guided_upsample

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from official_forward import OfficialForward  # noqa: E402


def _official_upsample(a: torch.Tensor, b: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official FastGuidedFilter's last lines, then the network's ``fgr = clamp(residual + src)``."""
    guide = torch.cat([src, src.mean(1, keepdim=True)], dim=1)
    big_a = F.interpolate(a, src.shape[2:], mode="bilinear", align_corners=False)
    big_b = F.interpolate(b, src.shape[2:], mode="bilinear", align_corners=False)
    out = big_a * guide + big_b
    return (out[:, :3] + src).clamp(0, 1), out[:, 3:].clamp(0, 1)


@pytest.mark.parametrize(
    ("batch", "height", "width", "low_height", "low_width"),
    [
        (1, 1080, 1920, 270, 480),  # HD at ratio 0.25: a whole factor
        (1, 1080, 1920, 288, 512),  # HD at the automatic ratio 0.2667: fractions that need float rounding
        (2, 37, 53, 11, 15),  # a clip of two odd-sized frames, fewer rows than one strip
        (1, 7, 5, 1, 1),  # a one-pixel network image: every weight clamps to the edge
    ],
)
def test_guided_upsample_equals_the_official_interpolation(
    batch: int, height: int, width: int, low_height: int, low_width: int
) -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(batch, 4, low_height, low_width, generator=generator)
    b = torch.randn(batch, 4, low_height, low_width, generator=generator)
    src = torch.rand(batch, 3, height, width, generator=generator)
    fgr, pha = guided_upsample(a, b, src)
    want_fgr, want_pha = _official_upsample(a, b, src)
    # Same two products per row and column as F.interpolate, summed in another order (a matrix product,
    # (a + 1)·x for a·x + x), and the source positions rounded as its kernel rounds them: 1e-6 holds on
    # AVX2 and AVX-512 kernels alike. Positions computed in double instead give 6e-5 here (the old defect).
    assert (fgr - want_fgr).abs().max().item() < 1e-6
    assert (pha - want_pha).abs().max().item() < 1e-6


def test_rows_matrix_is_interpolate_of_the_identity() -> None:
    identity = torch.eye(288).view(1, 1, 288, 288)
    want = F.interpolate(identity, size=(1080, 288), mode="bilinear", align_corners=False)[0, 0]
    got = bilinear_rows_matrix(1080, 288, torch.device("cpu"), torch.float32)
    assert torch.equal(got, want)


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_official_baseline_computes_the_network(model: MattingNetwork, ratio: float) -> None:
    """The bench's baseline must be the same computation, or the speed ratio compares different work."""
    official = OfficialForward(model)
    fast = optimize_for_inference(model)
    src = torch.rand(3, 1, 3, 144, 256, generator=torch.Generator().manual_seed(1))
    states: dict[str, list[torch.Tensor | None]] = {"official": [None] * 4, "fast": [None] * 4}
    with torch.inference_mode():
        for frame in src:
            fgr_o, pha_o, *states["official"] = official(frame, *states["official"], downsample_ratio=ratio)
            fgr_f, pha_f, *states["fast"] = fast(frame, *states["fast"], downsample_ratio=ratio)
    # BatchNorm folded into the convolutions and channels-last kernels reassociate the sums; the guided
    # filter's division by local variances amplifies that, 3 frames of carried state compound it.
    assert (pha_o - pha_f).abs().max().item() < 1e-4
    assert (fgr_o - fgr_f).abs().max().item() < 1e-4
