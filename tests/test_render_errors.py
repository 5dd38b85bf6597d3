"""Bad input: each case gets a clear message naming the file, frame or field, and loses nothing written."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.color import ColorPipeline
from rvm_vfx.errors import CheckpointError, ColorSpaceError, ImageReadError, InputError, MissingFramesError, OutputError
from rvm_vfx.job import Job
from rvm_vfx.render import render

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_image, write_sequence

CKPT = str(TFJS_MODEL)


def _plate(tmp_path: Path, frames: int = 4, ext: str = "exr", fmt: str = "half") -> str:
    composites, _ = portrait_clip(frames, 128, 72)
    return write_sequence(tmp_path / "plate", "plate", composites, ext=ext, fmt=fmt)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_missing_frames_are_listed_and_nothing_is_written(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 6)
    for frame in (1003, 1004):
        (tmp_path / "plate" / f"plate.{frame}.exr").unlink()
    out = tmp_path / "out"
    with pytest.raises(MissingFramesError, match=re.escape(f"{pattern}: missing frames 1003-1004 (of 1001-1006)")):
        render(Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=CKPT))
    assert _files(out) == []


def test_missing_frames_held_like_a_nuke_read(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 4)
    (tmp_path / "plate" / "plate.1003.exr").unlink()
    report = render(Job(input=pattern, output=str(tmp_path / "o" / "m.####.exr"), checkpoint=CKPT, missing="hold"))
    assert report.frames_written == [1001, 1002, 1003, 1004]
    spec = oiio.ImageInput.open(str(tmp_path / "o" / "m.1003.exr")).spec()
    assert spec.get_string_attribute("rvm:source").endswith("plate.1002.exr")


@pytest.mark.parametrize("damage", ["truncated", "zero-byte"])
def test_damaged_exr_names_file_and_frame_and_keeps_earlier_frames(tmp_path: Path, damage: str) -> None:
    pattern = _plate(tmp_path, 4)
    bad = tmp_path / "plate" / "plate.1003.exr"
    bad.write_bytes(b"" if damage == "zero-byte" else bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "out"
    expected = "file is empty (0 bytes)" if damage == "zero-byte" else "cannot read image (truncated or corrupt)"
    with pytest.raises(ImageReadError, match=re.escape(f"frame 1003: {bad}: {expected}")):
        render(Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=CKPT))
    # The frames before it are whole and stay; no temporary file is left behind.
    assert _files(out) == ["m.1001.exr", "m.1002.exr"]
    for name in _files(out):
        assert oiio.ImageBuf(str(out / name)).get_pixels(oiio.FLOAT).shape == (72, 128, 4)


def test_nan_and_inf_pixels_are_replaced_counted_and_reported(tmp_path: Path) -> None:
    composites, _ = portrait_clip(2, 128, 72)
    composites[1] = composites[1].copy()
    composites[1][10, 10:15] = np.nan
    composites[1][20, 0] = np.inf
    composites[1][30, 0, 1] = -np.inf
    pattern = write_sequence(tmp_path / "plate", "plate", composites, ext="exr", fmt="float")
    warnings: list[str] = []
    report = render(
        Job(input=pattern, output=str(tmp_path / "o" / "m.####.exr"), checkpoint=CKPT),
        progress=lambda e: warnings.append(e["message"]) if e["event"] == "warning" else None,
    )
    assert report.nonfinite_values == 5 * 3 + 3 + 1
    assert warnings[:2] == [  # (then the clipping note: these sRGB values read as ACEScg leave Rec.709)
        f"{tmp_path / 'plate' / 'plate.1002.exr'}: 19 NaN/Inf values replaced with 0",
        "19 NaN/Inf plate values were replaced with 0 before matting",
    ]
    out = oiio.ImageBuf(str(tmp_path / "o" / "m.1002.exr")).get_pixels(oiio.FLOAT)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("channels", [1, 2])
def test_one_and_two_channel_plates_become_rgb(tmp_path: Path, channels: int) -> None:
    composites, _ = portrait_clip(1, 128, 72)
    grey = composites[0].mean(axis=2, keepdims=True)
    pixels = grey if channels == 1 else np.concatenate([grey, np.ones_like(grey)], axis=2)
    write_image(tmp_path / "plate.0001.png", pixels)
    warnings: list[str] = []
    report = render(
        Job(input=str(tmp_path / "plate.####.png"), output=str(tmp_path / "o.####.exr"), checkpoint=CKPT),
        progress=lambda e: warnings.append(e["message"]) if e["event"] == "warning" else None,
    )
    assert report.frames_written == [1]
    rgba = oiio.ImageBuf(str(tmp_path / "o.0001.exr")).get_pixels(oiio.FLOAT)
    solid = rgba[..., 3] == 1.0
    assert solid.any()
    # Solid foreground is the grey plate itself, repeated into R, G and B and taken to scene-linear.
    stored = oiio.ImageBuf(str(tmp_path / "plate.0001.png")).get_pixels(oiio.FLOAT)[..., :1]
    color = ColorPipeline()
    expected = color.convert(np.repeat(stored, 3, axis=2), color.model_space, color.scene_linear)
    np.testing.assert_array_equal(rgba[solid, :3], expected[solid].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(rgba[solid, 0], rgba[solid, 2])
    if channels == 2:
        assert warnings == [
            "2-channel image (Y, A): RGB made from Y; alpha channel ignored, the matte is computed from the picture"
        ]
    else:
        assert warnings == []


def test_size_change_mid_sequence_resets_the_state_with_a_warning(tmp_path: Path) -> None:
    big, _ = portrait_clip(2, 128, 72)
    small, _ = portrait_clip(2, 96, 54)
    write_sequence(tmp_path / "p", "plate", big + small, ext="png")
    warnings: list[str] = []
    report = render(
        Job(input=str(tmp_path / "p" / "plate.####.png"), output=str(tmp_path / "o" / "m.####.exr"), checkpoint=CKPT),
        progress=lambda e: warnings.append(e["message"]) if e["event"] == "warning" else None,
    )
    assert report.frames_written == [1001, 1002, 1003, 1004]
    assert warnings == ["frame 1003: frame size changed from 128×72 to 96×54: recurrent state reset"]
    assert oiio.ImageInput.open(str(tmp_path / "o" / "m.1004.exr")).spec().width == 96


def test_unknown_colour_space_suggests_close_names(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 1)
    with pytest.raises(
        ColorSpaceError, match=re.escape("unknown colour space 'ACEScgg' (input_colorspace); did you mean: 'ACEScg'")
    ):
        render(
            Job(input=pattern, output=str(tmp_path / "o" / "m.####.exr"), checkpoint=CKPT, input_colorspace="ACEScgg")
        )
    with pytest.raises(ColorSpaceError, match=re.escape("unknown colour space 'lin_rec790' (output_colorspace)")):
        render(
            Job(
                input=pattern,
                output=str(tmp_path / "o" / "m.####.exr"),
                checkpoint=CKPT,
                output_colorspace="lin_rec790",
            )
        )
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 2)
    out = tmp_path / "o"
    out.mkdir()
    (out / "m.1002.exr").write_bytes(b"an artist's earlier render")
    job = Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=CKPT)
    message = f"output exists: {out / 'm.1002.exr'} (1 of 2 frames: 1002); use --overwrite to replace"
    with pytest.raises(InputError, match=re.escape(message)):
        render(job)
    assert (out / "m.1002.exr").read_bytes() == b"an artist's earlier render" and _files(out) == ["m.1002.exr"]
    job.overwrite = True
    assert render(job).frames_written == [1001, 1002]


def test_unwritable_output_folder(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 1)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    message = f"cannot create output folder {blocker / 'sub'}: {os.strerror(errno.ENOTDIR)}"
    with pytest.raises(OutputError, match=re.escape(message) + "$"):
        render(Job(input=pattern, output=str(blocker / "sub" / "m.####.exr"), checkpoint=CKPT))
    assert blocker.read_text() == "a file where the output folder should be"
    assert _files(tmp_path) == ["not_a_folder", "plate"]


@pytest.mark.parametrize("existing", [True, False], ids=["folder", "parent"])
def test_read_only_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    pattern = _plate(tmp_path, 1)
    locked = tmp_path / "locked"
    locked.mkdir()
    folder = locked if existing else locked / "shot" / "v001"
    real_access = os.access
    # The tests run as root, for whom every folder is writable: deny write access the way a mount would.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    expected = (
        f"output folder {locked} is not writable"
        if existing
        else f"cannot create output folder {folder}: {locked} is not writable"
    )
    with pytest.raises(OutputError, match=re.escape(expected) + "$"):
        render(Job(input=pattern, output=str(folder / "m.####.exr"), checkpoint=CKPT))
    assert _files(locked) == []


def test_first_frame_failing_leaves_no_output_folder(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 2)
    bad = tmp_path / "plate" / "plate.1001.exr"
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "renders" / "sh010" / "v001"
    with pytest.raises(ImageReadError, match=re.escape(f"frame 1001: {bad}: cannot read image")):
        render(Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=CKPT))
    assert not (tmp_path / "renders").exists()


def test_disk_full_fails_with_the_cause_and_leaves_no_partial_frame(tmp_path: Path, monkeypatch) -> None:
    import errno

    from rvm_vfx import frame_io

    pattern = _plate(tmp_path, 3)
    real = frame_io._write_exr_file
    calls = {"n": 0}

    def full_disk(path: str, spec, pixels) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            with open(path, "wb") as half_written:
                half_written.write(b"\x76\x2f\x31\x01 half a frame")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, spec, pixels)

    monkeypatch.setattr(frame_io, "_write_exr_file", full_disk)
    out = tmp_path / "o"
    with pytest.raises(
        OutputError, match=re.escape(f"{out / 'm.1002.exr'}: cannot write EXR: [Errno 28] No space left")
    ):
        render(Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=CKPT))
    # Frame 1003 may have been encoding beside 1002 and lands whole; 1002 leaves no trace, not even a temp file.
    assert _files(out)[:1] == ["m.1001.exr"] and "m.1002.exr" not in _files(out)
    assert all(not name.startswith(".") for name in _files(out))
    for name in _files(out):
        assert oiio.ImageBuf(str(out / name)).get_pixels(oiio.FLOAT).shape == (72, 128, 4)


def test_checkpoint_that_is_not_one(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 1)
    fake = tmp_path / "weights.pth"
    fake.write_text("this is not a checkpoint")
    message = f"{fake}: not a checkpoint: neither a PyTorch zip archive nor a pickle"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        render(Job(input=pattern, output=str(tmp_path / "o" / "m.####.exr"), checkpoint=str(fake)))
    assert not (tmp_path / "o").exists()


def test_output_pattern_without_frame_token(tmp_path: Path) -> None:
    pattern = _plate(tmp_path, 1)
    message = f"{tmp_path / 'matte.exr'}: no frame number in the output pattern; use ####, %04d or $F4"
    with pytest.raises(InputError, match=re.escape(message)):
        render(Job(input=pattern, output=str(tmp_path / "matte.exr"), checkpoint=CKPT))
