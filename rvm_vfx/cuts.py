"""Shot cuts: where RVM's memory must be forgotten.

RVM carries the previous shot's memory for many frames after a hard cut (the paper shows the matte of
the old subject lingering), so a render starts a new shot at every cut: the session's state is reset
and pre-roll never reaches back across it. The cuts come from the job (``cuts``: ``auto``, ``none`` or
a list of the first frames of new shots); ``auto`` detects them here, on the frames the render has
already decoded, so the plate is never read twice.

The detector compares each frame with the one before it, on a coarse sample of the network's sRGB
input: how far the colour histogram moved (a pan, zoom or shake keeps the colours, a cut does not)
plus how far a small thumbnail moved. That score is weighed against the scores of the frames just
before (as PySceneDetect's adaptive detector does, but looking back only: frames are decided in order,
before the network steps them), so a shaking shot needs a bigger jump than a still one.
PySceneDetect was not used: it decodes the video itself through OpenCV (a second read of the shot and
a second video stack beside PyAV/OIIO), and its detectors want BGR 8-bit frames at their own scale.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec.job import CUTS_AUTO, parse_cuts

#: The short side of the sample the signature is taken from (a strided subsample of the frame).
SAMPLE_SIDE = 108
#: Thumbnail rows (columns follow the aspect ratio) and histogram levels per channel.
THUMB_ROWS = 9
LEVELS = 8
#: Decision thresholds on the score (histogram distance + thumbnail distance), measured on the repository's
#: footage and test clips (``tests/test_cuts_detect.py``): frame to frame, moving shots score up to 0.05
#: (footage) and 0.11 (a shaking portrait over a shaking background); cuts between different shots score
#: 0.8 and more, between two portraits over the same background 0.15 to 0.4.
CERTAIN = 0.5  # a cut whatever the motion before it
FLOOR = 0.12  # below this, never a cut
RATIO = 3.0  # between the two: a cut when it is this many times the shot's recent mean score
HISTORY = 8  # frames of recent motion remembered


@dataclass(frozen=True)
class Signature:
    """What the detector keeps of one frame: a colour histogram and a thumbnail."""

    histogram: np.ndarray  # LEVELS**3 float64, sums to 1
    thumbnail: np.ndarray  # THUMB_ROWS × n × 3 float32


def sample_stride(height: int, width: int) -> int:
    """The step between the pixels a signature is made from, along both axes."""
    return max(1, min(height, width) // SAMPLE_SIDE)


def signature(model_rgb: np.ndarray) -> Signature:
    """A frame's signature from its network input (H×W×3 sRGB-encoded float in [0, 1]); a few ms at 1080p."""
    stride = sample_stride(*model_rgb.shape[:2])
    return signature_of_sample(model_rgb[::stride, ::stride])


def signature_of_sample(sample: np.ndarray) -> Signature:
    """The signature from the pixels ``sample_stride`` picks (the device colour path sends back only those)."""
    sample = np.clip(sample, 0.0, 1.0)
    codes = np.minimum((sample * LEVELS).astype(np.int32), LEVELS - 1)
    bins = (codes[..., 0] * LEVELS + codes[..., 1]) * LEVELS + codes[..., 2]
    histogram = np.bincount(bins.ravel(), minlength=LEVELS**3).astype(np.float64)
    histogram /= max(1.0, histogram.sum())
    return Signature(histogram, _thumbnail(sample))


def _thumbnail(sample: np.ndarray) -> np.ndarray:
    rows = min(THUMB_ROWS, sample.shape[0])
    cols = max(1, min(sample.shape[1], round(rows * sample.shape[1] / sample.shape[0])))
    block_h, block_w = sample.shape[0] // rows, sample.shape[1] // cols
    cropped = sample[: rows * block_h, : cols * block_w]
    return cropped.reshape(rows, block_h, cols, block_w, 3).mean(axis=(1, 3), dtype=np.float32)


@dataclass(frozen=True)
class Scores:
    """How far a frame moved from the one before it."""

    histogram: float
    thumbnail: float


def scores(previous: Signature, current: Signature) -> Scores | None:
    """None when the two frames are not comparable (another size: the session resets there anyway)."""
    if previous.thumbnail.shape != current.thumbnail.shape:
        return None
    histogram = 0.5 * float(np.abs(current.histogram - previous.histogram).sum())
    thumbnail = float(np.abs(current.thumbnail - previous.thumbnail).mean())
    return Scores(histogram, thumbnail)


