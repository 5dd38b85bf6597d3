"""Test clips with exact ground truth: a portrait and its matte moved over a real background.

A matte model can only be scored against an alpha that is *exactly* right, and no real footage comes
with one. The matting benchmarks (VideoMatte240K, Distinctions-646) solve this by compositing: given a
foreground image F, its alpha a and any background B, the frame ``F·a + B·(1 - a)`` has alpha a by
construction. This module builds such clips from a still portrait and its matte, moving the portrait
(and, if asked, the background) a little every frame so the result is video that exercises RVM's
temporal memory.

Conventions, chosen so the ground truth survives being written to disk:

* The composite is taken in sRGB-encoded values, as the benchmarks do (and as RVM was trained), not
  in linear light. Both are "a" correct composite; this one is what the published numbers mean.
* Foreground, alpha and background are each rounded to 8 bits *before* compositing, and the
  composite is computed in float from those 8-bit values and rounded once. The files on disk then
  satisfy ``com == fgr·pha + bgr·(1 - pha)`` to within half a code value, with the very ``pha`` that is
  the ground truth, instead of holding an alpha that is merely close to the one used.
* The foreground is the portrait photo itself. At soft edges it still holds a little of the photo's
  original background; that is not an error but the foreground *of this composite*: for alpha > 0 the
  foreground is fixed uniquely by composite, alpha and background.
* The portrait is scaled to fit the frame, standing on its bottom edge; below its own bottom edge it is
  extended by repeating its last row, so a subject cut off by the photo does not float when the motion
  lifts it. Elsewhere outside the photo alpha is 0.
* A second person, if asked for, stands in the background: a smaller portrait composited over the
  background first (``bgr`` then holds them, so ``com = fgr·pha + bgr·(1 - pha)`` still holds), the main
  portrait over that. ``pha`` stays the main person's alone, and ``holdout/`` holds what of the second
  person is visible, ``pha2·(1 - pha)``, rounded once: the hold-out matte that removes them, exact by
  construction. Without the second person the same arguments give the same ``pha`` and ``fgr``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from rvm_vfx.errors import ImageReadError, InputError, OutputError

__all__ = [
    "FORMATS",
    "HOLDOUT",
    "MOTIONS",
    "SUBFOLDERS",
    "Background",
    "ClipFrame",
    "ClipWriter",
    "Motion",
    "SecondPerson",
    "StillBackground",
    "solid_holdout",
    "TestClip",
    "VideoBackground",
    "composite",
    "load_portrait",
    "make_testclip",
    "open_background",
    "parse_size",
]

MOTIONS: tuple[str, ...] = ("static", "pan", "zoom", "shake")
FORMATS: tuple[str, ...] = ("png", "exr")
#: Folder per layer, named as in VideoMatte240K so tools written for it read our clips unchanged.
SUBFOLDERS: tuple[str, ...] = ("com", "pha", "fgr", "bgr")
#: The folder of a second person's visible matte (clips with one only).
HOLDOUT = "holdout"
DEFAULT_SIZE = (512, 288)
_FRAME_FILE = re.compile(r"-?\d+\.(png|exr)")


# --------------------------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Motion:
    """A smooth per-frame placement: scale about an anchor, then a shift in output pixels.

    ``amplitude`` is a fraction of the frame width for ``pan`` (total travel is twice it) and ``shake``
    (peak offset), and the relative growth over the clip for ``zoom``. Shake is a sum of slow
    sinusoids with phases and rates drawn from ``seed``: hand-held jitter that is smooth from frame to
    frame (as camera shake at 24 fps is), reproducible, and different per seed.
    """

    kind: str = "static"
    amplitude: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MOTIONS:
            raise InputError(f"unknown motion {self.kind!r}; accepted: {', '.join(MOTIONS)}")
        if not math.isfinite(self.amplitude) or not 0.0 <= self.amplitude <= 1.0:
            raise InputError(f"motion amplitude must be in [0, 1], got {self.amplitude}")

    def at(self, index: int, count: int, width: int) -> tuple[float, float, float]:
        """``(scale, dx, dy)`` for frame ``index`` of ``count``; dx, dy in pixels of a ``width``-wide frame."""
        progress = index / (count - 1) if count > 1 else 0.0
        a = self.amplitude
        if self.kind == "pan":
            return 1.0, a * width * (2.0 * progress - 1.0), 0.0
        if self.kind == "zoom":
            return 1.0 + a * progress, 0.0, 0.0
        if self.kind == "shake":
            dx, dy = self._shake(index)
            return 1.0, a * width * dx, 0.5 * a * width * dy
        return 1.0, 0.0, 0.0

    def _shake(self, index: int) -> tuple[float, float]:
        rng = np.random.default_rng(self.seed)
        # Three octaves per axis, 0.02-0.12 cycles per frame (a 2-8 Hz tremor at 24 fps is too fast to
        # read as hand-held; these are 0.5-3 Hz), normalised so the peak offset is at most 1.
        rates = rng.uniform(0.02, 0.12, size=(2, 3))
        phases = rng.uniform(0.0, 2.0 * math.pi, size=(2, 3))
        weights = np.array([1.0, 0.5, 0.25])
        values = (weights * np.sin(2.0 * math.pi * rates * index + phases)).sum(axis=1) / weights.sum()
        return float(values[0]), float(values[1])

    def max_scale(self) -> float:
        return 1.0 + self.amplitude if self.kind == "zoom" else 1.0

    def max_shift_fraction(self) -> float:
        """Largest |dx| or |dy| as a fraction of the frame width over any clip length."""
        return self.amplitude if self.kind in ("pan", "shake") else 0.0


# ------------------------------------------------------------------------------------------- sampling


def _axis_taps(out_len: int, src_len: int, scale: float, anchor_out: float, anchor_src: float):
    """Bilinear taps along one axis for the mapping ``out = anchor_out + (src - anchor_src)·scale``.

    Coordinates are continuous (pixel edges at integers, centres at +0.5). Indices refer to the source
    padded with one pixel of zeros on each side, so taps outside the source read 0.
    """
    centres = np.arange(out_len, dtype=np.float64) + 0.5
    src = (centres - anchor_out) / scale + anchor_src - 0.5  # source index space (centre of pixel i is i)
    lo = np.floor(src)
    weight = (src - lo).astype(np.float32)
    i0 = np.clip(lo.astype(np.int64) + 1, 0, src_len + 1)
    i1 = np.clip(lo.astype(np.int64) + 2, 0, src_len + 1)
    return i0, i1, weight


def _place(
    image: np.ndarray,
    out_size: tuple[int, int],
    scale: float,
    anchor_out: tuple[float, float],
    anchor_src: tuple[float, float],
) -> np.ndarray:
    """Resample ``image`` (h×w×c) into an ``out_size`` frame under an axis-aligned scale + shift.

    No rotation is needed for pan, zoom and shake, and without it bilinear sampling is separable:
    two gathers and two lerps instead of a general warp. Only mild rescaling (at most the zoom range)
    happens here; the large downscale from the photo is done once beforehand with a proper filter.
    """
    width, height = out_size
    h, w = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    x0, x1, wx = _axis_taps(width, w, scale, anchor_out[0], anchor_src[0])
    y0, y1, wy = _axis_taps(height, h, scale, anchor_out[1], anchor_src[1])
    wy3 = wy[:, None, None]
    rows = padded[y0] * (1.0 - wy3) + padded[y1] * wy3  # vertical pass first: H_out rows of the source width
    wx3 = wx[None, :, None]
    return (rows[:, x0] * (1.0 - wx3) + rows[:, x1] * wx3).astype(np.float32)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Filtered resize with OpenImageIO (a plain bilinear lookup would alias a 4× downscale)."""
    import OpenImageIO as oiio

    h, w, c = image.shape
    if (w, h) == (width, height):
        return np.array(image, dtype=np.float32)
    src = oiio.ImageBuf(oiio.ImageSpec(w, h, c, oiio.FLOAT))
    src.set_pixels(oiio.ROI(), np.ascontiguousarray(image, dtype=np.float32))
    dst = oiio.ImageBufAlgo.resize(src, roi=oiio.ROI(0, width, 0, height, 0, 1, 0, c))
    if dst.has_error:
        raise ImageReadError(f"resize to {width}×{height} failed: {dst.geterror()}")
    return np.clip(np.asarray(dst.get_pixels(oiio.FLOAT), dtype=np.float32).reshape(height, width, c), 0.0, 1.0)


