"""Plate-size limits, built-in config names, a video's rate and timecode, and how mattes are tagged.

Each case here is one defect from issue 11: a downsample ratio that left the network nothing to look
at (exit 1, filed as ``internal``), a mistyped ``ocio://`` name reported as a missing file, videos
whose mattes lost their frame rate and timecode, and alpha-only outputs tagged as colour.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenEXR
import OpenImageIO as oiio
import PyOpenColorIO as ocio
import pytest
import torch

from render_worker.config import build_config
from render_worker.worker import Worker
from rvm_vfx.cli import main
from rvm_vfx.color import BUILTIN_CONFIG, ColorPipeline, load_config
from rvm_vfx.errors import InputError
from rvm_vfx.job import Job
from rvm_vfx.render import render
from rvm_vfx.sequence import Timecode, VideoSource
from rvm_vfx.session import MattingSession

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence
from .test_color import TINY_CONFIG
from .test_worker_helpers import drop_ticket, jobs_in, make_models_dir, make_plate, torch_threads

CKPT = str(TFJS_MODEL)


def _matte(plate: str, out: Path, *flags: str) -> int:
    return main(["matte", plate, str(out), "--checkpoint", CKPT, "--progress", "json", *flags])


def _last_event(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def _exr_header(path: Path) -> dict:
    """The header as the OpenEXR library reads it: the attribute names Nuke and other readers see."""
    with OpenEXR.File(str(path)) as exr:
        return dict(exr.header())


def _oiio_spec(path: Path) -> oiio.ImageSpec:
    inp = oiio.ImageInput.open(str(path))
    assert inp is not None, oiio.geterror()
    try:
        return inp.spec().copy()
    finally:
        inp.close()


# ------------------------------------------------------------------ 6: ratios too small for the plate


@pytest.fixture
def plate(tmp_path: Path) -> str:
    composites, _ = portrait_clip(2, 128, 72)
    return write_sequence(tmp_path / "plate", "plate", composites)


def test_too_small_ratio_exits_2_naming_the_smallest_that_works(plate: str, tmp_path: Path, capsys) -> None:
    # 72 × 0.01 = 0.72 rows: the bilinear downsample would make an empty image.
    assert _matte(plate, tmp_path / "o" / "m.####.exr", "--downsample", "0.01", "--frames", "1001") == 2
    assert _last_event(capsys)["error"] == {
        "type": "InputError",
        "message": "downsample ratio 0.01 is too small for this 128×72 plate: the network's input would be "
        "1×0 pixels and it needs at least 1×1; use 0.0139 or more",
    }
    assert not (tmp_path / "o").exists()


def test_the_named_ratio_runs_and_just_below_it_is_refused(plate: str, tmp_path: Path, capsys) -> None:
    assert _matte(plate, tmp_path / "low" / "m.####.exr", "--downsample", "0.0138", "--frames", "1001") == 2
    message = _last_event(capsys)["error"]["message"]
    assert message.startswith("downsample ratio 0.0138 is too small for this 128×72 plate")
    named = re.fullmatch(r".*; use ([0-9.]+) or more", message).group(1)
    assert named == "0.0139"
    assert _matte(plate, tmp_path / "ok" / "m.####.exr", "--downsample", named, "--frames", "1001") == 0
    assert _last_event(capsys)["frames_written"] == "1001"
    alpha = oiio.ImageBuf(str(tmp_path / "ok" / "m.1001.exr")).get_pixels(oiio.FLOAT)[..., 3]
    assert alpha.shape == (72, 128) and np.isfinite(alpha).all()
    assert float(_oiio_spec(tmp_path / "ok" / "m.1001.exr").getattribute("rvm:downsample_ratio")) == pytest.approx(
        0.0139
    )


def test_automatic_ratio_too_small_for_a_thin_strip_is_refused_before_the_network(model) -> None:
    # auto brings the long side to 512: 8192 → 512 leaves the 8-pixel side half a pixel.
    session = MattingSession(model, "auto")
    with pytest.raises(InputError) as caught:
        session.step(torch.zeros(1, 3, 8, 8192))
    assert str(caught.value) == (
        "the automatic downsample ratio 0.0625 is too small for this 8192×8 plate: the network's input would be "
        "512×0 pixels and it needs at least 1×1; use 0.125 or more"
    )
    assert session.frames_seen == 0 and session.frame_size is None
    fgr, pha = MattingSession(model, 0.125).step(torch.zeros(1, 3, 8, 8192))
    assert pha.shape == (1, 1, 8, 8192) and torch.isfinite(pha).all()


def test_worker_files_a_too_small_ratio_under_input(tmp_path: Path) -> None:
    plates = tmp_path / "plates"
    make_plate(plates / "shot", 1, 64, 48)
    config = build_config(
        {
            "root": tmp_path / "root",
            "output_root": tmp_path / "out",
            "allow_input_roots": [plates],
            "models_dir": make_models_dir(tmp_path / "models"),
            "default_checkpoint": "rvm",
            "settle": 0.5,
        }
    )
    worker = Worker(config)
    worker.layout.ensure()
    drop_ticket(
        tmp_path / "root",
        "tiny",
        {"input": "shot/plate.####.png", "output": "tiny/m.####.exr", "downsample": 0.001, "device": "cpu"},
    )
    with torch_threads(1):
        assert worker.step()
    [job] = jobs_in(tmp_path / "root", "failed", "tiny-")
    report = json.loads((job / "report.json").read_text())
    assert report["cause"] == "input"
    assert report["reason"] == (
        "downsample ratio 0.001 is too small for this 64×48 plate: the network's input would be 0×0 pixels "
        "and it needs at least 1×1; use 0.0209 or more"
    )


# ------------------------------------------------------------------ 7c: unknown built-in config names


def test_unknown_builtin_config_is_named_as_such_with_the_known_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    with pytest.raises(InputError) as caught:
        load_config("ocio://nope-config")
    message = str(caught.value)
    known = [f"ocio://{name}" for name in ocio.BuiltinConfigRegistry()]
    assert message == (
        f"unknown built-in OCIO config 'ocio://nope-config' (ocio_config): OCIO {ocio.__version__} bundles no "
        "config of that name; built-in configs: ocio://default, ocio://cg-config-latest, ocio://studio-config-latest, "
        + ", ".join(known)
    )
    assert "(from path)" not in message and BUILTIN_CONFIG in known


def test_near_miss_builtin_config_suggests_the_close_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIO", "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.7")
    with pytest.raises(InputError) as caught:
        load_config()
    assert str(caught.value).startswith(
        f"unknown built-in OCIO config 'ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.7' ($OCIO): OCIO "
        f"{ocio.__version__} bundles no config of that name (did you mean {BUILTIN_CONFIG!r}?); built-in configs: "
        "ocio://default, "
    )


def test_builtin_aliases_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    assert load_config("ocio://default").getName() == BUILTIN_CONFIG.removeprefix("ocio://")
    assert load_config("ocio://studio-config-latest").getName().startswith("studio-config-v")


# ------------------------------------------------------------------ 10: a video's rate and timecode


def _movie(path: Path, rate: Fraction, timecode: str | None, frames: int = 3) -> Path:
    """A small QuickTime/MP4 of a real portrait clip; ``timecode`` goes where FFmpeg writes a tmcd track."""
    composites, _ = portrait_clip(frames, 64, 48)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if timecode is not None:
            stream.metadata["timecode"] = timecode
        for pixels in composites:
            rgb = np.ascontiguousarray((pixels * 255 + 0.5).astype(np.uint8))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def _timecode(header: dict) -> tuple[int, int, int, int, bool]:
    tc = header["timeCode"]
    return tc.hours, tc.minutes, tc.seconds, tc.frame, tc.dropFrame


@pytest.mark.parametrize("ext", ["mov", "mp4"])
def test_video_rate_and_timecode_reach_every_exr(tmp_path: Path, ext: str) -> None:
    movie = _movie(tmp_path / f"clip.{ext}", Fraction(24000, 1001), "01:00:00:22")
    out = tmp_path / "o" / "m.####.exr"
    report = render(Job(input=str(movie), output=str(out), checkpoint=CKPT, start_frame=1001))
    assert report.frames_written == [1001, 1002, 1003]
    headers = [_exr_header(tmp_path / "o" / f"m.{frame}.exr") for frame in (1001, 1002, 1003)]
    assert [h["framesPerSecond"] for h in headers] == [Fraction(24000, 1001)] * 3
    # 23.976 fps timecode counts 24 frames a second (non-drop): :22, :23, then the next second.
    assert [_timecode(h) for h in headers] == [(1, 0, 0, 22, False), (1, 0, 0, 23, False), (1, 0, 1, 0, False)]
    spec = _oiio_spec(tmp_path / "o" / "m.1001.exr")
    assert spec.getattribute("framesPerSecond") == (24000, 1001)


def test_drop_frame_timecode_skips_the_dropped_numbers(tmp_path: Path) -> None:
    movie = _movie(tmp_path / "df.mov", Fraction(30000, 1001), "00:00:59;28", frames=4)
    with VideoSource(movie) as video:
        assert video.frame_rate == Fraction(30000, 1001)
        tcs = [video.read(frame).header.attributes["smpte:TimeCode"] for frame in (1, 2, 3, 4)]
    out = tmp_path / "o" / "m.####.exr"
    render(Job(input=str(movie), output=str(out), checkpoint=CKPT, frames="1-4"))
    # Frames :00 and :01 of every minute but each tenth are not counted in drop-frame timecode.
    assert [_timecode(_exr_header(tmp_path / "o" / f"m.{f:04d}.exr")) for f in (1, 2, 3, 4)] == [
        (0, 0, 59, 28, True),
        (0, 0, 59, 29, True),
        (0, 1, 0, 2, True),
        (0, 1, 0, 3, True),
    ]
    # SMPTE 12M BCD as OpenEXR packs it: bit 6 is the drop-frame flag.
    assert tcs[2] == (0x00010042, 0)


def test_drop_frame_timecode_is_kept_across_the_tenth_minute(tmp_path: Path) -> None:
    movie = _movie(tmp_path / "df10.mov", Fraction(30000, 1001), "00:09:59;29", frames=2)
    with VideoSource(movie) as video:
        tcs = [video.read(frame).header.attributes["smpte:TimeCode"] for frame in (1, 2)]
    # Minute 10 keeps its frames 00 and 01.
    assert tcs == [(0x00095969, 0), (0x00100040, 0)]


@pytest.mark.parametrize(
    ("start", "rate", "index", "fields"),
    [
        ("00:00:59;58", Fraction(60000, 1001), 2, (0, 1, 0, 4)),  # 59.94 drops four numbers a minute
        ("00:19:59;29", Fraction(30000, 1001), 1, (0, 20, 0, 0)),  # every tenth minute keeps them
        ("23:59:59:24", Fraction(25), 1, (0, 0, 0, 0)),  # a day wraps round
        ("10:00:00:00", Fraction(24000, 1001), 24 * 3600, (11, 0, 0, 0)),  # 24 counted frames a second
    ],
)
def test_timecode_counting(start: str, rate: Fraction, index: int, fields: tuple[int, int, int, int]) -> None:
    assert Timecode.parse(start, rate).fields(index) == fields


def test_high_rate_timecode_counts_frame_pairs() -> None:
    # The frames field holds 0-29: at 50 fps frame 37 is pair 18, second of the pair (bit 15).
    assert Timecode.parse("00:00:00:37", Fraction(50)).packed(0) == (0x18 | 1 << 15, 0)


@pytest.mark.parametrize("text", ["24:00:00:00", "00:60:00:00", "00:00:00:24", "1 hour", ""])
def test_a_timecode_that_is_not_one_is_refused(text: str) -> None:
    assert Timecode.parse(text, Fraction(24)) is None


def test_video_without_timecode_still_gets_its_rate() -> None:
    from .conftest import DATA

    with VideoSource(DATA / "footage" / "05_default_juggle.mp4") as video:
        header = video.read(1).header
    assert header.attributes == {
        "rvm:source_video": str(DATA / "footage" / "05_default_juggle.mp4"),
        "framesPerSecond": (24, 1),
    }


def test_exr_plate_keeps_its_own_rate_and_timecode(tmp_path: Path) -> None:
    composites, _ = portrait_clip(2, 64, 48)
    folder = tmp_path / "plate"
    folder.mkdir()
    for i, pixels in enumerate(composites):
        tc = OpenEXR.TimeCode()
        tc.hours, tc.minutes, tc.seconds, tc.frame = 10, 20, 30, 4 + i
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "framesPerSecond": Fraction(25, 1), "timeCode": tc}
        channels = {c: np.ascontiguousarray(pixels[..., k]).astype(np.float16) for k, c in enumerate("RGB")}
        with OpenEXR.File(header, channels) as exr:
            exr.write(str(folder / f"plate.{1001 + i}.exr"))
    render(Job(input=str(folder / "plate.####.exr"), output=str(tmp_path / "o" / "m.####.exr"), checkpoint=CKPT))
    for i in range(2):
        header = _exr_header(tmp_path / "o" / f"m.{1001 + i}.exr")
        assert header["framesPerSecond"] == Fraction(25, 1)
        assert _timecode(header) == (10, 20, 30, 4 + i, False)


# ------------------------------------------------------------------ 11: mattes are data


def test_alpha_only_outputs_are_tagged_as_data(plate: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    assert ColorPipeline(load_config(BUILTIN_CONFIG)).data_space == "Raw"  # the cg config's data role
    render(
        Job(
            input=plate,
            output=str(tmp_path / "rgba" / "m.####.exr"),
            alpha_output=str(tmp_path / "alpha" / "a.####.exr"),
            checkpoint=CKPT,
            frames="1001",
        )
    )
    render(
        Job(
            input=plate,
            output=str(tmp_path / "mode" / "m.####.exr"),
            output_mode="alpha",
            checkpoint=CKPT,
            frames="1001",
        )
    )
    for path in (tmp_path / "alpha" / "a.1001.exr", tmp_path / "mode" / "m.1001.exr"):
        spec = _oiio_spec(path)
        assert list(spec.channelnames) == ["A"]
        assert spec.get_string_attribute("rvm:colorspace") == "Raw"
        assert spec.get_string_attribute("oiio:ColorSpace") == "data"
        assert _exr_header(path)["colorInteropID"] == "data"
    rgba = _oiio_spec(tmp_path / "rgba" / "m.1001.exr")
    assert rgba.get_string_attribute("rvm:colorspace") == "ACEScg"  # colour stays colour
    assert rgba.get_string_attribute("oiio:ColorSpace") == "lin_ap1_scene"


def test_alpha_in_a_config_without_a_data_role_is_raw(plate: str, tmp_path: Path) -> None:
    config = tmp_path / "tiny.ocio"
    config.write_text(TINY_CONFIG)
    assert not load_config(str(config)).hasRole("data")
    out = tmp_path / "o" / "m.####.exr"
    render(
        Job(input=plate, output=str(out), output_mode="alpha", ocio_config=str(config), checkpoint=CKPT, frames="1001")
    )
    spec = _oiio_spec(tmp_path / "o" / "m.1001.exr")
    assert spec.get_string_attribute("rvm:colorspace") == "Raw"
    assert spec.get_string_attribute("oiio:ColorSpace") == "data"


def test_a_config_s_own_data_space_is_used_without_a_role(tmp_path: Path) -> None:
    config = tmp_path / "with_data.ocio"
    config.write_text(TINY_CONFIG + "  - !<ColorSpace>\n    name: Utility - Raw\n    isdata: true\n")
    assert ColorPipeline(load_config(str(config))).data_space == "Utility - Raw"
