"""MattingSession: recurrent state across calls, snapshots, resets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvm_vfx.errors import InputError
from rvm_vfx.session import MattingSession, load_snapshot, save_snapshot

from .conftest import GOLDEN


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.from_numpy(np.load(GOLDEN / "synth_src.npy"))


def test_step_matches_the_official_golden_frames(model, frames) -> None:
    session = MattingSession(model, downsample_ratio=0.5)
    phas = [session.step(frames[t : t + 1])[1] for t in range(3)]
    golden = np.load(GOLDEN / "synth_r0.5_pha.npy")
    # The engine's inference copy (BatchNorm folded, channels-last) vs the official PyTorch code's output:
    # another implementation's float32 sums, as in test_model's golden test; worst 6.4e-4 (1 thread, ATen
    # default) over oneDNN AVX2 / AVX-512 / AMX, ATen avx2 / default and 1-16 threads. 1e-3 failed nowhere
    # yet but left only 1.6x; 2e-3 is the golden test's own bound.
    assert np.abs(torch.cat(phas).numpy() - golden).max() < 2e-3
    assert session.frames_seen == 3


def test_clip_step_equals_single_steps(model, frames) -> None:
    a = MattingSession(model, downsample_ratio=0.5)
    b = MattingSession(model, downsample_ratio=0.5)
    fgr_clip, pha_clip = a.step(frames)
    singles = [b.step(frames[t : t + 1]) for t in range(3)]
    # A batch of 3 vs 3 batches of 1: other oneDNN work splits (see test_model); worst 1.5e-4 over the ISAs.
    np.testing.assert_allclose(pha_clip.numpy(), torch.cat([s[1] for s in singles]).numpy(), atol=5e-4)
    assert fgr_clip.shape == (3, 3, 192, 256) and pha_clip.shape == (3, 1, 192, 256)


def test_snapshot_restore_is_exact_and_serialisable(model, frames, tmp_path) -> None:
    session = MattingSession(model, downsample_ratio=0.5)
    session.step(frames[0:1])
    save_snapshot(tmp_path / "s.pt", session.snapshot())
    expected = session.step(frames[1:2])[1]

    fresh = MattingSession(model, downsample_ratio=0.5)
    fresh.restore(load_snapshot(tmp_path / "s.pt"))
    assert fresh.frames_seen == 1 and fresh.frame_size == (192, 256)
    assert torch.equal(fresh.step(frames[1:2])[1], expected)


def test_reset_forgets_and_size_change_resets_with_a_warning(model, frames) -> None:
    warnings: list[str] = []
    session = MattingSession(model, downsample_ratio=0.5, on_warning=warnings.append)
    first = session.step(frames[0:1])[1]
    session.step(frames[1:2])
    session.reset()
    assert torch.equal(session.step(frames[0:1])[1], first)

    session.step(frames[0:1, :, :96, :128])
    assert warnings == ["frame size changed from 256×192 to 128×96: recurrent state reset"]
    assert session.frames_seen == 1


def test_auto_ratio_and_bad_settings(model) -> None:
    session = MattingSession(model)
    assert session.ratio_for(2160, 3840) == pytest.approx(512 / 3840)
    with pytest.raises(InputError, match="precision fp16 needs a GPU"):
        MattingSession(model, precision="fp16", device="cpu")
    with pytest.raises(InputError, match=r"downsample ratio must be in \(0, 1\], got 1.5"):
        MattingSession(model, downsample_ratio=1.5)
    with pytest.raises(InputError, match="device 'cuda' was requested but no CUDA device is available"):
        MattingSession(model, device="cuda")


def test_bf16_stays_close_on_cpu(model, frames) -> None:
    """bf16 is opt-in; report how far it moves alpha (the README quotes it)."""
    fp32 = MattingSession(model, downsample_ratio=0.5)
    bf16 = MattingSession(model, downsample_ratio=0.5, precision="bf16")
    a = torch.cat([fp32.step(frames[t : t + 1])[1] for t in range(3)])
    b = torch.cat([bf16.step(frames[t : t + 1])[1] for t in range(3)])
    err = float((a - b).abs().max())
    print(f"bf16 max |alpha error| vs fp32 on the golden frames: {err:.4f}")
    # Measured 0.072-0.086 (oneDNN AVX2 emulates bf16, AVX-512 BF16 and AMX compute it; thread counts move
    # it too): far above the 1e-3 a default would need, so bf16 stays opt-in. The refiner runs in fp32
    # regardless; without that the error was 1.0, which 0.3 (3.5x the worst seen) still catches.
    assert 1e-3 < err < 0.3


def test_fp16_weights_keep_the_guided_filter_in_float32(model, frames) -> None:
    """The session's fp16 network (half weights, as on a GPU) run here on the CPU, which computes in half too.

    The fast guided filter divides local covariances by local variances of nearly equal moments. With its
    inputs and arithmetic in half it broke down; the network now runs it in float32 and the session keeps its
    weights in float32. Its inputs still come from a half network, and in flat regions it amplifies their
    rounding, so fp16 stays a GPU speed option, not a match for fp32.
    """
    from rvm_vfx.model.batchnorm_folding import optimize_for_inference
    from rvm_vfx.session import network_for_precision

    cpu = torch.device("cpu")
    fp32 = network_for_precision(optimize_for_inference(model), cpu, "fp32")
    fp16 = network_for_precision(optimize_for_inference(model), cpu, "fp16")
    assert next(fp16.backbone.parameters()).dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in fp16.refiner.parameters())
    rec32: list = [None] * 4
    rec16: list = [None] * 4
    errors = []
    with torch.inference_mode():
        for t in range(3):
            _, pha32, *rec32 = fp32(frames[t : t + 1], *rec32, downsample_ratio=0.5)
            _, pha16, *rec16 = fp16(frames[t : t + 1].half(), *rec16, downsample_ratio=0.5)
            errors.append((pha32 - pha16.float()).abs())
    err = torch.cat(errors)
    mean, far = float(err.mean()), float((err > 0.1).float().mean())
    print(f"fp16 vs fp32 alpha on the golden frames: mean {mean:.2e}, {far:.2%} of pixels off by > 0.1")
    # Measured on this Xeon (AMX): mean 1.2e-3 to 1.6e-3 and 0.36-0.48 % of pixels past 0.1 per frame; with the
    # filter in half it was 5.0e-3 to 6.7e-3 and 1.3-1.7 %. The bounds sit about 2x above the first and below
    # the second, for CPUs whose half kernels round differently (AVX-512 FP16 computes half, others convert).
    assert mean < 3e-3
    assert far < 1e-2