def _cover(image: np.ndarray, width: int, height: int, overscan: float = 1.0) -> np.ndarray:
    """Scale to cover ``width``×``height``·overscan, keeping the aspect, and crop the centre."""
    h, w = image.shape[:2]
    tw, th = math.ceil(width * overscan), math.ceil(height * overscan)
    scale = max(tw / w, th / h)
    rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
    resized = _resize(image, rw, rh)
    left, top = (rw - tw) // 2, (rh - th) // 2
    return resized[top : top + th, left : left + tw]


def _to_code(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------ inputs


def _read_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """Pixel values as stored, in [0, 1] (no colour conversion: 8-bit sRGB stays sRGB-encoded)."""
    import OpenImageIO as oiio

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: file not found")
    buf = oiio.ImageBuf(path)
    pixels = buf.get_pixels(oiio.FLOAT)
    if buf.has_error or pixels is None:
        raise ImageReadError(f"{path}: cannot read image: {buf.geterror()}")
    arr = np.asarray(pixels, dtype=np.float32)
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def load_portrait(image_path: str | os.PathLike[str], alpha_path: str | os.PathLike[str]) -> np.ndarray:
    """Photo + matte as one float32 straight RGBA array, so both are moved by the very same samples."""
    image = _read_raw(image_path)
    alpha = _read_raw(alpha_path)
    if image.shape[:2] != alpha.shape[:2]:
        raise InputError(
            f"portrait {os.fspath(image_path)} is {image.shape[1]}×{image.shape[0]} but its alpha "
            f"{os.fspath(alpha_path)} is {alpha.shape[1]}×{alpha.shape[0]}"
        )
    if image.shape[2] < 3:
        image = np.repeat(image[:, :, :1], 3, axis=2)
    return np.concatenate([image[:, :, :3], alpha[:, :, :1]], axis=2)


class Background(Protocol):
    """Where each frame's background comes from: a still photo or a video."""

    name: str
    #: The source's own size, for ``--size background``.
    size: tuple[int, int]

    def frame(self, index: int, out_size: tuple[int, int], motion: Motion, count: int) -> np.ndarray: ...

    def close(self) -> None: ...


def _move_background(
    image: np.ndarray, out_size: tuple[int, int], motion: Motion, index: int, count: int
) -> np.ndarray:
    # ``image`` is already covered at one output pixel per source pixel, with overscan around the frame.
    scale, dx, dy = motion.at(index, count, out_size[0])
    h, w = image.shape[:2]
    centre_out = (out_size[0] / 2 + dx, out_size[1] / 2 + dy)
    return _place(image, out_size, scale, centre_out, (w / 2, h / 2))


def _overscan(motion: Motion) -> float:
    # Enough extra picture around the frame that a shift never reveals the edge of the background.
    return 1.0 + 2.0 * motion.max_shift_fraction() * 1.05 + (0.01 if motion.kind != "static" else 0.0)


class StillBackground:
    """A photo behind the portrait; rescaled once per output size (and motion), then only moved."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        raw = _read_raw(path)
        self._image = raw[:, :, :3] if raw.shape[2] >= 3 else np.repeat(raw[:, :, :1], 3, axis=2)
        self.size = (self._image.shape[1], self._image.shape[0])
        self._cache: dict[tuple[tuple[int, int], float], np.ndarray] = {}

    def frame(self, index: int, out_size: tuple[int, int], motion: Motion, count: int) -> np.ndarray:
        key = (out_size, _overscan(motion))
        if key not in self._cache:
            self._cache[key] = _cover(self._image, *out_size, overscan=key[1])
        covered = self._cache[key]
        if motion.kind == "static":
            return covered
        return _move_background(covered, out_size, motion, index, count)

    def close(self) -> None:
        self._cache.clear()


class VideoBackground:
    """A video behind the portrait, one video frame per clip frame from its start."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from rvm_vfx.sequence import VideoSource

        self.name = os.fspath(path)
        self._source = VideoSource(path, start_frame=0)
        self.size = (self._source.width, self._source.height)
        self.frame_count = len(self._source.frames())

    def frame(self, index: int, out_size: tuple[int, int], motion: Motion, count: int) -> np.ndarray:
        if count > self.frame_count:
            raise InputError(f"{self.name}: background video has {self.frame_count} frames, the clip needs {count}")
        rgb = self._source.read(index).rgb
        covered = _cover(rgb, *out_size, overscan=_overscan(motion))
        if motion.kind == "static":
            return covered
        return _move_background(covered, out_size, motion, index, count)

    def close(self) -> None:
        self._source.close()


def open_background(path: str | os.PathLike[str]) -> StillBackground | VideoBackground:
    from rvm_vfx.sequence import VIDEO_EXTENSIONS

    if os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS:
        return VideoBackground(path)
    return StillBackground(path)


# ---------------------------------------------------------------------------------------------- clip


class ClipFrame(NamedTuple):
    """One frame of a test clip as 8-bit sRGB-encoded arrays: composite, alpha, foreground, background."""

    com: np.ndarray  # H×W×3 uint8
    pha: np.ndarray  # H×W uint8
    fgr: np.ndarray  # H×W×3 uint8
    bgr: np.ndarray  # H×W×3 uint8 (with the second person, if any)
    holdout: np.ndarray | None = None  # H×W uint8: the second person where visible, when there is one


def composite(fgr: np.ndarray, pha: np.ndarray, bgr: np.ndarray) -> np.ndarray:
    """``fgr·a + bgr·(1 - a)`` from 8-bit codes, rounded once to 8 bits (the clip's definition)."""
    a = pha.astype(np.float64)[:, :, None]
    codes = (fgr.astype(np.float64) * a + bgr.astype(np.float64) * (255.0 - a)) / 255.0
    return np.rint(codes).astype(np.uint8)


@dataclass(frozen=True)
class SecondPerson:
    """A portrait standing in the background, moving by ``motion``.

    Sizes and places are the *people's*, not the photos' (portraits are framed anything from head-and-
    shoulders to full figure): the second person is ``scale`` times the main person's height (each measured
    where its alpha is over 0.5, at the first frame) and stands with their centre ``offset`` frame widths
    right of the frame's centre (negative: left); None puts them in the middle of the wider strip the main
    person leaves free, so that they are seen rather than hidden.
    """

    portrait: np.ndarray  # h×w×4 float32 straight RGBA in [0, 1]
    scale: float = 0.6
    offset: float | None = None
    motion: Motion = field(default_factory=Motion)
    #: 0: the hold-out is the exact soft visible matte; N: a solid one grown N pixels (``solid_holdout``).
    grow: int = 0

    def __post_init__(self) -> None:
        if self.grow < 0:
            raise InputError(f"hold-out growth must be 0 or more pixels, got {self.grow}")
        if not (0.05 <= self.scale <= 1.0) or not math.isfinite(self.scale):
            raise InputError(f"second person's scale must be in [0.05, 1], got {self.scale}")
        if self.offset is not None and (not (-1.0 <= self.offset <= 1.0) or not math.isfinite(self.offset)):
            raise InputError(f"second person's offset must be in [-1, 1] frame widths, got {self.offset}")


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a square max filter, a row pass then a column pass)."""
    height, width = mask.shape
    padded = np.pad(mask, pixels)
    rows = np.zeros((height + 2 * pixels, width), bool)
    for dx in range(2 * pixels + 1):
        rows |= padded[:, dx : dx + width]
    grown = np.zeros((height, width), bool)
    for dy in range(2 * pixels + 1):
        grown |= rows[dy : dy + height]
    return grown


def solid_holdout(visible: np.ndarray, main_pha: np.ndarray, grow: int) -> np.ndarray:
    """A hold-out as a roto artist draws one: solid (255) wherever the second person shows, grown ``grow``
    pixels and stopping where the main person's alpha begins; 8-bit codes like ``visible``."""
    return np.where(_grow(visible > 0, grow) & (main_pha == 0), 255, 0).astype(np.uint8)


