"""The writer's fast path (issue 15 item 3): premultiplying straight into half floats, and writing halves as given.

Both must leave the file exactly as the float32 path wrote it: the same half bits in every channel,
the same clamp at the half range, the same header.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch

from rvm_vfx import compositing
from rvm_vfx.color import ColorPipeline
from rvm_vfx.frame_io import HALF_MAX, ImageHeader, write_exr

SRGB_TX = "sRGB - Texture"


@pytest.fixture(scope="module")
def pipeline() -> ColorPipeline:
    return ColorPipeline()


def _frame(height: int, width: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene-linear plate with highlights past the half range and subnormal-small values, and a matte
    that is solid, empty and soft in about equal parts."""
    rng = np.random.default_rng(seed)
    plate = rng.uniform(0.0, 4.0, (height, width, 3)).astype(np.float32)
    plate[0, :4] = [[70000.0, 1e5, 65519.0], [65520.0, 65504.0, -1e6], [1e-7, -3e-8, 6e-5], [np.inf, 0.5, -0.0]]
    alpha = rng.uniform(-0.5, 1.5, (height, width)).clip(0.0, 1.0).astype(np.float32)
    alpha[0, :4] = 1.0
    fgr_shift = rng.uniform(-0.05, 0.05, (height, width, 3)).astype(np.float32)
    return plate, alpha, fgr_shift


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).view(np.uint16)


@pytest.mark.parametrize(
    ("plate_space", "output_space"), [("ACEScg", "ACEScg"), ("ACEScg", "lin_rec709"), (SRGB_TX, "ACEScg")]
)
@pytest.mark.parametrize("strip_values", [None, 4 * 37 * 5])  # the default, and strips of 5 rows (the last one short)
def test_half_compose_is_the_float_compose_narrowed(
    pipeline: ColorPipeline, monkeypatch: pytest.MonkeyPatch, plate_space: str, output_space: str, strip_values
) -> None:
    if strip_values is not None:
        monkeypatch.setattr(compositing, "_STRIP_VALUES", strip_values)
    plate, alpha, shift = _frame(23, 37)
    src, _ = pipeline.to_model(plate, plate_space)
    fgr = np.clip(src + shift, 0.0, 1.0)
    full = pipeline.compose_foreground(plate, src, fgr, alpha, plate_space, output_space)
    half = pipeline.compose_foreground(plate, src, fgr, alpha, plate_space, output_space, dtype=np.float16)
    assert full.dtype == np.float32 and half.dtype == np.float16
    assert half.shape == full.shape == (23, 37, 4)
    # torch's float-to-half (the writer's conversion) is the reference: IEEE round to nearest even.
    assert np.array_equal(_bits(half), _bits(torch.from_numpy(full).half().numpy()))


def test_compose_refuses_other_dtypes(pipeline: ColorPipeline) -> None:
    plate, alpha, _ = _frame(2, 5)
    with pytest.raises(ValueError) as caught:
        pipeline.compose_foreground(plate, plate, plate, alpha, "ACEScg", "ACEScg", dtype=np.float64)
    assert str(caught.value) == "compose_foreground makes float32 or float16 pixels, not float64"


def _header(height: int, width: int) -> ImageHeader:
    return ImageHeader(width=width, height=height, x=3, y=-2, attributes={"shot": "sh010"})


def test_half_pixels_write_the_same_file_as_float_pixels(tmp_path: Path) -> None:
    plate, alpha, _ = _frame(19, 29)
    rgba = np.concatenate([plate * alpha[..., None], alpha[..., None]], axis=2)
    halves = torch.from_numpy(rgba).half().numpy()  # holds +/-Inf where the plate is past the half range
    kept = halves.copy()
    write_exr(tmp_path / "float.exr", rgba, _header(19, 29), "ACEScg", {"rvm:shot": 0})
    write_exr(tmp_path / "half.exr", halves, _header(19, 29), "ACEScg", {"rvm:shot": 0})
    assert np.array_equal(_bits(halves), _bits(kept))  # the caller's halves are not clamped in place
    with OpenEXR.File(str(tmp_path / "float.exr")) as a, OpenEXR.File(str(tmp_path / "half.exr")) as b:
        assert np.array_equal(_bits(a.channels()["RGBA"].pixels), _bits(b.channels()["RGBA"].pixels))
        written = b.channels()["RGBA"].pixels
        assert float(written[0, 0, 0]) == HALF_MAX and float(written[0, 1, 2]) == -HALF_MAX
        head_a = {k: v for k, v in a.header().items() if k != "capDate"}
        head_b = {k: v for k, v in b.header().items() if k != "capDate"}
        assert head_a.keys() == head_b.keys()
        assert repr(head_a) == repr(head_b)


