"""Frame ranges, sequence patterns, gap handling and video frames, on real files."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.errors import ImageReadError, InputError, MissingFramesError
from rvm_vfx.sequence import (
    FrameSource,
    ImageSequence,
    VideoSource,
    format_frame,
    format_frames,
    open_source,
    parse_frames,
    resolve_frames,
)

FOOTAGE = Path("/work/shared/data/footage")


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _exr(path: Path, value: float) -> None:
    spec = oiio.ImageSpec(8, 4, 3, "half")
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    out.write_image(np.full((4, 8, 3), value, np.float32))
    out.close()


# ------------------------------------------------------------------------------------------ frame ranges


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1001-1100", list(range(1001, 1101))),
        ("1001-1050,1060-1100", list(range(1001, 1051)) + list(range(1060, 1101))),
        ("1001", [1001]),
        ("1-10x2", [1, 3, 5, 7, 9]),
        ("1-10:3", [1, 4, 7, 10]),
        ("20, 1-3 3-5", [1, 2, 3, 4, 5, 20]),
        ("-3--1", [-3, -2, -1]),
    ],
)
def test_parse_frames(text: str, expected: list[int]) -> None:
    assert parse_frames(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad frame range '': empty"),
        ("1001-1100,abc", "bad frame range '1001-1100,abc': 'abc' is not N, A-B or A-BxSTEP"),
        ("1100-1001", "bad frame range '1100-1001': '1100-1001' ends before it starts"),
        ("1-10x0", "bad frame range '1-10x0': '1-10x0' has a step below 1"),
        ("1-99999999", "bad frame range '1-99999999': more than 1000000 frames"),
    ],
)
def test_parse_frames_errors(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_frames(text)
    assert str(caught.value) == message


def test_format_frames_is_compact_and_parses_back() -> None:
    assert format_frames([1003, 1004, 1005, 1010]) == "1003-1005, 1010"
    assert format_frames([1, 3, 5, 7, 20, 21]) == "1-7x2, 20-21"
    assert format_frames([]) == ""
    rng = np.random.default_rng(1)
    for _ in range(50):
        frames = sorted({int(f) for f in rng.integers(990, 1030, size=int(rng.integers(1, 30)))})
        assert parse_frames(format_frames(frames, limit=1000)) == frames


def test_format_frames_truncates_long_lists() -> None:
    every_third_pair = [f for start in range(0, 300, 3) for f in (start, start + 1)]
    text = format_frames(every_third_pair, limit=3)
    assert text == "0-1, 3-4, 6-7, ... (97 more)"


@pytest.mark.parametrize(
    ("pattern", "frame", "expected"),
    [
        ("out/matte.####.exr", 7, "out/matte.0007.exr"),
        ("out/matte.####.exr", 12345, "out/matte.12345.exr"),
        ("out/matte.%04d.exr", 1001, "out/matte.1001.exr"),
        ("out/matte.%d.exr", 42, "out/matte.42.exr"),
        ("out/matte.$F4.exr", 3, "out/matte.0003.exr"),
        ("out/matte.$F.exr", 3, "out/matte.3.exr"),
        ("out/matte.${F6}.exr", 3, "out/matte.000003.exr"),
        ("out/matte.@@@.exr", 3, "out/matte.003.exr"),
        ("out/matte_#.exr", -5, "out/matte_-5.exr"),
    ],
)
def test_format_frame(pattern: str, frame: int, expected: str) -> None:
    assert format_frame(pattern, frame) == expected


def test_format_frame_needs_a_token() -> None:
    with pytest.raises(InputError) as caught:
        format_frame("out/matte.exr", 1)
    assert str(caught.value) == "out/matte.exr: no frame number in the output pattern; use ####, %04d or $F4"


def test_two_tokens_are_refused() -> None:
    with pytest.raises(InputError) as caught:
        format_frame("out/matte.####.%04d.exr", 1)
    assert str(caught.value) == "out/matte.####.%04d.exr: more than one frame number token (####, %04d)"


def test_token_in_folder_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        ImageSequence("shots/####/plate.exr")
    assert str(caught.value) == (
        "shots/####/plate.exr: the frame number token must be in the file name, not the folder"
    )


# ------------------------------------------------------------------------------------------- sequences


@pytest.fixture
def plates(tmp_path: Path) -> Path:
    folder = tmp_path / "plates"
    _touch(
        folder,
        *(f"plate.{f:04d}.exr" for f in [1001, 1002, 1006, 1007, 1008, 1009]),
        "plate.10000.exr",  # past the padding: still this sequence
        "plate.01003.exr",  # another padding: another sequence, not frame 1003
        ".plate.1004.exr.123.abcd.tmp.exr",  # a writer's temporary file
        "notes.txt",
        "thumb.jpg",
    )
    return folder


@pytest.mark.parametrize("token", ["####", "%04d", "$F4", "${F4}", "@@@@"])
def test_pattern_syntaxes(plates: Path, token: str) -> None:
    seq = ImageSequence(plates / f"plate.{token}.exr")
    assert seq.frames() == [1001, 1002, 1006, 1007, 1008, 1009, 10000]
    assert (seq.first, seq.last) == (1001, 10000)
    assert seq.padding == 4
    assert seq.pattern == str(plates / f"plate.{token}.exr")
    assert seq.path(1003) == str(plates / "plate.1003.exr")
    assert seq.path(7) == str(plates / "plate.0007.exr")


def test_explicit_padding_excludes_other_spellings(tmp_path: Path) -> None:
    _touch(tmp_path, "plate.998.exr", "plate.0999.exr", "plate.01000.exr", "plate.1001.exr")
    seq = ImageSequence(tmp_path / "plate.####.exr")
    assert seq.frames() == [999, 1001]
    assert ImageSequence(tmp_path / "plate.###.exr").frames() == [998, 1001]


def test_unpadded_pattern(tmp_path: Path) -> None:
    _touch(tmp_path, *(f"shot_{f}.png" for f in range(8, 13)))
    for pattern in ("shot_$F.png", "shot_%d.png", "shot_#.png"):
        seq = ImageSequence(tmp_path / pattern)
        assert seq.frames() == [8, 9, 10, 11, 12], pattern
        assert seq.path(9) == str(tmp_path / "shot_9.png")


def test_single_frame_path_is_its_sequence(plates: Path) -> None:
    seq = ImageSequence(plates / "plate.1006.exr")
    assert seq.pattern == str(plates / "plate.####.exr")
    assert seq.frames() == [1001, 1002, 1006, 1007, 1008, 1009, 10000]


def test_single_unpadded_frame_finds_its_padding_from_siblings(tmp_path: Path) -> None:
    _touch(tmp_path, *(f"shot_{f}.png" for f in range(8, 13)))
    seq = ImageSequence(tmp_path / "shot_12.png")
    assert seq.padding == 1
    assert seq.frames() == [8, 9, 10, 11, 12]


def test_folder_with_one_sequence(tmp_path: Path) -> None:
    folder = tmp_path / "plates"
    _touch(folder, *(f"plate.{f:04d}.exr" for f in range(1001, 1006)), "notes.txt", "thumb.jpg")
    seq = ImageSequence(folder)
    assert seq.pattern == str(folder / "plate.####.exr")
    assert seq.frames() == [1001, 1002, 1003, 1004, 1005]


def test_folder_scan_outvotes_stray_paddings(plates: Path) -> None:
    seq = ImageSequence(plates)
    assert seq.pattern == str(plates / "plate.####.exr")
    assert seq.frames() == [1001, 1002, 1006, 1007, 1008, 1009, 10000]


def test_folder_with_several_sequences(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    _touch(folder, *(f"plate.{f:04d}.exr" for f in range(1001, 1006)), *(f"ref_{f}.jpg" for f in range(1, 4)))
    with pytest.raises(InputError) as caught:
        ImageSequence(folder)
    assert str(caught.value) == (
        f"{folder}: 2 image sequences in this folder, pass one as a pattern: "
        f"{folder / 'plate.####.exr'} (1001-1005); {folder / 'ref_#.jpg'} (1-3)"
    )


def test_folder_without_sequence(tmp_path: Path) -> None:
    _touch(tmp_path, "notes.txt", "still.exr")
    with pytest.raises(InputError) as caught:
        ImageSequence(tmp_path)
    assert str(caught.value) == f"{tmp_path}: no numbered image sequence in this folder"


def test_path_without_frame_number(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        ImageSequence(tmp_path / "still.exr")
    assert str(caught.value) == (
        f"{tmp_path / 'still.exr'}: not an image sequence: no frame number; use a pattern such as "
        "plate.####.exr or pass the folder of frames"
    )


def test_empty_sequence_has_no_bounds(tmp_path: Path) -> None:
    seq = ImageSequence(tmp_path / "plate.####.exr")
    assert seq.frames() == []
    with pytest.raises(MissingFramesError) as caught:
        _ = seq.first
    assert str(caught.value) == f"{tmp_path / 'plate.####.exr'}: no frames on disk"


def test_read_through_the_sequence(tmp_path: Path) -> None:
    for frame, value in [(1, 0.25), (2, 0.75)]:
        _exr(tmp_path / f"plate.{frame:04d}.exr", value)
    seq = ImageSequence(tmp_path / "plate.%04d.exr")
    assert isinstance(seq, FrameSource)
    assert float(seq.read(1).rgb.mean()) == 0.25
    assert float(seq.read(2).rgb.mean()) == 0.75
    with pytest.raises(ImageReadError) as caught:
        seq.read(3)
    assert str(caught.value) == f"{tmp_path / 'plate.0003.exr'}: file not found"


# ----------------------------------------------------------------------------------------- gap handling


@pytest.fixture
def gappy(tmp_path: Path) -> ImageSequence:
    present = [f for f in range(1001, 1021) if f not in (1003, 1004, 1005, 1010)]
    _touch(tmp_path, *(f"plate.{f:04d}.exr" for f in present))
    return ImageSequence(tmp_path / "plate.####.exr")


def test_missing_frames_are_named(gappy: ImageSequence) -> None:
    with pytest.raises(MissingFramesError) as caught:
        resolve_frames(gappy, parse_frames("1001-1020"), "error")
    assert str(caught.value) == f"{gappy.pattern}: missing frames 1003-1005, 1010 (of 1001-1020)"


def test_whole_range_by_default_catches_inner_gaps(gappy: ImageSequence) -> None:
    with pytest.raises(MissingFramesError) as caught:
        resolve_frames(gappy)
    assert str(caught.value) == f"{gappy.pattern}: missing frames 1003-1005, 1010 (of 1001-1020)"


def test_frames_outside_the_plate_are_missing(gappy: ImageSequence) -> None:
    with pytest.raises(MissingFramesError) as caught:
        resolve_frames(gappy, [999, 1000, 1001, 1021], "error")
    assert str(caught.value) == f"{gappy.pattern}: missing frames 999-1000, 1021 (of 999-1001, 1021)"


def test_complete_range_maps_to_itself(gappy: ImageSequence) -> None:
    assert resolve_frames(gappy, parse_frames("1011-1014"), "error") == [
        (1011, 1011),
        (1012, 1012),
        (1013, 1013),
        (1014, 1014),
    ]


def test_hold_repeats_the_last_good_frame(gappy: ImageSequence) -> None:
    mapping = dict(resolve_frames(gappy, parse_frames("999-1012"), "hold"))
    assert mapping == {
        999: 1001,  # before the first frame: the first one
        1000: 1001,
        1001: 1001,
        1002: 1002,
        1003: 1002,
        1004: 1002,
        1005: 1002,
        1006: 1006,
        1007: 1007,
        1008: 1008,
        1009: 1009,
        1010: 1009,
        1011: 1011,
        1012: 1012,
    }
    assert dict(resolve_frames(gappy, [1025], "hold")) == {1025: 1020}


def test_hold_with_nothing_on_disk(tmp_path: Path) -> None:
    seq = ImageSequence(tmp_path / "plate.####.exr")
    with pytest.raises(MissingFramesError) as caught:
        resolve_frames(seq, [1, 2, 3], "hold")
    assert str(caught.value) == f"{seq.pattern}: missing frames 1-3 (of 1-3)"


def test_unknown_missing_policy(gappy: ImageSequence) -> None:
    with pytest.raises(InputError) as caught:
        resolve_frames(gappy, [1001], "black")
    assert str(caught.value) == "unknown missing-frames policy 'black'; accepted: error, hold"


# ---------------------------------------------------------------------------------------------- video


def _decode_directly(path: Path, count: int) -> list[np.ndarray]:
    """The first frames as PyAV itself decodes them: the reference for frame numbering."""
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0)
            if len(frames) == count:
                return frames
    raise AssertionError("video too short")


@pytest.mark.parametrize(
    ("name", "count", "size", "rate", "timecode"),
    [
        ("01_dog.mp4", 289, (720, 1280), Fraction(30000, 1001), (0, 0)),  # tagged 00:00:00:00
        ("05_default_juggle.mp4", 247, (720, 1280), Fraction(24), None),
        ("bedroom.mp4", 200, (540, 960), Fraction(30), None),
    ],
)
def test_video_frame_count_and_size(
    name: str, count: int, size: tuple[int, int], rate: Fraction, timecode: tuple[int, int] | None
) -> None:
    with VideoSource(FOOTAGE / name, start_frame=1001) as video:
        assert video.frames() == list(range(1001, 1001 + count))
        assert (video.first, video.last) == (1001, 1000 + count)
        assert (video.height, video.width) == size
        assert video.frame_rate == rate
        plate = video.read(1001)
        assert plate.rgb.shape == (*size, 3)
        assert plate.rgb.dtype == np.float32 and plate.rgb.flags.c_contiguous
        assert 0.0 <= float(plate.rgb.min()) and float(plate.rgb.max()) <= 1.0
        assert float(plate.rgb.std()) > 0.05
        assert plate.colorspace is None and not plate.is_float
        assert (plate.header.width, plate.header.height) == (size[1], size[0])
        expected = {"rvm:source_video": str(FOOTAGE / name), "framesPerSecond": (rate.numerator, rate.denominator)}
        if timecode is not None:
            expected["smpte:TimeCode"] = timecode
        assert plate.header.attributes == expected


def test_video_frames_are_numbered_exactly() -> None:
    path = FOOTAGE / "01_dog.mp4"
    reference = _decode_directly(path, 10)
    video = VideoSource(path, start_frame=1)
    try:
        # In order, then a step back (decoder restarts), then a repeat (cached): always frame N.
        for frame in (1, 3, 10, 4, 4, 2):
            np.testing.assert_array_equal(video.read(frame).rgb, reference[frame - 1], err_msg=str(frame))
        assert not np.array_equal(reference[0], reference[9])  # the check above can tell frames apart
    finally:
        video.close()


def test_video_frame_outside_range() -> None:
    path = FOOTAGE / "bedroom.mp4"
    with VideoSource(path, start_frame=1001) as video:
        with pytest.raises(ImageReadError) as caught:
            video.read(1000)
        assert str(caught.value) == f"{path}: frame 1000 is outside the video (1001-1200)"


def test_video_through_resolve_frames() -> None:
    with VideoSource(FOOTAGE / "bedroom.mp4") as video:
        assert resolve_frames(video, [1, 2, 200], "error") == [(1, 1), (2, 2), (200, 200)]
        with pytest.raises(MissingFramesError) as caught:
            resolve_frames(video, [199, 200, 201, 202], "error")
        assert str(caught.value) == f"{FOOTAGE / 'bedroom.mp4'}: missing frames 201-202 (of 199-202)"


def test_mov_is_read_like_the_mp4_it_was_remuxed_from(tmp_path: Path) -> None:
    # QuickTime is what editorial hands over; remuxing (no re-encode) keeps the frames identical.
    source = FOOTAGE / "bedroom.mp4"
    mov = tmp_path / "bedroom.mov"
    with av.open(str(source)) as src, av.open(str(mov), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    source_kind = open_source(str(mov), start_frame=1001)
    assert isinstance(source_kind, VideoSource)
    with source_kind as video, VideoSource(source, start_frame=1001) as reference:
        assert video.frames() == reference.frames() == list(range(1001, 1201))
        for frame in (1001, 1002, 1100):
            np.testing.assert_array_equal(video.read(frame).rgb, reference.read(frame).rgb, err_msg=str(frame))


def test_mkv_without_stored_frame_count(tmp_path: Path) -> None:
    path = tmp_path / "ramp.mkv"
    levels = [16, 64, 128, 192, 240]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=24)  # lossless, so values can be checked exactly
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for level in levels:
            image = np.full((48, 64, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the case the packet count exists for
    with VideoSource(path) as video:
        assert video.frames() == [1, 2, 3, 4, 5]
        for frame, level in zip([5, 2, 3], [levels[4], levels[1], levels[2]], strict=True):
            np.testing.assert_array_equal(video.read(frame).rgb, np.float32(level) / np.float32(255.0))


def test_unreadable_video(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(ImageReadError) as caught:
        VideoSource(path)
    assert str(caught.value).startswith(f"{path}: cannot read video: ")
    with pytest.raises(ImageReadError) as caught:
        VideoSource(tmp_path / "missing.mov")
    assert str(caught.value) == f"{tmp_path / 'missing.mov'}: file not found"


def test_open_source_picks_the_kind(tmp_path: Path) -> None:
    with open_source(FOOTAGE / "bedroom.mp4", start_frame=1001) as video:
        assert isinstance(video, VideoSource) and video.first == 1001
    _touch(tmp_path, "plate.0001.exr")
    sequence = open_source(tmp_path / "plate.####.exr", layer="diffuse")
    assert isinstance(sequence, ImageSequence) and sequence.layer == "diffuse"
    assert sequence.frames() == [1]
    assert os.path.basename(sequence.path(1)) == "plate.0001.exr"