def _subject_extent(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of where ``alpha`` is over 0.5, in pixels (edges); the whole image if nowhere."""
    cols = np.flatnonzero((alpha > 0.5).any(axis=0))
    rows = np.flatnonzero((alpha > 0.5).any(axis=1))
    if not cols.size:
        return 0.0, float(alpha.shape[1]), 0.0, float(alpha.shape[0])
    return float(cols[0]), float(cols[-1] + 1), float(rows[0]), float(rows[-1] + 1)


class _Figure:
    """A portrait downscaled once, then placed standing on the frame's bottom edge each frame."""

    def __init__(self, portrait: np.ndarray, size: tuple[int, int], motion: Motion, scale: float = 1.0) -> None:
        width, height = size
        self.motion = motion
        # Downscale the photo once, with a real filter, to the largest size the motion will show it at;
        # per-frame placement then only ever shrinks it a little.
        h, w = portrait.shape[:2]
        fit = min(width / w, height / h) * scale * motion.max_scale()
        pw, ph = max(1, round(w * fit)), max(1, round(h * fit))
        small = _resize(portrait, pw, ph)
        # Extend the bottom by repeating its last row: a subject cut off by the photo's bottom edge
        # must not hover above the frame's bottom when the motion lifts or shrinks it.
        extra = math.ceil(width * motion.max_shift_fraction() * motion.max_scale()) + 2
        self.portrait = np.concatenate([small, np.repeat(small[-1:], extra, axis=0)], axis=0)
        self.height = ph
        self.base_scale = 1.0 / motion.max_scale()

    def place(self, index: int, frames: int, size: tuple[int, int], centre: float) -> tuple[np.ndarray, np.ndarray]:
        """(foreground, alpha) as 8-bit codes, the photo's bottom centre at (``centre``, bottom), then moved."""
        width, height = size
        scale, dx, dy = self.motion.at(index, frames, width)
        w = self.portrait.shape[1]
        placed = _place(self.portrait, size, self.base_scale * scale, (centre + dx, height + dy), (w / 2, self.height))
        return _to_code(placed[:, :, :3]), _to_code(placed[:, :, 3])


@dataclass
class TestClip:
    """A portrait moved over a background for ``frames`` frames at ``size`` (width, height)."""

    __test__ = False  # not a pytest test class, despite the name

    portrait: np.ndarray  # h×w×4 float32 straight RGBA in [0, 1]
    background: Background
    frames: int
    size: tuple[int, int] = DEFAULT_SIZE
    motion: Motion = field(default_factory=Motion)
    background_motion: Motion = field(default_factory=Motion)
    second: SecondPerson | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise InputError(f"a test clip needs at least 1 frame, got {self.frames}")
        width, height = self.size
        if width < 16 or height < 16:
            raise InputError(f"clip size {width}×{height} is too small (16×16 at least)")
        count = getattr(self.background, "frame_count", None)
        if count is not None and count < self.frames:
            raise InputError(
                f"{self.background.name}: background video has {count} frames, the clip needs {self.frames}"
            )
        self._main = _Figure(self.portrait, self.size, self.motion)
        self._second: _Figure | None = None
        self._second_centre = 0.0
        if self.second is not None:
            self._second, self._second_centre = self._place_second(self.second)

    def _place_second(self, second: SecondPerson) -> tuple[_Figure, float]:
        """The second person's figure, sized against the main person, and where its photo's centre stands."""
        width, height = self.size
        _, main_alpha = self._main.place(0, self.frames, self.size, width / 2)
        left, right, top, bottom = _subject_extent(main_alpha.astype(np.float32) / 255.0)
        h, w = second.portrait.shape[:2]
        s_left, s_right, s_top, s_bottom = _subject_extent(second.portrait[:, :, 3])
        fit = min(width / w, height / h)  # the photo fitted to the frame, as the main one is
        photo_scale = second.scale * (bottom - top) / max(1.0, (s_bottom - s_top) * fit)
        figure = _Figure(second.portrait, self.size, second.motion, photo_scale)
        shown = fit * photo_scale  # photo pixels to frame pixels at the first frame
        if second.offset is None:
            target = left / 2 if left >= width - right else (right + width) / 2
        else:
            target = width / 2 + second.offset * width
        # Photo centre such that the subject's centre lands on ``target``.
        return figure, target - ((s_left + s_right) / 2 - w / 2) * shown

    def frame(self, index: int) -> ClipFrame:
        width = self.size[0]
        fgr, pha = self._main.place(index, self.frames, self.size, width / 2)
        bgr = _to_code(self.background.frame(index, self.size, self.background_motion, self.frames))
        holdout = None
        if self._second is not None:
            fgr2, pha2 = self._second.place(index, self.frames, self.size, self._second_centre)
            bgr = composite(fgr2, pha2, bgr)
            # What of them the main person leaves visible, from the very codes composited.
            visible = pha2.astype(np.float64) * (255.0 - pha.astype(np.float64)) / 255.0
            holdout = np.rint(visible).astype(np.uint8)
            if self.second is not None and self.second.grow:
                holdout = solid_holdout(holdout, pha, self.second.grow)
        return ClipFrame(com=composite(fgr, pha, bgr), pha=pha, fgr=fgr, bgr=bgr, holdout=holdout)

    def __iter__(self) -> Iterator[ClipFrame]:
        for index in range(self.frames):
            yield self.frame(index)

    def __len__(self) -> int:
        return self.frames


# ------------------------------------------------------------------------------------------- writing


class ClipWriter:
    """Writes clip frames as ``OUT/{com,pha,fgr,bgr}/####.png`` (8-bit sRGB) or ``.exr``.

    EXR frames are what a plate would be: half-float, scene-linear (the OCIO config's ``scene_linear``
    role, tagged), so ``rvm-vfx matte OUT/com`` treats them like any other plate; the alpha is stored
    as is. The composite relation holds in sRGB-encoded values: convert back before checking it.
    """

    def __init__(
        self, out: str | os.PathLike[str], fmt: str = "png", start_frame: int = 0, overwrite: bool = False
    ) -> None:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
        self.out = Path(out)
        self.fmt = fmt
        self.start_frame = int(start_frame)
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: exists and is not a folder")
        existing = [
            self.out / name for name in SUBFOLDERS if (self.out / name).is_dir() and any((self.out / name).iterdir())
        ]
        if existing and not overwrite:
            raise OutputError(f"{self.out}: already holds a clip ({existing[0].name}/ is not empty); pass --overwrite")
        try:
            for name in SUBFOLDERS:
                (self.out / name).mkdir(parents=True, exist_ok=True)
            for name in (*SUBFOLDERS, HOLDOUT):
                if not (self.out / name).is_dir():
                    continue
                # A shorter clip written over a longer one must not leave the old tail behind, or the
                # folder would read as one longer, inconsistent clip (nor one without a second person an
                # old hold-out). Only our own frame files go.
                for stale in (self.out / name).iterdir():
                    if _FRAME_FILE.fullmatch(stale.name) and stale.is_file():
                        stale.unlink()
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot create the clip folders: {exc}") from exc
        self._pipeline = None
        if fmt == "exr":
            from rvm_vfx.color import ColorPipeline

            self._pipeline = ColorPipeline()

    def path(self, layer: str, index: int) -> Path:
        return self.out / layer / f"{self.start_frame + index:04d}.{self.fmt}"

    def write(self, index: int, frame: ClipFrame) -> None:
        layers = (*SUBFOLDERS, HOLDOUT) if frame.holdout is not None else SUBFOLDERS
        for layer in layers:
            pixels = getattr(frame, layer)
            if layer == HOLDOUT:
                try:
                    (self.out / HOLDOUT).mkdir(exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"{self.out}: cannot create the clip folders: {exc}") from exc
            if self.fmt == "png":
                _write_png(self.path(layer, index), pixels)
            else:
                self._write_exr(self.path(layer, index), pixels)

    def _write_exr(self, path: Path, codes: np.ndarray) -> None:
        from rvm_vfx.frame_io import ImageHeader, write_exr

        assert self._pipeline is not None
        values = codes.astype(np.float32) / np.float32(255.0)
        header = ImageHeader(width=codes.shape[1], height=codes.shape[0])
        if values.ndim == 2:  # alpha is data: no colour space
            write_exr(path, values, header, "", {"rvm:testclip": "pha"})
            return
        pipeline = self._pipeline
        linear = pipeline.convert(values, pipeline.model_space, pipeline.scene_linear)
        write_exr(path, linear, header, pipeline.scene_linear, {"rvm:testclip": path.parent.name})


def _write_png(path: Path, codes: np.ndarray) -> None:
    import OpenImageIO as oiio

    arr = codes if codes.ndim == 3 else codes[:, :, None]
    spec = oiio.ImageSpec(arr.shape[1], arr.shape[0], arr.shape[2], oiio.UINT8)
    out = oiio.ImageOutput.create(str(path))
    if out is None or not out.open(str(path), spec):
        raise OutputError(f"{path}: cannot write PNG: {oiio.geterror()}")
    ok = out.write_image(np.ascontiguousarray(arr))
    if not out.close() or not ok:
        raise OutputError(f"{path}: cannot write PNG: {out.geterror()}")


# ---------------------------------------------------------------------------------------------- entry


def parse_size(text: str) -> tuple[int, int] | None:
    """``"512x288"`` (or ``×``) -> (512, 288); ``"background"`` -> None (use the background's size)."""
    if text.strip().lower() in ("background", "bg"):
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--size: expected WIDTHxHEIGHT (e.g. 512x288) or 'background', got {text!r}") from None
    if width < 16 or height < 16 or width > 16384 or height > 16384:
        raise InputError(f"--size: {width}×{height} is out of range (16 to 16384 a side)")
    return width, height


def make_testclip(
    portrait_image: str | os.PathLike[str],
    portrait_alpha: str | os.PathLike[str],
    background: str | os.PathLike[str],
    out: str | os.PathLike[str],
    frames: int,
    size: tuple[int, int] | None = DEFAULT_SIZE,
    motion: Motion | None = None,
    background_motion: Motion | None = None,
    fmt: str = "png",
    start_frame: int = 0,
    overwrite: bool = False,
    second_person: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    second_scale: float = 0.6,
    second_offset: float | None = None,
    second_motion: Motion | None = None,
    holdout_grow: int = 0,
) -> dict[str, object]:
    """Build a clip and write it with a ``clip.json`` that records how, so it can be made again.

    ``second_person`` (image, alpha) stands a second portrait in the background and writes its visible
    matte to ``OUT/holdout`` (see the module's notes)."""
    motion = motion or Motion("pan", 0.1)
    background_motion = background_motion or Motion()
    second_motion = second_motion or Motion()
    portrait = load_portrait(portrait_image, portrait_alpha)
    second = None
    if second_person is not None:
        second = SecondPerson(load_portrait(*second_person), second_scale, second_offset, second_motion, holdout_grow)
    bg = open_background(background)
    try:
        clip = TestClip(portrait, bg, frames, size or bg.size, motion, background_motion, second)
        writer = ClipWriter(out, fmt, start_frame, overwrite)
        for index, frame in enumerate(clip):
            writer.write(index, frame)
    finally:
        bg.close()
    info: dict[str, object] = {
        "portrait_image": os.fspath(portrait_image),
        "portrait_alpha": os.fspath(portrait_alpha),
        "background": os.fspath(background),
        "frames": frames,
        "first_frame": start_frame,
        "size": list(clip.size),
        "motion": asdict(motion),
        "background_motion": asdict(background_motion),
        "format": fmt,
        "composite": "sRGB-encoded: com = fgr*pha + bgr*(1-pha) from the 8-bit fgr, pha, bgr, rounded to 8 bits",
    }
    if second_person is not None:
        info["second_person"] = {
            "image": os.fspath(second_person[0]),
            "alpha": os.fspath(second_person[1]),
            "scale": second_scale,
            "offset": second_offset,
            "motion": asdict(second_motion),
            "holdout": (
                f"solid: where pha2*(1-pha) > 0, grown {holdout_grow} px, and pha == 0"
                if holdout_grow
                else "holdout = pha2*(1-pha) from the 8-bit pha2 and pha, rounded to 8 bits"
            )
            + "; bgr includes them",
        }
    (Path(out) / "clip.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