def test_every_half_is_written_as_given_except_inf_which_is_clamped(tmp_path: Path) -> None:
    # All 65536 half bit patterns (subnormals, -0.0, HALF_MAX, +/-Inf, every NaN), as RGBA.
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(128, 128, 4)
    kept = halves.copy()
    write_exr(tmp_path / "every.exr", halves, _header(128, 128), "ACEScg", {})
    assert np.array_equal(_bits(halves), _bits(kept))
    with OpenEXR.File(str(tmp_path / "every.exr")) as written:
        back = written.channels()["RGBA"].pixels
    inf = np.isinf(halves)
    assert int(inf.sum()) == 2
    assert np.array_equal(back[inf], np.where(halves[inf] > 0, HALF_MAX, -HALF_MAX).astype(np.float16))
    nan = np.isnan(halves)
    assert np.isnan(back[nan]).all()  # still NaN (torch's clamp quiets a signalling NaN's payload)
    finite = ~(inf | nan)
    assert np.array_equal(_bits(back[finite]), _bits(halves[finite]))


def test_halves_without_inf_are_written_bit_for_bit(tmp_path: Path) -> None:
    plate, alpha, _ = _frame(41, 67)
    rgba = np.concatenate([plate * alpha[..., None], alpha[..., None]], axis=2)
    halves = np.clip(rgba, -HALF_MAX, HALF_MAX).astype(np.float16)
    write_exr(tmp_path / "m.exr", halves, _header(41, 67), "ACEScg", {}, "piz")
    with OpenEXR.File(str(tmp_path / "m.exr")) as written:
        assert np.array_equal(_bits(written.channels()["RGBA"].pixels), _bits(halves))


def test_the_writer_premultiplies_into_halves_unless_a_straight_foreground_is_asked() -> None:
    # The straight foreground divides the premultiplied float32 colour by alpha: from halves it would differ.
    from rvm_vfx.render_outputs import compose_dtype

    assert compose_dtype({"output": "m.exr", "alpha_output": "a.exr"}) == np.float16
    assert compose_dtype({"output": "m.exr", "fg_output": "f.exr"}) == np.float32


def _typed_plate(path: Path, height: int, width: int) -> None:
    """A plate whose header holds every kind of attribute a studio's EXRs carry."""
    import OpenImageIO as oiio

    spec = oiio.ImageSpec(width, height, 3, "half")
    spec.x, spec.y, spec.full_x, spec.full_y, spec.full_width, spec.full_height = 4, -3, 0, 0, width + 8, height + 2
    spec.attribute("worldToCamera", oiio.TypeDesc("matrix"), tuple(float(i) / 7 for i in range(16)))
    spec.attribute("m33", oiio.TypeDesc("matrix33"), tuple(float(i) for i in range(9)))
    spec.attribute("cropBox", oiio.TypeDesc("box2i"), (1, 2, 3, 4))
    spec.attribute("smpte:TimeCode", oiio.TypeTimeCode, (0x01020304, 0x11))
    spec.attribute("framesPerSecond", oiio.TypeRational, (24000, 1001))
    spec.attribute("lens", oiio.TypeDesc("float2"), (1.5, 2.5))
    spec.attribute("pivot", oiio.TypeDesc("vector"), (0.1, 0.2, 0.3))
    spec.attribute("grid", oiio.TypeDesc("int[2]"), (7, 9))
    spec.attribute("notes", oiio.TypeDesc("string[2]"), ("take 3", "ünïcode"))
    spec.attribute("owner", "alice")
    spec.attribute("frame", 1001)
    spec.attribute("exposure", 0.25)
    spec.attribute("PixelAspectRatio", 2.0)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.full((height, width, 3), 0.5, np.float16))
    out.close()


