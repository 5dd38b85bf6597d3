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


def _large_copies(network: MattingNetwork, frame: torch.Tensor, states: list[torch.Tensor | None]) -> list[list[int]]:
    """The shapes of the 4-D tensors one step copies whole (``aten::copy_``) at 1/8 of the frame's size or more.

    Smaller ones are the encoder's deepest layers, which CPU convolution kernels for tiny images repack.
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        network(frame, *states, downsample_ratio=1.0)
    least = frame.shape[2] * frame.shape[3] // 64
    return [
        shape
        for event in prof.events()
        if event.name == "aten::copy_" and event.input_shapes and len(shape := event.input_shapes[0]) == 4
        if shape[2] * shape[3] >= least
    ]


def test_channels_last_network_keeps_its_state_channels_last(model: MattingNetwork) -> None:
    """A plane-major recurrent state turned every concatenation after it plane-major, and each convolution then
    copied its whole input into channels-last (512×288: a fifth of the frame's time)."""
    fast = optimize_for_inference(model)
    frame = torch.rand(1, 3, 144, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _, _, *states = fast(frame, downsample_ratio=1.0)
    assert all(state.is_contiguous(memory_format=torch.channels_last) for state in states)
    # The only large copy left is the plate itself, taken channels-last once on the way in (before: 14 more,
    # the decoder's concatenations at 1/8, 1/4, 1/2 and full size).
    assert _large_copies(fast, frame, states) == [[1, 3, 144, 256]]


def test_plane_major_state_gives_the_same_frame(model: MattingNetwork) -> None:
    """A state saved plane-major (an older snapshot, a caller's own zeros) is taken channels-last, same values."""
    fast = optimize_for_inference(model)
    frames = torch.rand(2, 1, 3, 72, 128, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        _, _, *states = fast(frames[0], downsample_ratio=1.0)
        want = fast(frames[1], *states, downsample_ratio=1.0)
        got = fast(frames[1], *[state.contiguous() for state in states], downsample_ratio=1.0)
    for a, b in zip(got, want, strict=True):
        assert a.is_contiguous(memory_format=torch.channels_last) == b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b)
