"""Colour and compositing on the network's device: the same transforms as OCIO, the same compose rule, the same files.

No GPU here: the device path runs on the CPU through ``FramePipeline(device_color=True)``; the CUDA test skips.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import OpenEXR
import OpenImageIO as oiio
import pytest
import torch

from rvm_vfx import device_color
from rvm_vfx import render as render_module
from rvm_vfx.color import ColorPipeline
from rvm_vfx.device_color import (
    CHAIN_TOLERANCE_REL,
    TOLERANCE_ABS,
    TOLERANCE_REL,
    DeviceColor,
    build_transform,
    difference_from_ocio,
)
from rvm_vfx.frame_io import ImageHeader, write_exr
from rvm_vfx.frame_pipeline import FramePipeline
from rvm_vfx.job import Job

from .conftest import TFJS_MODEL
from .plates import portrait_clip

CPU = torch.device("cpu")
ACESCG = "ACEScg"

#: Pairs of the built-in config the device path must cover: plates into the network's space (the scene-linear
#: spaces, ACES2065-1, ACEScct, gamma-encoded), the network's space into the working spaces, outputs.
MUST_COVER = [
    (ACESCG, "sRGB Encoded Rec.709 (sRGB)"),
    ("Linear Rec.709 (sRGB)", "sRGB Encoded Rec.709 (sRGB)"),
    ("ACES2065-1", "sRGB Encoded Rec.709 (sRGB)"),
    ("ACEScct", "sRGB Encoded Rec.709 (sRGB)"),
    ("Gamma 2.2 Encoded Rec.709", "sRGB Encoded Rec.709 (sRGB)"),
    ("sRGB Encoded Rec.709 (sRGB)", ACESCG),
    ("sRGB Encoded Rec.709 (sRGB)", "Linear Rec.709 (sRGB)"),
    (ACESCG, "ACES2065-1"),
    (ACESCG, "Linear Rec.709 (sRGB)"),
    (ACESCG, "ACEScct"),
]


@pytest.fixture(scope="module")
def color() -> ColorPipeline:
    return ColorPipeline()


def _within(got: np.ndarray, want: np.ndarray) -> bool:
    """The module's stated tolerance for a whole chain (ABS + CHAIN_TOLERANCE_REL × the pixel's largest magnitude)."""
    return difference_from_ocio(got, want, CHAIN_TOLERANCE_REL) is not None


def _test_values(seed: int) -> np.ndarray:
    """Values other than the build-time probe's: random over a plate's range, and a real picture, linearised."""
    rng = np.random.default_rng(seed)
    wide = rng.uniform(-0.5, 4.0, (4096, 3)).astype(np.float32)
    unit = rng.uniform(0.0, 1.0, (4096, 3)).astype(np.float32)
    picture = portrait_clip(1, 64, 36)[0][0].reshape(-1, 3)
    return np.ascontiguousarray(np.concatenate([wide, unit, picture]))


def test_the_builtin_configs_supported_pairs_match_ocio(color: ColorPipeline) -> None:
    names = [cs.getName() for cs in color.config.getColorSpaces()]
    values = _test_values(0)
    supported = set()
    for src in names:
        for dst in (color.model_space, color.scene_linear, "Linear Rec.709 (sRGB)", "ACES2065-1", "ACEScct"):
            transform = build_transform(color, src, dst, CPU)
            if transform is None:
                continue
            supported.add((src, dst))
            got = transform(torch.from_numpy(values)).numpy()
            assert _within(got, color.convert(values, src, dst)), (src, dst)
    assert set(MUST_COVER) <= supported
    # Of the 25 spaces × 5: ACEScc (a LUT) and the two PQ displays (LUTs) fall back, in both directions.
    luts = {"ACEScc", "Rec.2100-PQ - Display", "ST2084-P3-D65 - Display"}
    assert not {pair for pair in supported if luts & set(pair)}
    assert len(supported) == 22 * 5


@pytest.mark.parametrize(("src", "dst"), [pair for pair in MUST_COVER if pair[1] == "sRGB Encoded Rec.709 (sRGB)"])
def test_the_network_sees_ocios_values_within_the_op_tolerance(color: ColorPipeline, src: str, dst: str) -> None:
    """Clipped to [0, 1] as to_model does, the network's input from the device is within a small fraction of an 8-bit
    code value (1/255 = 3.9e-3) of OCIO's. Bound: one op's tolerance, except where the sRGB toe (slope 12.92)
    amplifies an earlier op's difference: OCIO's approximate exp in ACEScct's decode reaches 1.1e-4 there (measured;
    OCIO's SSE approximation is the same on any x86-64), so 2.5e-4."""
    values = _test_values(1)
    got = np.clip(build_transform(color, src, dst, CPU)(torch.from_numpy(values)).numpy(), 0.0, 1.0)  # type: ignore[misc]
    want = np.clip(color.convert(values, src, dst), 0.0, 1.0)
    bound = 2.5e-4 if src == "ACEScct" else TOLERANCE_ABS + TOLERANCE_REL
    assert np.abs(got - want).max() <= bound