@pytest.mark.parametrize(("channels", "compression"), [(4, "zip"), (4, "dwaa"), (3, "piz"), (1, "none")])
def test_the_openexr_writer_writes_the_header_openimageio_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int, compression: str
) -> None:
    import OpenImageIO as oiio

    from rvm_vfx import frame_io

    _typed_plate(tmp_path / "plate.exr", 11, 13)
    header = frame_io.read_image(tmp_path / "plate.exr").header
    assert "worldToCamera" in header.attributes and "smpte:TimeCode" in header.attributes
    pixels = np.linspace(-2.0, 7e4, 11 * 13 * channels, dtype=np.float32).reshape(11, 13, channels)
    provenance = {"rvm:model": "mobilenetv3/deep_guided_filter", "rvm:downsample_ratio": 0.25, "rvm:shot": 2}
    write_exr(tmp_path / "fast.exr", pixels, header, "ACEScg", provenance, compression)
    monkeypatch.setattr(frame_io, "_write_exr_file", frame_io._write_with_openimageio)
    write_exr(tmp_path / "oiio.exr", pixels, header, "ACEScg", provenance, compression)

    def described(name: str) -> list[str]:
        inp = oiio.ImageInput.open(str(tmp_path / name))
        text = inp.spec().serialize("text", "detailed").splitlines()
        inp.close()
        return [line for line in text if "DateTime" not in line]  # the second it was written

    assert described("fast.exr") == described("oiio.exr")
    with OpenEXR.File(str(tmp_path / "fast.exr")) as fast, OpenEXR.File(str(tmp_path / "oiio.exr")) as slow:
        head_fast = {k: v for k, v in fast.header().items() if k != "capDate"}
        head_slow = {k: v for k, v in slow.header().items() if k != "capDate"}
        assert repr(head_fast) == repr(head_slow)
        assert repr(fast.channels()) == repr(slow.channels())
        for name, channel in slow.channels().items():
            assert np.array_equal(_bits(fast.channels()[name].pixels), _bits(channel.pixels))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.exr", "oiio.exr", "plate.exr"]


def test_openexr_writer_failure_is_an_oserror_naming_the_cause(tmp_path: Path) -> None:
    from rvm_vfx import frame_io
    from rvm_vfx.errors import OutputError

    (tmp_path / "renders").write_text("not a folder")
    out = tmp_path / "renders" / "m.exr"
    with pytest.raises(OutputError) as caught:
        write_exr(out, np.zeros((2, 3, 4), np.float32), ImageHeader(width=3, height=2), "ACEScg", {})
    assert str(caught.value).startswith(f"{out}: cannot write EXR: ")
    assert "Not a directory" in str(caught.value)
    assert frame_io._write_exr_file is not frame_io._write_with_openimageio


def test_a_disk_that_fills_after_the_header_keeps_the_old_frame_and_names_the_cause(tmp_path: Path) -> None:
    """The header (OpenImageIO's one-pixel write) fits, the frame (OpenEXR's) does not: on a real tmpfs."""
    import re

    from rvm_vfx.errors import OutputError

    from .test_worker_helpers import fill_up, mounted_tmpfs

    header = ImageHeader(width=256, height=256)
    with mounted_tmpfs(tmp_path / "disk", "1m") as mount:
        out = mount / "m.exr"
        write_exr(out, np.zeros((256, 256, 4), np.float32), header, "ACEScg", {}, "none")
        before = out.read_bytes()
        fill_up(mount, leave=64 * 1024)  # room for a header, not for 512 kB of uncompressed halves
        with pytest.raises(OutputError) as caught:
            write_exr(out, np.ones((256, 256, 4), np.float32), header, "ACEScg", {}, "none")
        message = str(caught.value)
        assert message.startswith(f"{out}: cannot write EXR: Failed to write pixel data to image file "), message
        assert re.search(
            rf"\(No space left on device: \d+ KiB free of 1024 KiB on the file system of {re.escape(str(mount))}\)$",
            message,
        ), message
        assert sorted(os.listdir(mount)) == ["filler.bin", "m.exr"]
        assert out.read_bytes() == before
