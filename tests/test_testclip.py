"""Tests for rvm_vfx.quality.testclip and ``rvm-vfx make-testclip``: the ground truth must be exact.

Every score we publish rests on the claim that a test clip's alpha is its true alpha; these tests
rebuild each composite from the files written beside it and check that claim to the rounding of
8-bit storage, on the real portraits and backgrounds, and check that the motion really moves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.cli import main
from rvm_vfx.errors import InputError
from rvm_vfx.quality.testclip import Motion, TestClip, composite, load_portrait, open_background, parse_size

from .conftest import DATA

PORTRAIT = DATA / "portraits" / "image" / "p_22fc0130.jpg"  # portrait orientation: letterboxed sides
PORTRAIT_ALPHA = DATA / "portraits" / "alpha" / "p_22fc0130.png"
BACKGROUND = DATA / "backgrounds" / "rw_01.jpg"


def _read_codes(path: Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    arr = np.asarray(buf.get_pixels(oiio.UINT8))
    assert not buf.has_error, buf.geterror()
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _layer(out: Path, layer: str) -> list[Path]:
    return sorted((out / layer).iterdir())


def _synthetic_portrait(tmp_path: Path) -> tuple[Path, Path]:
    """A 200×100 photo with a soft-edged disc of alpha in its middle: easy to track exactly."""
    h, w = 100, 200
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx + 0.5 - w / 2, yy + 0.5 - h / 2)
    alpha = np.clip((20.0 - r) / 4.0 + 0.5, 0.0, 1.0)
    image = np.stack([xx / w, yy / h, np.full_like(r, 0.5)], axis=2)
    tmp_path.mkdir(exist_ok=True)
    paths = tmp_path / "disc.png", tmp_path / "disc_alpha.png"
    for path, pixels in zip(paths, (image, alpha[:, :, None]), strict=True):
        buf = oiio.ImageBuf(oiio.ImageSpec(w, h, pixels.shape[2], oiio.UINT8))
        buf.set_pixels(oiio.ROI(), np.ascontiguousarray(np.rint(pixels * 255).astype(np.uint8)))
        assert buf.write(str(path))
    return paths


def _centroid_x(pha: np.ndarray) -> float:
    weights = pha.astype(np.float64)
    return float((weights * (np.arange(pha.shape[1]) + 0.5)).sum() / weights.sum())


# ------------------------------------------------------------------------------------------ exactness


def test_png_clip_ground_truth_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "clip"
    rc = main(
        [
            "make-testclip", str(PORTRAIT), str(PORTRAIT_ALPHA), str(BACKGROUND), str(out),
            "--frames", "6", "--size", "192x108", "--motion", "shake", "--amplitude", "0.05",
            "--background-motion", "pan", "--background-amplitude", "0.05", "--start-frame", "1001",
        ]
    )  # fmt: skip
    assert rc == 0
    for layer in ("com", "pha", "fgr", "bgr"):
        names = [p.name for p in _layer(out, layer)]
        assert names == [f"{1001 + i:04d}.png" for i in range(6)], layer
    info = json.loads((out / "clip.json").read_text())
    assert info["frames"] == 6 and info["size"] == [192, 108] and info["motion"]["kind"] == "shake"

    worst = 0.0
    for name in (p.name for p in _layer(out, "com")):
        com, fgr, bgr = (_read_codes(out / layer / name).astype(np.float64) / 255 for layer in ("com", "fgr", "bgr"))
        pha = _read_codes(out / "pha" / name).astype(np.float64) / 255
        assert com.shape == (108, 192, 3) and pha.shape == (108, 192, 1)
        rebuilt = fgr * pha + bgr * (1.0 - pha)
        worst = max(worst, float(np.abs(rebuilt - com).max()) * 255)
        # A real matte: solid subject, clean background, soft edges in between.
        assert (pha == 1).any() and (pha == 0).any() and ((pha > 0) & (pha < 1)).any()
    # The composite is rounded to 8 bits once: half a code at most (+1e-6 for the float64 rebuild).
    assert worst <= 0.5 + 1e-6, f"composite off by {worst:.3f} code values"


def test_exr_clip_ground_truth_within_8bit_rounding(tmp_path: Path) -> None:
    """EXR clips are scene-linear plates; the relation holds in sRGB-encoded values."""
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.quality import metrics

    out = tmp_path / "clip"
    args = [str(PORTRAIT), str(PORTRAIT_ALPHA), str(BACKGROUND), str(out), "--frames", "2", "--size", "96x64"]
    assert main(["make-testclip", *args, "--format", "exr"]) == 0
    pipeline = ColorPipeline()
    for frame in ("0000", "0001"):
        layers = {
            layer: pipeline.convert(
                metrics.load_fgr(out / layer / f"{frame}.exr"), pipeline.scene_linear, pipeline.model_space
            )
            for layer in ("com", "fgr", "bgr")
        }
        pha = metrics.load_matte(out / "pha" / f"{frame}.exr")[:, :, None]
        rebuilt = layers["fgr"] * pha + layers["bgr"] * (1.0 - pha)
        # Each layer stored as half and taken back to sRGB through OCIO: measured 0.57 codes; one code allowed.
        assert float(np.abs(rebuilt - layers["com"]).max()) * 255 <= 1.0


def test_composite_rounds_once() -> None:
    fgr = np.array([[[255, 0, 10]]], np.uint8)
    bgr = np.array([[[0, 255, 11]]], np.uint8)
    pha = np.array([[128]], np.uint8)
    # 255·128/255 = 128; 255·127/255 = 127; (10·128 + 11·127)/255 = 10.498 -> 10
    assert composite(fgr, pha, bgr).tolist() == [[[128, 127, 10]]]


# --------------------------------------------------------------------------------------------- motion


def test_pan_moves_by_the_requested_amount(tmp_path: Path) -> None:
    image, alpha = _synthetic_portrait(tmp_path)
    clip = TestClip(load_portrait(image, alpha), open_background(BACKGROUND), 9, (128, 64), Motion("pan", 0.1))
    frames = list(clip)
    assert len(frames) == 9
    shift = _centroid_x(frames[-1].pha) - _centroid_x(frames[0].pha)
    assert shift == pytest.approx(2 * 0.1 * 128, abs=0.3)  # -A·W to +A·W
    steps = np.diff([_centroid_x(f.pha) for f in frames])
    assert steps == pytest.approx(np.full(8, 25.6 / 8), abs=0.2)  # constant speed, sub-pixel steps
    assert not np.array_equal(frames[0].com, frames[-1].com)


@pytest.mark.parametrize("kind", ["zoom", "shake"])
def test_motion_changes_the_frames(tmp_path: Path, kind: str) -> None:
    image, alpha = _synthetic_portrait(tmp_path)
    clip = TestClip(load_portrait(image, alpha), open_background(BACKGROUND), 6, (128, 64), Motion(kind, 0.1, seed=3))
    first, last = clip.frame(0), clip.frame(5)
    assert not np.array_equal(first.pha, last.pha)
    if kind == "zoom":  # grows about the bottom centre: 1.1× wider disc, ~1.21× the coverage
        ratio = last.pha.astype(float).sum() / first.pha.astype(float).sum()
        assert ratio == pytest.approx(1.21, rel=0.03)


def test_static_clip_repeats_and_background_is_still(tmp_path: Path) -> None:
    image, alpha = _synthetic_portrait(tmp_path)
    clip = TestClip(load_portrait(image, alpha), open_background(BACKGROUND), 3, (64, 32), Motion("static"))
    first, last = clip.frame(0), clip.frame(2)
    for a, b in zip(first, last, strict=True):
        assert np.array_equal(a, b)


def test_shake_is_reproducible_by_seed() -> None:
    a, b, c = Motion("shake", 0.05, seed=1), Motion("shake", 0.05, seed=1), Motion("shake", 0.05, seed=2)
    assert [a.at(i, 10, 100) for i in range(10)] == [b.at(i, 10, 100) for i in range(10)]
    assert [a.at(i, 10, 100) for i in range(10)] != [c.at(i, 10, 100) for i in range(10)]
    assert max(abs(a.at(i, 100, 100)[1]) for i in range(100)) <= 5.0


def test_motion_and_size_validation() -> None:
    with pytest.raises(InputError, match="unknown motion 'spin'"):
        Motion("spin")
    with pytest.raises(InputError, match="amplitude"):
        Motion("pan", 2.0)
    assert parse_size("640x360") == (640, 360) and parse_size("640×360") == (640, 360)
    assert parse_size("background") is None
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        parse_size("wide")


# ---------------------------------------------------------------------------------- video backgrounds


def _write_video(path: Path, frames: int, width: int = 96, height: int = 64) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            image[:, :, 1] = (i * 40) % 256  # each frame a different green
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_background_advances_per_frame(tmp_path: Path) -> None:
    video = tmp_path / "bg.mp4"
    _write_video(video, 6)
    out = tmp_path / "clip"
    args = [str(PORTRAIT), str(PORTRAIT_ALPHA), str(video), str(out), "--frames", "5", "--size", "background"]
    assert main(["make-testclip", *args, "--motion", "static"]) == 0
    bgr = [_read_codes(p) for p in _layer(out, "bgr")]
    assert len(bgr) == 5 and bgr[0].shape == (64, 96, 3)
    greens = [float(b[:, :, 1].mean()) for b in bgr]
    assert greens == pytest.approx([0, 40, 80, 120, 160], abs=4)  # codec loss on flat frames, in 8-bit codes


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "bg.mp4"
    _write_video(video, 4)
    rc = main(["make-testclip", str(PORTRAIT), str(PORTRAIT_ALPHA), str(video), str(tmp_path / "a"), "--frames", "8"])
    assert rc == 2
    assert "has 4 frames, the clip needs 8" in capsys.readouterr().err

    rc = main(["make-testclip", str(PORTRAIT), str(DATA / "portraits" / "alpha" / "p_09ba26b4.png"), str(BACKGROUND),
               str(tmp_path / "b"), "--frames", "2"])  # fmt: skip
    assert rc == 2
    assert "1080×1344 but its alpha" in capsys.readouterr().err

    rc = main(["make-testclip", str(tmp_path / "nope.jpg"), str(PORTRAIT_ALPHA), str(BACKGROUND), str(tmp_path / "c")])
    assert rc == 2
    assert "nope.jpg: file not found" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_existing_clip_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, alpha = _synthetic_portrait(tmp_path / "in")  # small inputs: this test runs the command five times
    out = tmp_path / "clip"
    args = ["make-testclip", str(image), str(alpha), str(image), str(out), "--frames", "1", "--size", "32x32"]
    assert main(args) == 0
    assert main(args) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    (out / "pha" / "notes.txt").write_text("kept")
    args[args.index("--frames") + 1] = "3"
    assert main([*args, "--overwrite"]) == 0
    args[args.index("--frames") + 1] = "2"
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "pha").iterdir()) == ["0000.png", "0001.png", "notes.txt"]
