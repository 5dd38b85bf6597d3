"""Plate reading and EXR writing against real files of every plate format, written here with OIIO.

Files are made with OpenImageIO directly (not with ``write_exr``) so that reading is checked against
an independent writer, and ``write_exr``'s output is checked with the separate ``OpenEXR`` package.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import OpenEXR
import OpenImageIO as oiio
import pytest

from rvm_vfx import frame_io
from rvm_vfx.errors import ImageReadError, InputError, OutputError
from rvm_vfx.frame_io import EXR_COMPRESSIONS, ImageHeader, read_image, write_exr
from rvm_vfx.spec import names

H, W = 12, 16


def _write(
    path: Path,
    pixels: np.ndarray,
    fmt: str,
    channels: tuple[str, ...] | None = None,
    attributes: dict[str, object] | None = None,
) -> Path:
    """Write one image with OIIO itself; ``pixels`` H×W×C, float in [0, 1] or integer codes."""
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], fmt)
    if channels:
        spec.channelnames = channels
    for name, value in (attributes or {}).items():
        spec.attribute(name, value)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(np.ascontiguousarray(pixels)), out.geterror()
    out.close()
    return path


def _write_parts(path: Path, parts: list[tuple[str, tuple[str, ...], np.ndarray]]) -> Path:
    """A multi-part EXR: one (part name, channel names, pixels) per part."""
    specs = []
    for name, channels, _ in parts:
        spec = oiio.ImageSpec(W, H, len(channels), "half")
        spec.channelnames = channels
        spec.attribute("name", name)
        specs.append(spec)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), tuple(specs)), out.geterror()
    for index, (_, _, pixels) in enumerate(parts):
        if index:
            assert out.open(str(path), specs[index], "AppendSubimage"), out.geterror()
        assert out.write_image(pixels), out.geterror()
    out.close()
    return path


def _ramp(channels: int = 3) -> np.ndarray:
    """Distinct values per pixel and channel, all exactly representable in half float."""
    values = np.arange(H * W * channels, dtype=np.float32).reshape(H, W, channels) / (H * W * channels)
    return values.astype(np.float16).astype(np.float32)


def _constant(*values: float) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, np.float32), (H, W, len(values))).copy()


# ------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("compression", ["zip", "piz", "dwaa"])
@pytest.mark.parametrize("fmt", ["half", "float"])
def test_exr_values_come_back_unchanged(tmp_path: Path, fmt: str, compression: str) -> None:
    pixels = _ramp() * 8.0  # scene-linear values above 1 must survive
    path = _write(tmp_path / "plate.exr", pixels, fmt, attributes={"compression": compression})
    plate = read_image(path)
    assert plate.rgb.dtype == np.float32 and plate.rgb.shape == (H, W, 3)
    assert plate.rgb.flags.c_contiguous
    # ZIP and PIZ are lossless: exact. DWA is lossy: measured 0.047 on this ramp (values up to 8, where a half
    # step is 0.008); OpenEXR picks its DCT's SSE/AVX code at run time, so leave room for a step either way.
    tolerance = 0.1 if compression == "dwaa" else 0.0
    np.testing.assert_allclose(plate.rgb, pixels, atol=tolerance)
    assert plate.header.is_float and plate.is_float
    assert plate.header.bits == (16 if fmt == "half" else 32)
    assert plate.header.format_name == "openexr"
    assert (plate.header.width, plate.header.height) == (W, H)
    assert plate.warnings == [] and plate.nonfinite == 0


def _detailed_hdr(height: int = 24, width: int = 32) -> np.ndarray:
    """Half-exact RGB: smooth ramps, one-pixel lines (fine detail) and a block of highlights up to ~7.4."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([xx / (width - 1), yy / (height - 1), (xx + yy) / (width + height - 2)], -1) * 0.8 + 0.05
    pixels[::4, :, :] += 0.1  # a bright line every fourth row
    pixels[:, 3::5, 1] += 0.05  # and a faint green one every fifth column
    pixels[8:16, 16:24] *= 10.0  # a hot highlight far above 1.0
    return pixels.astype(np.float16).astype(np.float32)


