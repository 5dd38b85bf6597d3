"""A plate with a cut in it renders as its two shots rendered apart, and says where the cut is.

Two shots of 4 frames (another portrait over another background) back to back, cut at frame 1005.
After a reset the session runs the very same kernels on the very same inputs as a fresh render of the
shot alone (one frame a step, no state), so the frames are compared exactly, not within a tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.job import Job
from rvm_vfx.render import render
from rvm_vfx.spec.progress import CUT, DONE, event, parse_line

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence

FIRST, CUT_AT, LAST = 1001, 1005, 1008
SHOT_A = ("p_09ba26b4", "rw_01.jpg")
SHOT_B = ("p_22fc0130", "rw_02.jpg")


def _shot(portrait: str, background: str) -> list[np.ndarray]:
    return portrait_clip(4, 160, 96, step=3, portrait=portrait, background=background)[0]


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The edit (both shots, 1001-1008) and each shot alone at the frame numbers it has in the edit."""
    root = tmp_path_factory.mktemp("cuts")
    a, b = _shot(*SHOT_A), _shot(*SHOT_B)
    return {
        "edit": write_sequence(root / "edit", "edit", a + b, first=FIRST),
        "a": write_sequence(root / "a", "a", a, first=FIRST),
        "b": write_sequence(root / "b", "b", b, first=CUT_AT),
    }


def _render(plate: str, out: Path, **fields: Any) -> tuple[dict[int, np.ndarray], dict[int, int], list[dict]]:
    """(pixels by frame, ``rvm:shot`` by frame, progress events) of a render of ``plate``."""
    events: list[dict] = []
    job = Job(input=plate, output=str(out / "m.####.exr"), checkpoint=str(TFJS_MODEL), **fields)
    report = render(job, progress=events.append)
    events.append(event(DONE, **report.to_dict()))
    pixels, shots = {}, {}
    for frame in report.frames_written:
        image = oiio.ImageInput.open(str(out / f"m.{frame}.exr"))
        pixels[frame] = image.read_image(oiio.FLOAT)
        shots[frame] = image.spec().getattribute("rvm:shot")
        image.close()
    return pixels, shots, events


@pytest.fixture(scope="module")
def alone(plates: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    """Each shot rendered on its own."""
    root = tmp_path_factory.mktemp("alone")
    a, _, _ = _render(plates["a"], root / "a", cuts="none")
    b, _, _ = _render(plates["b"], root / "b", cuts="none")
    return {**a, **b}


def _assert_equal_to_the_shots_alone(pixels: dict[int, np.ndarray], alone: dict[int, np.ndarray]) -> None:
    assert sorted(pixels) == list(range(FIRST, LAST + 1))
    for frame, image in pixels.items():
        np.testing.assert_array_equal(image, alone[frame], err_msg=f"frame {frame}")


@pytest.mark.parametrize("cuts", ["auto", "1005"])
def test_the_shots_of_an_edit_render_as_the_shots_alone(
    plates: dict[str, str], alone: dict[int, np.ndarray], tmp_path: Path, cuts: str
) -> None:
    fields = {} if cuts == "auto" else {"cuts": cuts}  # auto is the default
    pixels, shots, events = _render(plates["edit"], tmp_path, **fields)
    _assert_equal_to_the_shots_alone(pixels, alone)
    assert shots == {f: 0 if f < CUT_AT else 1 for f in range(FIRST, LAST + 1)}
    assert [e for e in events if e["event"] == CUT] == [{"event": CUT, "frame": CUT_AT, "shot": 1}]
    done = parse_line(__import__("json").dumps(events[-1]))
    assert done is not None and done.cuts == [CUT_AT]


def test_without_cuts_the_second_shot_carries_the_first_ones_memory(
    plates: dict[str, str], alone: dict[int, np.ndarray], tmp_path: Path
) -> None:
    # No warm-up either: with no cut known, the first shot's warm-up would read the second shot's frames.
    pixels, shots, events = _render(plates["edit"], tmp_path, cuts="none", warmup=0)
    first_alone, _, _ = _render(plates["a"], tmp_path / "a", cuts="none", warmup=0)
    for frame in range(FIRST, CUT_AT):
        np.testing.assert_array_equal(pixels[frame], first_alone[frame])
    # The first frame after the cut is the one the old memory spoils most (measured: ~0.3 at worst).
    assert np.abs(pixels[CUT_AT] - alone[CUT_AT]).max() > 0.05
    assert set(shots.values()) == {0}
    assert [e for e in events if e["event"] == CUT] == []


@pytest.mark.parametrize("cuts", ["auto", "1005"])
def test_pre_roll_never_crosses_a_cut(
    plates: dict[str, str], alone: dict[int, np.ndarray], tmp_path: Path, cuts: str
) -> None:
    """A chunk 1006-1008 with 3 frames of pre-roll: it starts warm from 1005 (listed: read from there; auto:
    1003 and 1004 are read, then forgotten at the cut), exactly as the second shot alone."""
    pixels, shots, events = _render(plates["edit"], tmp_path, frames="1006-1008", preroll=3, cuts=cuts)
    assert sorted(pixels) == [1006, 1007, 1008]
    for frame, image in pixels.items():
        np.testing.assert_array_equal(image, alone[frame], err_msg=f"frame {frame}")
    assert set(shots.values()) == {1}
    assert [e for e in events if e["event"] == CUT] == []  # the cut is in the pre-roll, not a written frame


class _StopBefore:
    """A stop request that arrives as the render is about to start its ``frames``-th frame (from 0)."""

    def __init__(self, frames: int) -> None:
        self._asked, self._frames = 0, frames

    def is_set(self) -> bool:
        self._asked += 1
        return self._asked > self._frames


def test_a_render_resumed_at_a_detected_cut_still_finds_it(
    plates: dict[str, str], alone: dict[int, np.ndarray], tmp_path: Path
) -> None:
    """Stopped after frame 1004: the resumed render's first frame is the cut, detected against the frame
    before it, which only the snapshot remembers."""
    job = Job(input=plates["edit"], output=str(tmp_path / "m.####.exr"), checkpoint=str(TFJS_MODEL), snapshot_every=1)
    first = render(job, stop=_StopBefore(CUT_AT - FIRST), state_dir=tmp_path / "state")  # type: ignore[arg-type]
    assert first.stopped and first.frames_written == [1001, 1002, 1003, 1004]
    events: list[dict] = []
    second = render(job, progress=events.append, state_dir=tmp_path / "state")
    assert second.resumed_from == 1004 and second.cuts == [CUT_AT]
    for frame in range(FIRST, LAST + 1):
        image = oiio.ImageInput.open(str(tmp_path / f"m.{frame}.exr"))
        np.testing.assert_array_equal(image.read_image(oiio.FLOAT), alone[frame], err_msg=f"frame {frame}")
        assert image.spec().getattribute("rvm:shot") == (0 if frame < CUT_AT else 1)
        image.close()
