"""The cut detector: no false cut on moving shots, every cut found where different shots meet.

The moving shots are the ``make-testclip`` motions (pan, zoom, shake, the background moving too) and the
first frames of each video in ``../shared/data/footage``; the cuts are concatenations of them. Frames go
through the same colour conversion as in a render, since the detector sees the network's input.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from rvm_vfx import cuts
from rvm_vfx.color import ColorPipeline
from rvm_vfx.quality.testclip import Motion, TestClip, load_portrait, open_background
from rvm_vfx.sequence import open_source

from .conftest import DATA

VIDEOS = ("01_dog.mp4", "05_default_juggle.mp4", "bedroom.mp4")
VIDEO_FRAMES = 30
SIZE = (160, 96)


@cache
def _video(name: str) -> tuple[np.ndarray, ...]:
    """The first ``VIDEO_FRAMES`` frames of a footage video in the network's space."""
    color = ColorPipeline()
    source = open_source(str(DATA / "footage" / name))
    try:
        frames = []
        for frame in source.frames()[:VIDEO_FRAMES]:
            plate = source.read(frame)
            space = color.resolve_input_space(None, plate.colorspace, plate.is_float)
            frames.append(color.to_model(plate.rgb, space)[0])
    finally:
        source.close()
    return tuple(frames)


def _clip(portrait: str, background: str, motion: Motion, moving_bg: Motion | None = None, frames: int = 16):
    image = DATA / "portraits" / "image" / f"{portrait}.jpg"
    alpha = DATA / "portraits" / "alpha" / f"{portrait}.png"
    bg = open_background(DATA / "backgrounds" / background)
    try:
        clip = TestClip(load_portrait(image, alpha), bg, frames, SIZE, motion, moving_bg or Motion())
        return [f.com.astype(np.float32) / 255 for f in clip]
    finally:
        bg.close()


def _cuts_in(frames: list[np.ndarray]) -> list[int]:
    """Indices of the frames the detector calls cuts."""
    detector = cuts.CutDetector()
    return [i for i, frame in enumerate(frames) if detector.is_cut(cuts.signature(frame))]


MOTIONS = {
    "pan": (Motion("pan", 0.1), None),
    "zoom": (Motion("zoom", 0.3), None),
    "shake": (Motion("shake", 0.1, seed=1), None),
    "shake over a shaking background": (Motion("shake", 0.1, seed=2), Motion("shake", 0.1, seed=3)),
    "pan over a zooming background": (Motion("pan", 0.1), Motion("zoom", 0.3)),
}


@pytest.mark.parametrize("motion", MOTIONS)
def test_no_false_cut_on_a_moving_test_clip(motion: str) -> None:
    portrait, background = MOTIONS[motion]
    assert _cuts_in(_clip("p_09ba26b4", "rw_03.jpg", portrait, background)) == []


@pytest.mark.parametrize("video", VIDEOS)
def test_no_false_cut_on_footage(video: str) -> None:
    assert _cuts_in(list(_video(video))) == []


def test_every_cut_is_found_between_footage_videos() -> None:
    """All six orders of the three videos, each 10 frames, back to back: cuts at 10, 20 (and only there)."""
    import itertools

    for order in itertools.permutations(VIDEOS):
        frames = [f for name in order for f in _video(name)[:10]]
        # bedroom is 960x540, the others 1280x720: the thumbnails (same aspect) still compare.
        assert _cuts_in(frames) == [10, 20], order


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("p_09ba26b4", "rw_01.jpg"), ("p_22fc0130", "rw_02.jpg")),  # another subject, another place
        (("p_09ba26b4", "rw_02.jpg"), ("p_bd6af989", "rw_02.jpg")),  # another subject, the same place: hardest
        (("p_818e689d", "test_bg.jpg"), ("p_71bcce3a", "test_bg.jpg")),
    ],
)
def test_every_cut_is_found_between_test_clips(first: tuple[str, str], second: tuple[str, str]) -> None:
    shake = Motion("shake", 0.1, seed=4)
    frames = _clip(*first, shake, frames=8) + _clip(*second, Motion("pan", 0.1), frames=8)
    assert _cuts_in(frames) == [8]


def test_frames_of_another_aspect_are_not_compared() -> None:
    """Their thumbnails differ in shape: the session resets at a size change anyway."""
    dog = _video("01_dog.mp4")[0]
    assert cuts.scores(cuts.signature(dog), cuts.signature(dog[:, :360])) is None


def test_the_detector_cost_per_frame_at_1080p_is_small() -> None:
    """A few ms against the network's hundreds on the CPU (measured 0.7 ms on the dev VM's Xeon)."""
    assert cuts.cost_ms(repeats=5) < 50.0