# Lossy codecs' worst relative error per value on ``_detailed_hdr`` (measured with OpenEXR 3.x: DWA about
# 4.8 %, B44 about 2.5 %), with headroom; the mean error must stay far below that (measured 0.4 %). B44 is
# integer arithmetic on half bits; DWA's float DCT may round a half value one step (0.05 %) apart by CPU.
_LOSSY_RTOL = {"dwaa": 0.08, "dwab": 0.08, "b44": 0.04, "b44a": 0.04}
# PXR24 rounds 32-bit float to 24 bits but stores half exactly.
_LOSSLESS_ON_HALF = {"none", "rle", "zips", "zip", "piz", "pxr24"}


def test_every_compression_is_classed_lossy_or_lossless() -> None:
    assert sorted(EXR_COMPRESSIONS) == sorted(_LOSSLESS_ON_HALF | set(_LOSSY_RTOL))


@pytest.mark.parametrize("compression", EXR_COMPRESSIONS)
def test_half_exr_is_read_in_any_compression(tmp_path: Path, compression: str) -> None:
    pixels = _detailed_hdr()
    path = _write(tmp_path / "plate.exr", pixels, "half", attributes={"compression": compression})
    # The file really uses the codec (else a silent fallback to an uncompressed file would pass).
    enum_name = "NO_COMPRESSION" if compression == "none" else f"{compression.upper()}_COMPRESSION"
    assert OpenEXR.File(str(path)).header()["compression"] == getattr(OpenEXR, enum_name)
    plate = read_image(path)
    assert plate.rgb.dtype == np.float32 and plate.rgb.shape == pixels.shape
    assert plate.header.bits == 16 and plate.warnings == [] and plate.nonfinite == 0
    if compression in _LOSSY_RTOL:
        np.testing.assert_allclose(plate.rgb, pixels, rtol=_LOSSY_RTOL[compression], atol=0)
        assert np.mean(np.abs(plate.rgb - pixels) / pixels) < 0.01
        assert plate.rgb.max() == pytest.approx(pixels.max(), rel=_LOSSY_RTOL[compression])
    else:
        assert compression in _LOSSLESS_ON_HALF
        np.testing.assert_array_equal(plate.rgb, pixels)


