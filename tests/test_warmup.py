"""Warm start (``warmup``): the frames after a shot's first frame, played in reverse, warm its state.

The order is checked against a render that gets the same frames as real pre-roll: a plate whose frames
before the first are the warm-up frames in the order the engine steps them renders bit-identical pixels.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.color import ColorPipeline
from rvm_vfx.job import Job
from rvm_vfx.passes import shot_limit, warm_plan, warm_sources
from rvm_vfx.render import render
from rvm_vfx.sequence import open_source

from .conftest import TFJS_MODEL
from .plates import portrait_clip


def write_plate(folder: Path, composites: list[np.ndarray], frames: list[int]) -> str:
    """ACEScg half EXRs of sRGB composites, one per frame number (a frame may repeat another's pixels)."""
    color = ColorPipeline()
    folder.mkdir(parents=True, exist_ok=True)
    for frame, srgb in zip(frames, composites, strict=True):
        linear = np.ascontiguousarray(color.convert(srgb, "sRGB - Texture", "ACEScg"), dtype=np.float32)
        spec = oiio.ImageSpec(linear.shape[1], linear.shape[0], 3, "half")
        spec.attribute("oiio:ColorSpace", "ACEScg")
        path = folder / f"plate.{frame:04d}.exr"
        out = oiio.ImageOutput.create(str(path))
        assert out.open(str(path), spec), out.geterror()
        assert out.write_image(linear), out.geterror()
        out.close()
    return str(folder / "plate.####.exr")


def read_pixels(path: Path) -> np.ndarray:
    inp = oiio.ImageInput.open(str(path))
    assert inp is not None, oiio.geterror()
    try:
        return inp.read_image(format="float")
    finally:
        inp.close()


def rendered(out: Path, frames: list[int]) -> np.ndarray:
    return np.stack([read_pixels(out / f"m.{f}.exr") for f in frames])


@pytest.fixture(autouse=True)
def _builtin_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)


# ----------------------------------------------------------------------------- the order, as numbers


def test_warm_up_plays_the_near_future_backward_and_the_backward_pass_mirrors_it() -> None:
    assert warm_sources(1001, 3, +1, 2000) == [1004, 1003, 1002]
    assert warm_sources(1100, 3, -1, 1001) == [1097, 1098, 1099]
    assert warm_sources(1001, 0, +1, 2000) == []


def test_warm_up_stops_at_the_plates_end_and_at_the_next_cut() -> None:
    assert warm_sources(1008, 5, +1, 1010) == [1010, 1009]  # the plate ends at 1010
    assert warm_sources(1010, 5, +1, 1010) == []  # the last frame has no future to warm from
    assert shot_limit(1001, +1, (1001, 1100), (1004, 1050)) == 1003
    assert shot_limit(1004, +1, (1001, 1100), (1004, 1050)) == 1049  # a shot's first frame warms within it
    assert shot_limit(1060, +1, (1001, 1100), (1004, 1050)) == 1100
    assert shot_limit(1049, -1, (1001, 1100), (1004, 1050)) == 1004  # backward: back to the shot's first frame
    assert shot_limit(1003, -1, (1001, 1100), (1004, 1050)) == 1001
    assert warm_sources(1001, 8, +1, shot_limit(1001, +1, (1001, 1100), (1004,))) == [1003, 1002]


def test_the_warm_plan_reads_real_frames_and_holds_over_a_gap(tmp_path: Path) -> None:
    composites, _ = portrait_clip(5, 32, 24, step=2)
    pattern = write_plate(tmp_path / "plate", composites, [1001, 1002, 1004, 1005, 1006])  # 1003 is missing
    source = open_source(pattern)
    try:
        plan = warm_plan(source, 4, +1, ())
        assert plan is not None
        assert plan(1001) == [(1005, 1005), (1004, 1004), (1003, 1002), (1002, 1002)]
        assert plan(1005) == [(1006, 1006)]
        assert warm_plan(source, 0, +1, ()) is None
    finally:
        source.close()


# ----------------------------------------------------------------------------- renders


def _job(pattern: str, out: Path, **changes: object) -> Job:
    """No warm-up and no cuts unless asked: each test says what it renders."""
    fields: dict = {"cuts": "none", "warmup": 0, **changes}
    return Job(input=pattern, output=str(out / "m.####.exr"), checkpoint=str(TFJS_MODEL), **fields)


def test_a_warmed_render_is_the_render_with_those_frames_as_pre_roll(tmp_path: Path) -> None:
    composites, _ = portrait_clip(6, 96, 64, step=4)
    frames = list(range(1001, 1007))
    plate = write_plate(tmp_path / "a", composites, frames)
    # The same shot with the engine's warm-up order (1003, then 1002) laid out as the two frames before 1001.
    staged = write_plate(tmp_path / "b", [composites[2], composites[1], *composites], [999, 1000, *frames])
    warmed = render(_job(plate, tmp_path / "warm", frames="1001-1004", warmup=2))
    prerolled = render(_job(staged, tmp_path / "pre", frames="1001-1004", preroll=2))
    render(_job(plate, tmp_path / "cold", frames="1001-1004"))
    assert warmed.frames_written == prerolled.frames_written == [1001, 1002, 1003, 1004]
    ours = rendered(tmp_path / "warm", warmed.frames_written)
    assert np.array_equal(ours, rendered(tmp_path / "pre", prerolled.frames_written))
    assert not np.array_equal(ours[0], rendered(tmp_path / "cold", [1001])[0])  # it did change the first frame