@pytest.mark.parametrize(
    ("src", "dst", "why"),
    [
        ("ACEScc", "sRGB Encoded Rec.709 (sRGB)", "a Lut1DTransform"),
        ("Rec.2100-PQ - Display", ACESCG, "a Lut1DTransform"),
    ],
)
def test_an_unsupported_pair_falls_back_to_ocio(
    color: ColorPipeline, src: str, dst: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="rvm_vfx.device_color")
    assert build_transform(color, src, dst, CPU) is None
    assert why in caplog.text


def test_a_plate_in_an_unsupported_space_keeps_the_cpu_path(color: ColorPipeline) -> None:
    plate = np.full((4, 6, 3), 0.5, np.float32)
    assert DeviceColor(color, ACESCG, CPU).to_model(plate, "ACEScc") is None
    assert DeviceColor(color, "ACEScc", CPU).to_model(plate, ACESCG) is None  # the output side counts too


def test_an_op_that_disagrees_with_ocio_is_never_used(color: ColorPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    right = device_color._op_for
    assert build_transform(color, ACESCG, color.model_space, CPU) is not None

    def off_by(factor: float):  # noqa: ANN202 - a factory of wrong ops
        def op_for(transform, device):  # noqa: ANN001, ANN202
            op = right(transform, device)
            return None if op is None else (lambda rgb: op(rgb) * factor)

        return op_for

    monkeypatch.setattr(device_color, "_op_for", off_by(1.0002))  # 2e-4: four times the tolerance
    assert build_transform(color, ACESCG, color.model_space, CPU) is None
    monkeypatch.setattr(device_color, "_op_for", off_by(float("nan")))
    assert build_transform(color, ACESCG, color.model_space, CPU) is None


def _model_space_plate(color: ColorPipeline, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ACEScg plate, its model-space values): values in the network's space well clear of 0 and 1, inside and
    outside, so both paths clip exactly the same values."""
    rng = np.random.default_rng(seed)
    model = rng.uniform(-0.4, 1.6, (48, 64, 3)).astype(np.float32)
    near = (np.abs(model) < 1e-2) | (np.abs(model - 1.0) < 1e-2)
    model[near] = 0.5
    plate = color.convert(model, color.model_space, ACESCG)
    return plate, model


def test_to_model_clips_and_counts_as_the_cpu_path(color: ColorPipeline) -> None:
    plate, _ = _model_space_plate(color, 1)
    want, want_fraction = color.to_model(plate, ACESCG)
    frame, fraction = DeviceColor(color, ACESCG, CPU).to_model(plate, ACESCG)  # type: ignore[misc]
    assert fraction == want_fraction
    assert 0.2 < fraction < 0.5
    assert frame.model.min() >= 0.0 and frame.model.max() <= 1.0
    assert _within(frame.model.numpy(), want)
    assert frame.network_input().shape == (1, 3, 48, 64)
    assert np.array_equal(frame.plate.numpy(), plate)  # the plate as read, never written to


def _edge_case_alpha(shape: tuple[int, int]) -> np.ndarray:
    """Alpha with solid, empty, soft and in-ramp (0.99..1) values."""
    rng = np.random.default_rng(2)
    alpha = rng.choice(np.array([0.0, 1.0, 0.5, 0.995, 0.9999, 0.2], np.float32), size=shape)
    alpha[:, :8] = rng.uniform(0.0, 1.0, (shape[0], 8)).astype(np.float32)
    return alpha


@pytest.mark.parametrize(
    ("plate_space", "output_space"),
    [(ACESCG, ACESCG), (ACESCG, "Linear Rec.709 (sRGB)"), ("sRGB Encoded Rec.709 (sRGB)", ACESCG)],
    ids=["linear-own-space", "linear-other-output", "encoded-plate"],
)
def test_compose_follows_compose_foreground(color: ColorPipeline, plate_space: str, output_space: str) -> None:
    rng = np.random.default_rng(3)
    plate = rng.uniform(-0.05, 4.0 if plate_space == ACESCG else 1.0, (32, 40, 3)).astype(np.float32)
    device = DeviceColor(color, output_space, CPU)
    frame, _ = device.to_model(plate, plate_space)  # type: ignore[misc]
    model = frame.model.numpy().copy()
    fgr = np.clip(model + rng.normal(0.0, 0.05, model.shape).astype(np.float32), 0.0, 1.0)
    alpha = _edge_case_alpha(plate.shape[:2])
    want = color.compose_foreground(plate, model, fgr, alpha, plate_space, output_space, np.float16)
    got = device.compose(frame, torch.from_numpy(fgr).permute(2, 0, 1)[None], torch.from_numpy(alpha)[None, None])
    assert got.dtype == np.float16 and got.shape == (32, 40, 4)
    assert np.array_equal(got[..., 3].view(np.uint16), want[..., 3].view(np.uint16))  # alpha: never transformed
    if plate_space == output_space:
        solid = alpha == 1.0
        assert np.array_equal(got[solid].view(np.uint16), want[solid].view(np.uint16))
        assert np.array_equal(got[solid][:, :3], plate[solid].astype(np.float16))  # the plate itself
    # Edges, and every pixel after an output conversion: the transforms' tolerance, then one half rounding step.
    got32, want32 = got.astype(np.float32), want.astype(np.float32)
    assert _within_half(got32, want32)


def _within_half(got: np.ndarray, want: np.ndarray) -> bool:
    """Transform tolerance on values rounded to half: the tolerance plus one half ulp of the value (2**-11 relative)."""
    scale = np.max(np.abs(want), axis=-1, keepdims=True)
    bound = TOLERANCE_ABS + (TOLERANCE_REL + 2.0**-10) * scale + 2.0**-24
    return bool(np.all(np.abs(got - want) <= bound))


# ----------------------------------------------------------------------------- whole renders


def _write_plate(folder: Path, frames: int = 6, width: int = 160, height: int = 96) -> str:
    """A half ACEScg EXR shot on disk, values over 1 included, with metadata to carry over."""
    color = ColorPipeline()
    composites, _ = portrait_clip(frames, width, height)
    folder.mkdir(parents=True)
    attributes = {"Make": "ARRI", "custom:take": "4b"}
    for i, srgb in enumerate(composites):
        linear = color.convert(srgb, color.model_space, ACESCG) * 3.0  # highlights up to 3
        header = ImageHeader(width, height, attributes={**attributes})
        write_exr(str(folder / f"plate.{1001 + i:04d}.exr"), linear, header, ACESCG, {}, "zip")
    return str(folder / "plate.####.exr")


def _render(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pattern: str, name: str, on_device: bool, **fields: object
) -> tuple[list[int], int]:
    """Render ``pattern`` with the device path forced on or off; returns the frames written and how many frames
    were composed on the device."""
    composed = []
    compose = DeviceColor.compose

    def counting(self, *args):  # noqa: ANN001, ANN202
        composed.append(1)
        return compose(self, *args)

    monkeypatch.setattr(DeviceColor, "compose", counting)
    monkeypatch.setattr(render_module, "FramePipeline", functools.partial(FramePipeline, device_color=on_device))
    job = Job(input=pattern, output=str(tmp_path / name / "m.####.exr"), checkpoint=str(TFJS_MODEL), warmup=0, **fields)
    report = render_module.render(job)
    monkeypatch.undo()
    return report.frames_written, len(composed)


def _rgba(path: Path) -> np.ndarray:
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        channels = exr.channels()
        return np.stack([np.array(channels[c].pixels) for c in "RGBA"], axis=-1)


def _attributes(path: Path) -> dict[str, object]:
    spec = oiio.ImageInput.open(str(path)).spec()
    return {a.name: spec.getattribute(a.name) for a in spec.extra_attribs if a.name != "DateTime"}


def test_a_render_on_the_device_path_writes_the_cpu_paths_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern = _write_plate(tmp_path / "plate")
    cpu_frames, cpu_composed = _render(monkeypatch, tmp_path, pattern, "cpu", on_device=False)
    dev_frames, dev_composed = _render(monkeypatch, tmp_path, pattern, "dev", on_device=True)
    assert cpu_frames == dev_frames == list(range(1001, 1007))
    assert (cpu_composed, dev_composed) == (0, 6)
    for frame in dev_frames:
        name = f"m.{frame}.exr"
        cpu, dev = _rgba(tmp_path / "cpu" / name), _rgba(tmp_path / "dev" / name)
        with OpenEXR.File(pattern.replace("####", str(frame)), separate_channels=True) as exr:
            plate = np.stack([np.array(exr.channels()[c].pixels) for c in "RGB"], axis=-1)
        # Alpha: the network fed inputs within the transform tolerance (5e-5 relative, before clipping) moves by
        # up to ~1e-4, and a half rounding step near 1 is 2**-11.
        assert np.abs(cpu[..., 3].astype(np.float32) - dev[..., 3].astype(np.float32)).max() <= 2.0**-11 + 2e-4
        solid = (cpu[..., 3] == 1.0) & (dev[..., 3] == 1.0)
        assert solid.sum() > 2000
        assert np.array_equal(dev[solid].view(np.uint16), cpu[solid].view(np.uint16))
        # The plate itself wherever the network's alpha was exactly 1. A half alpha of 1 also holds float alphas in
        # (1 - 2**-12, 1), whose ramp weight adds a trace of residual (in both paths alike): at most one half ulp.
        plate_bits = np.all(dev[solid][:, :3].view(np.uint16) == plate[solid].view(np.uint16), axis=-1)
        assert plate_bits.mean() >= 0.995
        ulps = np.abs(dev[solid][:, :3].view(np.int16).astype(np.int32) - plate[solid].view(np.int16))
        assert ulps.max() <= 1
        # Edges: the residual of network outputs that moved as alpha did, premultiplied by that alpha; the
        # plate's highlights go to 3, so the bound is relative to the plate's value there, plus the alpha's move.
        edge = (cpu[..., 3] > 0) & (cpu[..., 3] < 1)
        assert edge.sum() > 100
        diff = np.abs(cpu[edge][:, :3].astype(np.float32) - dev[edge][:, :3].astype(np.float32))
        assert diff.max() <= 4e-3 * max(1.0, float(np.abs(plate[edge]).max()))
        assert _attributes(tmp_path / "cpu" / name) == _attributes(tmp_path / "dev" / name)
        assert _attributes(tmp_path / "dev" / name)["custom:take"] == "4b"


def test_a_straight_foreground_keeps_the_cpu_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pattern = _write_plate(tmp_path / "plate", frames=2)
    fg = str(tmp_path / "fg" / "fg.####.exr")
    frames, composed = _render(monkeypatch, tmp_path, pattern, "dev", on_device=True, fg_output=fg)
    assert frames == [1001, 1002]
    assert composed == 0
    assert (tmp_path / "fg" / "fg.1002.exr").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_transforms_and_compose_match_the_cpu(color: ColorPipeline) -> None:
    cuda = torch.device("cuda")
    values = _test_values(4)
    for src, dst in MUST_COVER:
        transform = build_transform(color, src, dst, cuda)
        assert transform is not None, (src, dst)
        got = transform(torch.from_numpy(values).to(cuda)).cpu().numpy()
        assert _within(got, color.convert(values, src, dst)), (src, dst)
    plate, _ = _model_space_plate(color, 5)
    plate = np.abs(plate)
    frames = {dev: DeviceColor(color, ACESCG, dev).to_model(plate, ACESCG) for dev in (CPU, cuda)}
    assert frames[CPU][1] == frames[cuda][1]  # type: ignore[index]
    alpha = _edge_case_alpha(plate.shape[:2])
    fgr = np.clip(frames[CPU][0].model.numpy() * 0.98, 0, 1)  # type: ignore[index]
    out = {}
    for dev, (frame, _) in frames.items():  # type: ignore[misc]
        out[dev] = DeviceColor(color, ACESCG, dev).compose(
            frame, torch.from_numpy(fgr).permute(2, 0, 1)[None].to(dev), torch.from_numpy(alpha)[None, None].to(dev)
        )
    solid = alpha == 1.0
    assert np.array_equal(out[cuda][solid].view(np.uint16), out[CPU][solid].view(np.uint16))
    assert np.array_equal(out[cuda][..., 3].view(np.uint16), out[CPU][..., 3].view(np.uint16))
    assert _within_half(out[cuda].astype(np.float32), out[CPU].astype(np.float32))
