"""The contract's frame numbers: range syntax and its limits, formatting, and sequence name tokens."""

from __future__ import annotations

import random

import pytest

from rvm_vfx.spec.errors import InputError
from rvm_vfx.spec.frames import (
    MAX_FRAMES,
    FramePattern,
    format_frame,
    format_frames,
    frame_bounds,
    frame_digits,
    has_frame_token,
    parse_frames,
    range_parts,
    split_numbered,
    split_pattern,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1001", [1001]),
        ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
        ("1001-1003,1010", [1001, 1002, 1003, 1010]),
        ("1001-1003, 1010", [1001, 1002, 1003, 1010]),
        ("1001-1003 1010", [1001, 1002, 1003, 1010]),
        (" 1-10x3 ", [1, 4, 7, 10]),
        ("1-10:3", [1, 4, 7, 10]),
        ("1-5,3-7", [1, 2, 3, 4, 5, 6, 7]),
        ("-3--1,0", [-3, -2, -1, 0]),
        ("0001-0003", [1, 2, 3]),
        ("5-5", [5]),
    ],
)
def test_parse_frames(text: str, expected: list[int]) -> None:
    assert parse_frames(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad frame range '': empty"),
        (" , ", "bad frame range ' , ': empty"),
        ("1001-1100,abc", "bad frame range '1001-1100,abc': 'abc' is not N, A-B or A-BxSTEP"),
        ("1.5-2", "bad frame range '1.5-2': '1.5-2' is not N, A-B or A-BxSTEP"),
        ("1-10y2", "bad frame range '1-10y2': '1-10y2' is not N, A-B or A-BxSTEP"),
        ("1100-1001", "bad frame range '1100-1001': '1100-1001' ends before it starts"),
        ("1-10x0", "bad frame range '1-10x0': '1-10x0' has a step below 1"),
        ("1-99999999", "bad frame range '1-99999999': more than 1000000 frames"),
        ("1-1000001", "bad frame range '1-1000001': more than 1000000 frames"),
        ("1-600000,700000-1300000", "bad frame range '1-600000,700000-1300000': more than 1000000 frames"),
    ],
)
def test_parse_frames_errors(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_frames(text)
    assert str(caught.value) == message


def test_the_limit_is_exactly_a_million_frames() -> None:
    assert MAX_FRAMES == 1_000_000
    assert len(parse_frames("1-1000000")) == MAX_FRAMES
    assert parse_frames("1-2000000x2")[-1] == 1_999_999


def test_range_parts_and_bounds() -> None:
    assert range_parts(" 1001-1010,, 1020 ") == ["1001-1010", "1020"]
    assert frame_bounds("1020, 1001-1010") == (1001, 1020)


def test_format_frames_is_compact() -> None:
    assert format_frames([1003, 1004, 1005, 1010]) == "1003-1005, 1010"
    assert format_frames([1, 3, 5, 7, 20, 21]) == "1-7x2, 20-21"
    assert format_frames([1, 3]) == "1, 3"
    assert format_frames([5, 5, 4]) == "4-5"
    assert format_frames([-2, -1, 0]) == "-2-0"
    assert format_frames([]) == ""


def test_format_frames_truncates_long_lists() -> None:
    every_third_pair = [f for start in range(0, 300, 3) for f in (start, start + 1)]
    assert format_frames(every_third_pair, limit=3) == "0-1, 3-4, 6-7, ... (97 more)"
    assert format_frames(every_third_pair, limit=None).count(",") == 99
    assert len(format_frames(every_third_pair).split(", ")) == 21  # 20 groups and the count of the rest


def test_format_and_parse_round_trip() -> None:
    rng = random.Random(12)
    for _ in range(200):
        frames = sorted(set(rng.sample(range(-50, 2000), rng.randint(1, 60))))
        assert parse_frames(format_frames(frames, limit=None)) == frames


# ------------------------------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    ("pattern", "frame", "expected"),
    [
        ("/o/m.####.exr", 7, "/o/m.0007.exr"),
        ("/o/m.#.exr", 1001, "/o/m.1001.exr"),
        ("/o/m.%04d.exr", 7, "/o/m.0007.exr"),
        ("/o/m.%4d.exr", 7, "/o/m.0007.exr"),
        ("/o/m.%d.exr", 7, "/o/m.7.exr"),
        ("/o/m.$F4.exr", 7, "/o/m.0007.exr"),
        ("/o/m.$F.exr", 7, "/o/m.7.exr"),
        ("/o/m.${F4}.exr", 7, "/o/m.0007.exr"),
        ("/o/m.@@@@.exr", 7, "/o/m.0007.exr"),
        ("/o/m.####.exr", -7, "/o/m.-0007.exr"),
        ("/o/m.##.exr", 12345, "/o/m.12345.exr"),
        ("m_####_v2.exr", 3, "m_0003_v2.exr"),
    ],
)
def test_format_frame_every_token(pattern: str, frame: int, expected: str) -> None:
    assert format_frame(pattern, frame) == expected
    assert has_frame_token(pattern)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/o/matte.exr", "/o/matte.exr: no frame number in the output pattern; use ####, %04d or $F4"),
        ("/o/m.####.%04d.exr", "/o/m.####.%04d.exr: more than one frame number token (####, %04d)"),
        ("/o/####/m.exr", "/o/####/m.exr: the frame number token must be in the file name, not the folder"),
    ],
)
def test_format_frame_errors(pattern: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        format_frame(pattern, 1)
    assert str(caught.value) == message


def test_split_pattern() -> None:
    assert split_pattern("/p/plate.####.exr") == FramePattern("/p", "plate.", 4, ".exr")
    assert split_pattern("/p/plate.%06d.exr") == FramePattern("/p", "plate.", 6, ".exr")
    assert split_pattern("/p/plate.1001.exr") is None
    assert split_pattern("/p/plate.$F4.exr").hashes() == "/p/plate.####.exr"
    assert split_pattern("/p/plate.%d.exr").name(12) == "plate.12.exr"
    assert not has_frame_token("/shots/####/plate.exr")


def test_frame_digits_keep_the_sign_outside_the_padding() -> None:
    assert [frame_digits(f, 4) for f in (0, 7, -7, 12345)] == ["0000", "0007", "-0007", "12345"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plate.1001.exr", ("plate.", "1001", ".exr")),
        ("plate_v2.0001.exr", ("plate_v2.", "0001", ".exr")),
        ("shot1001a.dpx", ("shot", "1001", "a.dpx")),
        ("plate.exr", None),
    ],
)
def test_split_numbered_takes_the_last_number(name: str, expected) -> None:
    assert split_numbered(name) == expected
