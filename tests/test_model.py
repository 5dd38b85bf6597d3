"""The network itself: official layout, official numbers, official call."""

from __future__ import annotations

import ast

import numpy as np
import OpenImageIO as oiio
import pytest
import torch

from rvm_vfx.model import MattingNetwork, auto_downsample_ratio
from rvm_vfx.model.batchnorm_folding import optimize_for_inference

from .conftest import DATA, GOLDEN, SHARED


def _reference_layout(variant: str) -> dict[str, tuple[tuple[int, ...], str]]:
    layout = {}
    for line in (SHARED / "reference" / f"state_dict_{variant}.txt").read_text().splitlines():
        key, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        layout[key] = (tuple(ast.literal_eval(shape)), dtype)
    return layout


@pytest.mark.parametrize(("variant", "params"), [("mobilenetv3", 3_748_633), ("resnet50", 26_890_461)])
def test_state_dict_matches_official_layout(variant: str, params: int) -> None:
    model = MattingNetwork(variant)
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert ours == _reference_layout(variant)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
@pytest.mark.parametrize("refiner", ["deep_guided_filter", "fast_guided_filter"])
def test_every_variant_and_refiner_runs(variant: str, refiner: str) -> None:
    torch.manual_seed(0)
    model = MattingNetwork(variant, refiner).eval()
    src = torch.rand(2, 3, 70, 94)
    with torch.inference_mode():
        fgr, pha, *rec = model(src, downsample_ratio=0.5)
        seg, *rec2 = model(src, downsample_ratio=0.5, segmentation_pass=True)
    assert fgr.shape == (2, 3, 70, 94) and pha.shape == (2, 1, 70, 94)
    assert float(fgr.min()) >= 0 and float(fgr.max()) <= 1 and float(pha.min()) >= 0 and float(pha.max()) <= 1
    widths = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}[variant]
    # 70×94 at ratio 0.5 is 35×47: states at 1/2, 1/4, 1/8, 1/16 of that (ceil-mode pooling).
    assert [tuple(r.shape) for r in rec] == [
        (2, widths[0], 18, 24),
        (2, widths[1], 9, 12),
        (2, widths[2], 5, 6),
        (2, widths[3], 3, 3),
    ]
    assert seg.shape == (2, 1, 35, 47)
    assert all(torch.equal(a, b) for a, b in zip(rec, rec2, strict=True))


def _run_golden(model: torch.nn.Module, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    src = torch.from_numpy(np.load(GOLDEN / "synth_src.npy"))
    rec: list[torch.Tensor | None] = [None] * 4
    fgrs, phas = [], []
    with torch.inference_mode():
        for t in range(src.shape[0]):
            fgr, pha, *rec = model(src[t : t + 1], *rec, downsample_ratio=ratio)
            fgrs.append(fgr)
            phas.append(pha)
    return torch.cat(fgrs).numpy(), torch.cat(phas).numpy()


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_official_weights_reproduce_golden_outputs(model: MattingNetwork, ratio: float) -> None:
    """r1.0 is the official TF.js graph itself; r0.5 the official PyTorch code with the same weights."""
    fgr, pha = _run_golden(model, ratio)
    true_fgr = np.load(GOLDEN / f"synth_r{ratio}_fgr.npy")
    true_pha = np.load(GOLDEN / f"synth_r{ratio}_pha.npy")
    assert fgr.shape == true_fgr.shape and pha.shape == true_pha.shape
    # Another implementation's float32 arithmetic (TF.js's graph; the official PyTorch code at 0.5), so every
    # sum is reassociated: worst 5.1e-4 / 6.5e-4 (pha / fgr) at 1.0 and 6.3e-4 / 1.5e-4 at 0.5, over
    # oneDNN AVX2 / AVX-512 / AMX, ATen avx2 / default / AVX-512 and 1-16 threads (1 thread is the worst).
    assert np.abs(pha - true_pha).max() <= 2e-3
    assert np.abs(fgr - true_fgr).max() <= 2e-3
    assert 0.1 < true_pha.mean() < 0.9  # the clip has both foreground and background to get right


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_inference_copy_computes_the_same(model: MattingNetwork, ratio: float) -> None:
    fast = optimize_for_inference(model)
    fgr, pha = _run_golden(model, ratio)
    fast_fgr, fast_pha = _run_golden(fast, ratio)
    # Folding BatchNorm and channels-last reorder the float arithmetic and take other oneDNN kernels: worst
    # 1.0e-4 (pha, ATen default, 1 thread) / 3.7e-5 (fgr) over the ISAs and threads above; 5e-4 is ~5x that.
    assert np.abs(fast_pha - pha).max() < 5e-4
    assert np.abs(fast_fgr - fgr).max() < 5e-4
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())