def test_integer_formats_are_normalised(tmp_path: Path) -> None:
    codes8 = np.array([0, 51, 128, 255], np.uint8)
    codes16 = np.array([0, 13107, 32768, 65535], np.uint16)
    image8 = np.tile(codes8, (H, W // 4))[:, :, None].repeat(3, axis=2)
    image16 = np.tile(codes16, (H, W // 4))[:, :, None].repeat(3, axis=2)
    expected8 = image8.astype(np.float32) / 255.0
    expected16 = image16.astype(np.float32) / 65535.0

    for name, pixels, fmt, expected, bits in [
        ("p8.tif", image8, "uint8", expected8, 8),
        ("p16.tif", image16, "uint16", expected16, 16),
        ("p8.png", image8, "uint8", expected8, 8),
        ("p16.png", image16, "uint16", expected16, 16),
    ]:
        plate = read_image(_write(tmp_path / name, pixels, fmt))
        np.testing.assert_allclose(plate.rgb, expected, atol=1e-6, err_msg=name)  # code/255 in float32: 1 ulp
        assert not plate.is_float, name
        assert plate.header.bits == bits, name


def test_float_tiff(tmp_path: Path) -> None:
    pixels = _ramp() * 3.0
    plate = read_image(_write(tmp_path / "p32.tif", pixels, "float"))
    np.testing.assert_array_equal(plate.rgb, pixels)
    assert plate.is_float and plate.header.bits == 32 and plate.header.format_name == "tiff"


def test_dpx_10_bit(tmp_path: Path) -> None:
    codes = np.array([0, 64, 512, 940, 1023], np.float32)
    pixels = np.tile(codes, (H, 4))[:, :W, None].repeat(3, axis=2) / 1023.0
    path = _write(tmp_path / "plate.dpx", pixels, "uint16", attributes={"oiio:BitsPerSample": 10})
    plate = read_image(path)
    # OIIO widens 10-bit codes to 16 bits by bit replication: within 1e-5 of code/1023, far finer
    # than the 1/1023 step, so every code comes back as itself.
    np.testing.assert_allclose(plate.rgb, pixels, atol=1e-5)
    assert plate.header.bits == 10 and plate.header.format_name == "dpx" and not plate.is_float
    # DPX packing details describe the file, not the picture: they must not reach the output EXR.
    assert not any(name.startswith("dpx:") for name in plate.header.attributes)


def test_jpeg(tmp_path: Path) -> None:
    pixels = _constant(0.2, 0.5, 0.8)
    plate = read_image(_write(tmp_path / "plate.jpg", pixels, "uint8"))
    np.testing.assert_allclose(plate.rgb, pixels, atol=3 / 255)  # JPEG loss on a flat colour: measured 1.5 codes
    assert plate.header.format_name == "jpeg" and plate.header.bits == 8


def test_shared_portrait_jpeg() -> None:
    path = next(iter(sorted(Path("/work/shared/data/backgrounds").glob("*.jpg"))))
    plate = read_image(path)
    assert plate.rgb.ndim == 3 and plate.rgb.shape[2] == 3
    assert 0.0 <= plate.rgb.min() and plate.rgb.max() <= 1.0
    assert plate.rgb.std() > 0.05  # a real photograph, not a blank decode


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    grey = (np.arange(H * W, dtype=np.float32).reshape(H, W, 1) % 256) / 255.0
    plate = read_image(_write(tmp_path / "grey.png", grey, "uint8"))
    assert plate.rgb.shape == (H, W, 3)
    for channel in range(3):
        np.testing.assert_allclose(plate.rgb[:, :, channel], grey[:, :, 0], atol=1e-6)  # code/255: 1 ulp
    assert plate.warnings == []


def test_grey_plus_alpha_uses_grey_and_warns(tmp_path: Path) -> None:
    pixels = np.concatenate([_constant(0.4), _constant(1.0)], axis=2)
    plate = read_image(_write(tmp_path / "ya.exr", pixels, "half", channels=("Y", "A")))
    np.testing.assert_allclose(plate.rgb, 0.4, atol=1e-3)  # 0.4 stored as half: 0.39990
    assert plate.warnings == [
        "2-channel image (Y, A): RGB made from Y; alpha channel ignored, the matte is computed from the picture"
    ]


def test_rgba_alpha_is_ignored_with_a_warning(tmp_path: Path) -> None:
    pixels = np.concatenate([_constant(0.1, 0.2, 0.3), _constant(0.0)], axis=2)
    plate = read_image(_write(tmp_path / "rgba.png", pixels, "uint8"))
    # 8-bit: at most half a code step. 0.1 and 0.3 are codes 25.5 and 76.5, exactly half a step from both
    # neighbours, so add float32's rounding of those products rather than sit on the boundary.
    np.testing.assert_allclose(plate.rgb, _constant(0.1, 0.2, 0.3), atol=0.5 / 255 + 1e-6)
    assert plate.warnings == ["alpha channel 'A' ignored: the matte is computed from RGB"]


def test_channels_that_cannot_be_rgb(tmp_path: Path) -> None:
    path = _write(tmp_path / "uv.exr", _constant(0.1, 0.2), "half", channels=("R", "G"))
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == (
        f"{path}: cannot make RGB from the channels of the default layer (R, G); "
        "expected R, G, B or a single grey channel"
    )


def test_channels_are_found_by_name_not_position(tmp_path: Path) -> None:
    names = (
        "diffuse.B",
        "A",
        "diffuse.R",
        "B",
        "G",
        "R",
        "diffuse.G",
        "specular.R",
        "specular.G",
        "specular.B",
    )
    # Multiples of 1/16 are exact in half: assert_allclose's default rtol (1e-7) is an exact check here.
    values = {name: (i + 1) / 16 for i, name in enumerate(names)}
    path = _write(tmp_path / "layered.exr", _constant(*values.values()), "half", channels=names)

    beauty = read_image(path)
    np.testing.assert_allclose(beauty.rgb[0, 0], [values["R"], values["G"], values["B"]])
    assert beauty.warnings == ["alpha channel 'A' ignored: the matte is computed from RGB"]

    diffuse = read_image(path, layer="diffuse")
    np.testing.assert_allclose(diffuse.rgb[3, 5], [values["diffuse.R"], values["diffuse.G"], values["diffuse.B"]])
    assert diffuse.warnings == []

    specular = read_image(path, layer="specular")
    np.testing.assert_allclose(specular.rgb[0, 0], [values[f"specular.{c}"] for c in "RGB"])


def test_unknown_layer_names_the_layers_that_exist(tmp_path: Path) -> None:
    names = ("R", "G", "B", "diffuse.R", "diffuse.G", "diffuse.B")
    path = _write(tmp_path / "layered.exr", _constant(*[0.5] * 6), "half", channels=names)
    with pytest.raises(ImageReadError) as caught:
        read_image(path, layer="specular")
    assert str(caught.value) == f"{path}: layer 'specular' not found; layers in the file: rgba, diffuse"


def test_file_without_plain_rgb_needs_a_layer(tmp_path: Path) -> None:
    names = ("diffuse.R", "diffuse.G", "diffuse.B")
    path = _write(tmp_path / "aov.exr", _constant(0.1, 0.2, 0.3), "half", channels=names)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == (f"{path}: no default (unprefixed R, G, B) channels; layers in the file: diffuse")
    np.testing.assert_allclose(read_image(path, "diffuse").rgb[0, 0], [0.1, 0.2, 0.3], atol=1e-3)  # as half


def test_multi_part_exr_layers(tmp_path: Path) -> None:
    path = _write_parts(
        tmp_path / "multipart.exr",
        [
            ("rgba", ("R", "G", "B", "A"), _constant(0.25, 0.5, 0.75, 1.0)),
            ("diffuse", ("diffuse.R", "diffuse.G", "diffuse.B"), _constant(0.125, 0.375, 0.625)),
            ("spec", ("R", "G", "B"), _constant(2.0, 3.0, 4.0)),  # a part holding a layer's plain channels
        ],
    )
    # Exact in half, so the default rtol (1e-7) checks them exactly.
    np.testing.assert_allclose(read_image(path).rgb[0, 0], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(read_image(path, layer="diffuse").rgb[0, 0], [0.125, 0.375, 0.625])
    np.testing.assert_allclose(read_image(path, layer="spec").rgb[0, 0], [2.0, 3.0, 4.0])
    np.testing.assert_allclose(read_image(path, layer="rgba").rgb[0, 0], [0.25, 0.5, 0.75])
    with pytest.raises(ImageReadError) as caught:
        read_image(path, layer="depth")
    assert str(caught.value) == f"{path}: layer 'depth' not found; layers in the file: rgba, diffuse, spec"


def test_nan_and_inf_are_replaced_and_counted(tmp_path: Path) -> None:
    pixels = _constant(0.5, 0.25, 2.0)
    pixels[0, 0, 0] = np.nan
    pixels[1, 2, 1] = np.nan
    pixels[3, 3, 2] = np.inf
    pixels[4, 5, 0] = -np.inf
    path = _write(tmp_path / "bad.exr", pixels, "float")
    plate = read_image(path)
    assert plate.nonfinite == 4
    assert np.isfinite(plate.rgb).all()
    for y, x, c in [(0, 0, 0), (1, 2, 1), (3, 3, 2), (4, 5, 0)]:
        assert plate.rgb[y, x, c] == 0
    assert plate.rgb[0, 0, 1] == 0.25 and plate.rgb[3, 3, 0] == 0.5  # neighbours untouched
    assert plate.warnings == [f"{path}: 4 NaN/Inf values replaced with 0"]


def test_nonfinite_grey_counted_once_per_pixel(tmp_path: Path) -> None:
    grey = _constant(0.5)
    grey[2, 2, 0] = np.nan
    plate = read_image(_write(tmp_path / "grey.exr", grey, "float", channels=("Y",)))
    assert plate.nonfinite == 1
    np.testing.assert_array_equal(plate.rgb[2, 2], [0, 0, 0])


def _every_half() -> np.ndarray:
    """All 65536 half bit patterns (zeros, subnormals, HALF_MAX, +/-Inf, every NaN) as a 128×171×3 plate."""
    bits = np.concatenate([np.arange(2**16, dtype=np.uint16), np.zeros(128 * 171 * 3 - 2**16, np.uint16)])
    return bits.view(np.float16).reshape(128, 171, 3)


def test_a_half_plate_comes_back_value_for_value_and_only_its_nan_and_inf_are_replaced(tmp_path: Path) -> None:
    # Larger than any strip the reader works in (65664 values), with the non-finite values spread over it.
    halves = _every_half()
    path = _write(tmp_path / "every.exr", halves, "half")
    plate = read_image(path)
    expected = halves.astype(np.float32)  # numpy's conversion is exact for every half
    bad = ~np.isfinite(expected)
    assert plate.nonfinite == int(bad.sum()) == 2 * 1023 + 2  # 1023 NaNs of each sign and the two Infs
    expected[bad] = 0.0
    assert plate.rgb.dtype == np.float32 and plate.rgb.flags.c_contiguous
    assert np.array_equal(plate.rgb.view(np.uint32), expected.view(np.uint32))  # -0.0 and subnormals included
    assert plate.warnings == [f"{path}: {plate.nonfinite} NaN/Inf values replaced with 0"]


@pytest.mark.parametrize("fmt", ["half", "float"])
def test_one_nonfinite_value_in_the_last_pixel_is_found(tmp_path: Path, fmt: str) -> None:
    pixels = np.full((97, 203, 3), 65504.0, np.float32)  # the largest half: finite, not to be flagged
    clean = read_image(_write(tmp_path / "clean.exr", pixels, fmt))
    assert clean.nonfinite == 0 and clean.warnings == []
    assert np.array_equal(clean.rgb, pixels)
    pixels[-1, -1, 2] = -np.inf
    path = _write(tmp_path / "last.exr", pixels, fmt)
    plate = read_image(path)
    assert plate.nonfinite == 1 and plate.rgb[-1, -1, 2] == 0.0 and plate.rgb[-1, -1, 1] == 65504.0
    assert plate.warnings == [f"{path}: 1 NaN/Inf values replaced with 0"]


@pytest.mark.parametrize("channels", [("R", "G", "B"), ("R", "G", "B", "A")])  # the whole buffer, a channel slice
@pytest.mark.parametrize("strip", [7, 64 * 3])  # strips of the check ending mid-pixel (and mid-row), and whole pixels
def test_nonfinite_values_are_found_in_any_strip_of_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: tuple[str, ...], strip: int
) -> None:
    monkeypatch.setattr(frame_io, "_CHECK_STRIP", strip)
    halves = np.full((37, 29, len(channels)), 0.5, np.float16)
    clean = read_image(_write(tmp_path / "clean.exr", halves, "half", channels=channels))
    assert clean.nonfinite == 0
    for y, x, c in [(0, 0, 0), (36, 28, 2), (20, 11, 1)]:  # first value, last colour value, one in between
        bad = halves.copy()
        bad[y, x, c] = np.inf if c else np.nan
        plate = read_image(_write(tmp_path / f"bad{y}.exr", bad, "half", channels=channels))
        assert plate.nonfinite == 1 and plate.rgb[y, x, c] == 0.0
        assert np.count_nonzero(plate.rgb == 0.5) == 37 * 29 * 3 - 1


def test_nan_in_a_channel_that_is_not_read_is_not_counted(tmp_path: Path) -> None:
    # Channels stored B, A, G, R: the alpha sits between the colour channels the reader takes.
    pixels = _constant(0.25, np.nan, 0.5, 0.75)
    path = _write(tmp_path / "bagr.exr", pixels, "half", channels=("B", "A", "G", "R"))
    plate = read_image(path)
    assert plate.nonfinite == 0
    np.testing.assert_array_equal(plate.rgb[4, 7], [0.75, 0.5, 0.25])
    assert plate.warnings == ["alpha channel 'A' ignored: the matte is computed from RGB"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.exr"
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: file not found"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.exr"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: file is empty (0 bytes)"


def test_truncated_exr(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.exr", np.random.default_rng(0).random((128, 128, 3), np.float32), "half")
    data = full.read_bytes()
    path = tmp_path / "truncated.exr"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    prefix = f"{path}: cannot read image (truncated or corrupt): "
    message = str(caught.value)
    assert message.startswith(prefix)
    assert len(message) > len(prefix) and "unknown error" not in message  # OIIO's own reason follows
    assert "\n" not in message


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "junk.exr"
    path.write_bytes(b"this is not an image" * 20)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value).startswith(f"{path}: cannot read image (truncated or corrupt): ")


def test_plate_metadata_is_kept_but_structure_is_not(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "plate.exr",
        _ramp(),
        "half",
        attributes={"compression": "dwaa", "shot": "sh010", "oiio:ColorSpace": "ACEScg", "exif:FNumber": 2.8},
    )
    header = read_image(path).header
    assert header.attributes["shot"] == "sh010"
    assert header.attributes["exif:FNumber"] == pytest.approx(2.8)
    assert "compression" not in header.attributes
    assert not any(name.startswith(("oiio:", "openexr:")) for name in header.attributes)
    # What the file claims, reported separately: OIIO stores "ACEScg" as the standard colorInteropID
    # "lin_ap1_scene", and that is what the file carries and what reading reports.
    assert OpenEXR.File(str(path)).header()["colorInteropID"] == "lin_ap1_scene"
    assert header.colorspace == "lin_ap1_scene"


# ------------------------------------------------------------------------------------------- writing


def _header(**overrides: object) -> ImageHeader:
    fields: dict[str, object] = dict(
        width=W, height=H, x=10, y=20, full_x=0, full_y=0, full_width=64, full_height=48, pixel_aspect=2.0
    )
    fields.update(overrides)
    return ImageHeader(**fields)  # type: ignore[arg-type]


def _rgba() -> np.ndarray:
    return _ramp(4) * 4.0


def test_write_exr_round_trip_with_openexr(tmp_path: Path) -> None:
    header = _header(attributes={"owner": "alice", "shot": "sh010"})
    out = tmp_path / "matte.1001.exr"
    rgba = _rgba()
    write_exr(
        out,
        rgba,
        header,
        "ACEScg",
        {"rvm:model": "mobilenetv3", "rvm:preroll": 8, "rvm:downsample_ratio": 0.25, "shot": "sh020"},
        compression="piz",
    )
    exr = OpenEXR.File(str(out), separate_channels=True)
    meta = exr.header()
    channels = exr.channels()
    assert sorted(channels) == ["A", "B", "G", "R"]
    assert all(channel.type() == OpenEXR.HALF for channel in channels.values())
    for index, name in enumerate("RGBA"):
        np.testing.assert_array_equal(channels[name].pixels.astype(np.float32), rgba[:, :, index])
    data_min, data_max = meta["dataWindow"]
    display_min, display_max = meta["displayWindow"]
    assert tuple(data_min) == (10, 20) and tuple(data_max) == (10 + W - 1, 20 + H - 1)
    assert tuple(display_min) == (0, 0) and tuple(display_max) == (63, 47)
    assert meta["pixelAspectRatio"] == 2.0
    assert meta["compression"] == OpenEXR.PIZ_COMPRESSION
    assert meta["type"] == OpenEXR.scanlineimage
    assert meta["owner"] == "alice"
    assert meta["shot"] == "sh020"  # the caller's attributes win over the plate's
    assert meta["rvm:model"] == "mobilenetv3"
    assert meta["rvm:preroll"] == 8
    assert meta["rvm:downsample_ratio"] == pytest.approx(0.25)
    assert meta["rvm:colorspace"] == "ACEScg"
    assert meta["colorInteropID"] == "lin_ap1_scene"  # OIIO's standard name for ACEScg
    assert [p for p in os.listdir(tmp_path) if p != out.name] == []


def test_written_exr_reads_back_with_the_same_header(tmp_path: Path) -> None:
    header = _header(attributes={"shot": "sh010"})
    out = tmp_path / "matte.exr"
    write_exr(out, _rgba(), header, "ACEScg", {})
    back = read_image(out).header
    assert (back.x, back.y, back.width, back.height) == (10, 20, W, H)
    assert (back.full_x, back.full_y, back.full_width, back.full_height) == (0, 0, 64, 48)
    assert back.pixel_aspect == 2.0
    assert back.attributes["shot"] == "sh010"


def test_typed_plate_attributes_keep_their_type(tmp_path: Path) -> None:
    plate_path = tmp_path / "plate.exr"
    spec = oiio.ImageSpec(W, H, 3, "half")
    matrix = tuple(float(i) for i in range(16))
    spec.attribute("worldToCamera", oiio.TypeDesc("matrix"), matrix)
    spec.attribute("cropBox", oiio.TypeDesc("box2i"), (1, 2, 3, 4))
    out = oiio.ImageOutput.create(str(plate_path))
    out.open(str(plate_path), spec)
    out.write_image(_ramp())
    out.close()

    header = read_image(plate_path).header
    write_exr(tmp_path / "matte.exr", np.zeros((H, W, 4), np.float32), header, "lin_rec709", {})
    meta = OpenEXR.File(str(tmp_path / "matte.exr")).header()
    np.testing.assert_array_equal(meta["worldToCamera"], np.arange(16, dtype=np.float32).reshape(4, 4))
    box_min, box_max = meta["cropBox"]
    assert tuple(box_min) == (1, 2) and tuple(box_max) == (3, 4)


def test_alpha_only_write(tmp_path: Path) -> None:
    alpha = _ramp(1)
    out = tmp_path / "alpha.exr"
    write_exr(out, alpha, _header(), "ACEScg", {"rvm:model": "resnet50"})
    channels = OpenEXR.File(str(out), separate_channels=True).channels()
    assert list(channels) == ["A"]
    assert channels["A"].type() == OpenEXR.HALF
    np.testing.assert_array_equal(channels["A"].pixels.astype(np.float32), alpha[:, :, 0])


@pytest.mark.parametrize("compression", EXR_COMPRESSIONS)
def test_every_compression_is_written(tmp_path: Path, compression: str) -> None:
    out = tmp_path / "matte.exr"
    write_exr(out, _rgba(), _header(), "ACEScg", {}, compression=compression)
    enum_name = "NO_COMPRESSION" if compression == "none" else f"{compression.upper()}_COMPRESSION"
    expected = getattr(OpenEXR, enum_name)
    assert OpenEXR.File(str(out)).header()["compression"] == expected


def test_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        write_exr(tmp_path / "m.exr", _rgba(), _header(), "ACEScg", {}, compression="lzw")
    assert str(caught.value) == (
        "unknown EXR compression 'lzw'; accepted: zip, zips, piz, dwaa, dwab, none, rle, pxr24, b44, b44a"
    )
    assert os.listdir(tmp_path) == []


def test_values_beyond_half_range_are_clamped_not_inf(tmp_path: Path) -> None:
    rgba = _rgba()
    rgba[0, 0, 0] = 1e6
    rgba[0, 1, 1] = -1e6
    out = tmp_path / "hot.exr"
    write_exr(out, rgba, _header(), "ACEScg", {})
    red = OpenEXR.File(str(out), separate_channels=True).channels()["R"].pixels
    green = OpenEXR.File(str(out), separate_channels=True).channels()["G"].pixels
    assert float(red[0, 0]) == 65504.0 and float(green[0, 1]) == -65504.0


def test_wrong_pixel_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data window is 16×12"):
        write_exr(tmp_path / "m.exr", np.zeros((H + 1, W, 4), np.float32), _header(), "ACEScg", {})


def test_disk_full_leaves_no_temporary_and_keeps_the_old_frame(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "matte.exr"
    write_exr(out, _rgba(), _header(), "ACEScg", {})
    before = out.read_bytes()

    def fill_disk(path: str, spec: oiio.ImageSpec, pixels: np.ndarray) -> None:
        with open(path, "wb") as handle:
            handle.write(b"\x76\x2f\x31\x01 half a frame")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(frame_io, "_write_exr_file", fill_disk)
    with pytest.raises(OutputError) as caught:
        write_exr(out, np.zeros((H, W, 4), np.float32), _header(), "ACEScg", {})
    assert str(caught.value) == f"{out}: cannot write EXR: [Errno 28] No space left on device"
    assert os.listdir(tmp_path) == ["matte.exr"]
    assert out.read_bytes() == before


def test_failed_rename_removes_the_temporary(tmp_path: Path, monkeypatch) -> None:
    def refuse(source: str, target: str) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)

    monkeypatch.setattr(frame_io.os, "replace", refuse)
    out = tmp_path / "matte.exr"
    with pytest.raises(OutputError) as caught:
        write_exr(out, _rgba(), _header(), "ACEScg", {})
    assert str(caught.value) == f"{out}: cannot write EXR: [Errno 13] Permission denied: '{out}'"
    assert os.listdir(tmp_path) == []


def test_parent_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "renders"
    blocker.write_text("not a folder")
    out = blocker / "matte.exr"
    with pytest.raises(OutputError) as caught:
        write_exr(out, _rgba(), _header(), "ACEScg", {})
    message = str(caught.value)
    assert message.startswith(f"{out}: cannot write EXR: ")
    assert "Not a directory" in message
    assert os.listdir(tmp_path) == ["renders"]


def test_a_frame_is_written_whole_under_the_contracts_temporary_name_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        assert os.path.getsize(src) > 0 and not os.path.exists(dst)
        renamed.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(frame_io.os, "replace", replace)
    target = tmp_path / "matte.1001.exr"
    write_exr(target, _rgba(), _header(), "ACEScg", {})
    ((temporary, final),) = renamed
    folder, base = os.path.split(temporary)
    assert (folder, final) == (str(tmp_path), str(target))
    assert base.startswith(".matte.1001.exr.") and base.endswith(".tmp.exr")
    # The name the worker and the plugins recognise when they clean up after a killed writer.
    assert names.parse_temporary_frame_name(base) == ("matte.1001.exr", os.getpid())
    assert os.listdir(tmp_path) == ["matte.1001.exr"]