@dataclass
class CutDetector:
    """Decides, frame by frame in order, whether a frame starts a new shot."""

    previous: Signature | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def is_cut(self, current: Signature) -> bool:
        previous, self.previous = self.previous, current
        measured = scores(previous, current) if previous is not None else None
        if measured is None:
            self.recent.clear()
            return False
        score = measured.histogram + measured.thumbnail
        baseline = sum(self.recent) / len(self.recent) if self.recent else 0.0
        cut = score > CERTAIN or (score > FLOOR and score > RATIO * baseline)
        if cut:
            self.recent.clear()  # the new shot's motion starts from nothing
        else:
            self.recent.append(score)
        return cut


class Cuts:
    """A render's cuts: from the job's list, or detected as the frames go by.

    ``at(frame, sig)`` is called once per frame read, in order, pre-roll included. ``shot`` is the
    0-based index of the shot the frame belongs to: with a list, the number of listed cuts at or before
    the frame (the same in every chunk of a farm render); with ``auto``, the number of cuts detected since
    the first frame this render read (a chunk of a farm render counts from its own pre-roll).
    """

    def __init__(self, value: str, *, reverse: bool = False) -> None:
        self.listed: tuple[int, ...] = parse_cuts(value) or ()
        self.detector = CutDetector() if value == CUTS_AUTO else None
        self.shot = 0
        # The backward pass (``rvm_vfx.passes``) reads frames in reverse: a shot boundary lies between the frame
        # read before (a later one) and this one, and ``found`` lists the cuts so seen (the later frame).
        self.reverse = reverse
        self.previous: int | None = None
        self.found: list[int] = []

    @property
    def detects(self) -> bool:
        return self.detector is not None

    def at(self, frame: int, sig: Signature | None) -> bool:
        """Whether the state must be reset before ``frame``: it starts a new shot.

        A listed cut is one even on the first frame read (a resumed render restores a state from before it);
        a detected one needs the frame before it, so the first frame a render reads is never one."""
        if self.reverse:
            return self._at_reversed(frame, sig)
        if self.detector is None:
            self.shot = sum(1 for c in self.listed if c <= frame)
            return frame in self.listed
        cut = sig is not None and self.detector.is_cut(sig)
        self.shot += int(cut)
        return cut

    def _at_reversed(self, frame: int, sig: Signature | None) -> bool:
        """Reading backward: whether ``frame`` ends a shot that the frame read before it (a later one) was in."""
        later, self.previous = self.previous, frame
        if self.detector is None:
            crossed = [c for c in self.listed if later is not None and frame < c <= later]
        else:
            crossed = [later] if sig is not None and self.detector.is_cut(sig) and later is not None else []
        self.found.extend(crossed)
        return bool(crossed)

    # ---------------------------------------------------------------- resuming

    def state(self) -> dict[str, Any]:
        """Where detection stands, as plain numbers (snapshots are read weights-only)."""
        detector = self.detector
        previous = detector.previous if detector is not None else None
        return {
            "shot": self.shot,
            "previous": self.previous,
            "found": list(self.found),
            "recent": list(detector.recent) if detector is not None else [],
            "histogram": previous.histogram.tolist() if previous is not None else None,
            "thumbnail": previous.thumbnail.tolist() if previous is not None else None,
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Continue from ``state`` (``None``: a snapshot from before cuts were detected; start afresh)."""
        if not state:
            return
        self.shot = int(state.get("shot", 0))
        self.previous = None if state.get("previous") is None else int(state["previous"])
        self.found = [int(c) for c in state.get("found", [])]
        detector = self.detector
        if detector is None:
            return
        detector.recent.clear()
        detector.recent.extend(float(v) for v in state.get("recent", []))
        if state.get("histogram") is not None and state.get("thumbnail") is not None:
            detector.previous = Signature(
                np.asarray(state["histogram"], dtype=np.float64), np.asarray(state["thumbnail"], dtype=np.float32)
            )


def last_cut_at_or_before(value: str, frame: int) -> int | None:
    """The latest listed cut at or before ``frame`` (None for ``auto``/``none`` or when there is none):
    where a pre-roll for ``frame`` has to start."""
    listed = parse_cuts(value) or ()
    before = [c for c in listed if c <= frame]
    return max(before) if before else None


def cost_ms(height: int = 1080, width: int = 1920, repeats: int = 20) -> float:
    """The detector's cost per frame (signature and decision), in milliseconds, for the record."""
    import time

    rng = np.random.default_rng(0)
    frames = [rng.random((height, width, 3), dtype=np.float32) for _ in range(2)]
    detector = CutDetector()
    started = time.perf_counter()
    for i in range(repeats):
        detector.is_cut(signature(frames[i % 2]))
    return (time.perf_counter() - started) / repeats * 1000.0 if repeats else math.nan