def test_clip_call_equals_frame_by_frame(model: MattingNetwork) -> None:
    # oneDNN splits the work of a batch of 3 differently from a batch of 1 (with one thread the two are
    # equal), so sums are reassociated and the decoder carries that through three frames. Worst seen over
    # oneDNN AVX2 / AVX-512 / AMX, ATen avx2 / default and 1-16 threads: pha 1.39e-4 (this Xeon's default),
    # fgr 3.5e-5, recurrent state 7.3e-6; the tolerances are 3.6x, 4.3x and 4.1x those.
    src = torch.from_numpy(np.load(GOLDEN / "synth_src.npy"))
    with torch.inference_mode():
        clip_fgr, clip_pha, *clip_rec = model(src[None], downsample_ratio=0.5)
        rec: list[torch.Tensor | None] = [None] * 4
        for t in range(3):
            fgr, pha, *rec = model(src[t : t + 1], *rec, downsample_ratio=0.5)
            torch.testing.assert_close(clip_fgr[0, t], fgr[0], atol=1.5e-4, rtol=0)
            torch.testing.assert_close(clip_pha[0, t], pha[0], atol=5e-4, rtol=0)
    for a, b in zip(clip_rec, rec, strict=True):
        torch.testing.assert_close(a, b, atol=3e-5, rtol=0)
    assert clip_fgr.shape == (1, 3, 3, 192, 256)


def test_matte_of_a_real_photo_covers_the_person_only(model: MattingNetwork, test_output) -> None:
    """test_fg.jpg: a man beside a car. Regions checked by eye on the 1920×1080 frame."""
    image = oiio.ImageInput.open(str(DATA / "footage" / "test_fg.jpg"))
    pixels = image.read_image(format="float")
    image.close()
    src = torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()
    assert auto_downsample_ratio(1080, 1920) == pytest.approx(512 / 1920)
    rec: list[torch.Tensor | None] = [None] * 4
    with torch.inference_mode():
        for _ in range(3):  # a still, seen as a short clip so the recurrent state settles
            _, pha, *rec = model(src, *rec, downsample_ratio=auto_downsample_ratio(1080, 1920))
    alpha = pha[0, 0].numpy()
    out = oiio.ImageBuf(oiio.ImageSpec(1920, 1080, 1, "uint8"))
    out.set_pixels(oiio.ROI(), np.ascontiguousarray(alpha[..., None]))
    assert out.write(str(test_output / "test_fg_matte.png"))

    def mean(x0: int, x1: int, y0: int, y1: int) -> float:
        return float(alpha[y0:y1, x0:x1].mean())

    assert mean(840, 1000, 280, 480) > 0.95  # shirt
    assert mean(880, 1000, 520, 640) > 0.98  # hips and belt
    assert mean(100, 700, 350, 900) < 0.01  # the car
    assert mean(1300, 1900, 900, 1060) < 0.01  # the street
    assert mean(1300, 1900, 0, 350) < 0.01  # the sky


def test_auto_downsample_ratio() -> None:
    assert auto_downsample_ratio(288, 512) == 1.0
    assert auto_downsample_ratio(2160, 3840) == pytest.approx(512 / 3840)
    assert auto_downsample_ratio(4096, 1024) == 0.125


def test_bad_src_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"src must be B×3×H×W or B×T×3×H×W, got shape \(3, 64, 64\)"):
        MattingNetwork()(torch.rand(3, 64, 64))