def test_warm_up_composes_with_pre_roll(tmp_path: Path) -> None:
    composites, _ = portrait_clip(6, 96, 64, step=4)
    frames = list(range(1001, 1007))
    plate = write_plate(tmp_path / "a", composites, frames)
    # Pre-roll 1002-1003 for frame 1004 starts at 1002, so the warm-up before it is 1004, 1003 (first+2 .. first+1).
    order = [composites[3], composites[2], composites[1], composites[2]]
    staged = write_plate(tmp_path / "b", [*order, composites[3], composites[4]], [996, 997, 998, 999, 1000, 1001])
    both = render(_job(plate, tmp_path / "both", frames="1004-1005", preroll=2, warmup=2))
    render(_job(staged, tmp_path / "same", frames="1000-1001", preroll=4))
    assert both.frames_written == [1004, 1005]
    assert np.array_equal(rendered(tmp_path / "both", [1004, 1005]), rendered(tmp_path / "same", [1000, 1001]))


def test_a_detected_cut_inside_the_warm_up_keeps_the_other_shot_out(tmp_path: Path) -> None:
    first, _ = portrait_clip(2, 96, 64, step=4)
    second, _ = portrait_clip(4, 96, 64, step=4, portrait="p_22fc0130", background="rw_03.jpg")
    plate = write_plate(tmp_path / "a", [*first, *second], list(range(1001, 1007)))
    detected = render(dataclasses.replace(_job(plate, tmp_path / "auto", warmup=3), cuts="auto"))
    listed = render(dataclasses.replace(_job(plate, tmp_path / "list", warmup=3), cuts="1003"))
    assert detected.cuts == listed.cuts == [1003]
    # At 1001 the warm-up reads 1004, 1003, 1002; auto resets after 1003 (a cut before it, going backward), as the
    # listed cut clamps the warm-up at 1002: every frame, the first shot's and the second's, is the same.
    frames = list(range(1001, 1007))
    assert np.array_equal(rendered(tmp_path / "auto", frames), rendered(tmp_path / "list", frames))


class _StopBefore(threading.Event):
    """A stop request as the render is about to start its ``frames``-th work item (warm-up frames not counted)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self._asked = 0
        self._frames = frames

    def is_set(self) -> bool:
        self._asked += 1
        return self._asked > self._frames


def test_a_resumed_warmed_render_is_bit_identical(tmp_path: Path) -> None:
    composites, _ = portrait_clip(5, 96, 64, step=4)
    frames = list(range(1001, 1006))
    plate = write_plate(tmp_path / "a", composites, frames)
    job = _job(plate, tmp_path / "out", warmup=3, snapshot_every=1)
    first = render(job, stop=_StopBefore(2), state_dir=tmp_path / "state")
    assert first.stopped and first.frames_written == [1001, 1002]
    again = render(job, state_dir=tmp_path / "state")
    assert again.resumed_from == 1002 and again.frames_written == [1003, 1004, 1005]
    whole = render(dataclasses.replace(job, output=str(tmp_path / "whole" / "m.####.exr")))
    assert np.array_equal(rendered(tmp_path / "out", frames), rendered(tmp_path / "whole", whole.frames_written))


def test_a_render_resumed_before_a_detected_cut_warms_there_as_an_uninterrupted_one(tmp_path: Path) -> None:
    first, _ = portrait_clip(3, 96, 64, step=4)
    second, _ = portrait_clip(4, 96, 64, step=4, portrait="p_22fc0130", background="rw_03.jpg")
    frames = list(range(1001, 1008))
    plate = write_plate(tmp_path / "a", [*first, *second], frames)
    job = dataclasses.replace(_job(plate, tmp_path / "out", warmup=2, snapshot_every=1), cuts="auto")
    stopped = render(job, stop=_StopBefore(2), state_dir=tmp_path / "state")
    assert stopped.frames_written == [1001, 1002]
    again = render(job, state_dir=tmp_path / "state")
    assert again.resumed_from == 1002 and again.cuts == [1004]  # found after the resume, warmed there
    whole = render(dataclasses.replace(job, output=str(tmp_path / "whole" / "m.####.exr")))
    assert whole.cuts == [1004]
    assert np.array_equal(rendered(tmp_path / "out", frames), rendered(tmp_path / "whole", frames))


def test_a_damaged_frame_inside_the_warm_up_fails_the_render_only_when_it_is_reached(tmp_path: Path) -> None:
    from rvm_vfx.errors import ImageReadError

    composites, _ = portrait_clip(5, 96, 64, step=4)
    plate = write_plate(tmp_path / "a", composites, list(range(1001, 1006)))
    bad = tmp_path / "a" / "plate.1003.exr"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=f"^frame 1003: {bad}: cannot read image"):
        render(_job(plate, tmp_path / "out", warmup=4))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.1001.exr", "m.1002.exr"]
    # The warm-up before 1001 was 1005, 1004, then 1003 (unreadable: the state starts again), 1002.
    staged = write_plate(tmp_path / "b", [composites[1], *composites[:2]], [1000, 1001, 1002])
    render(_job(staged, tmp_path / "same", preroll=1))
    assert np.array_equal(rendered(tmp_path / "out", [1001, 1002]), rendered(tmp_path / "same", [1001, 1002]))


def test_warm_up_frames_of_another_size_are_left_out_without_a_warning(tmp_path: Path) -> None:
    big, _ = portrait_clip(2, 128, 72)
    small, _ = portrait_clip(2, 96, 54)
    plate = write_plate(tmp_path / "a", big + small, [1001, 1002, 1003, 1004])
    warnings: list[str] = []
    report = render(
        _job(plate, tmp_path / "out", warmup=3),
        progress=lambda e: warnings.append(e["message"]) if e["event"] == "warning" else None,
    )
    assert report.frames_written == [1001, 1002, 1003, 1004]
    assert [w for w in warnings if "frame size" in w] == [
        "frame 1003: frame size changed from 128×72 to 96×54: recurrent state reset"
    ]
