"""Frame sources: numbered image sequences and video files behind one ``read(frame)`` interface.

The rules follow what compositors already type into a Read node, so a path copied out of Nuke or
Houdini works unchanged: ``####`` (one ``#`` per digit), ``%04d``, ``$F4``, ``@@@@``, a folder holding
one sequence, or any one frame of it. Frame ranges are written as Nuke writes them (``1001-1100``,
``1-10x2``), and gaps are reported by frame number, because "3 frames missing" sends a wrangler
hunting while "missing frames 1003-1005" does not.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np

from rvm_vfx.errors import ImageReadError, InputError, MissingFramesError
from rvm_vfx.frame_io import ImageHeader, Plate, read_image, timing_attributes
from rvm_vfx.spec.frames import (
    FramePattern,
    format_frame,
    format_frames,
    frame_digits,
    parse_frames,
    split_numbered,
    split_pattern,
)
from rvm_vfx.spec.job import MISSING_MODES
from rvm_vfx.spec.names import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video

# Frame ranges, frame tokens and extensions are the contract's (``rvm_vfx.spec``), shared with the worker
# and the plugins; they are re-exported here for the engine's callers.
__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameSource",
    "ImageSequence",
    "VideoSource",
    "format_frame",
    "format_frames",
    "open_source",
    "parse_frames",
    "resolve_frames",
]

# --------------------------------------------------------------------------------------------- patterns


def _infer_padding(numbers: Iterable[str], must_fit: str | None = None) -> int:
    """The padding that most of these frame-number strings are written with.

    A stray file of another padding (``plate.01003.exr`` among ``plate.1001.exr``...) is outvoted
    instead of deciding the pattern; ``must_fit`` is a number the answer has to accept.
    """
    numbers = list(numbers)
    candidates = sorted({len(n.lstrip("-")) for n in numbers}) or [1]
    if must_fit is not None:
        candidates = [p for p in candidates if frame_digits(int(must_fit), p) == must_fit] or [len(must_fit)]
    return max(candidates, key=lambda p: (sum(frame_digits(int(n), p) == n for n in numbers), -p))


def _visible_files(directory: str) -> list[str]:
    try:
        with os.scandir(directory or ".") as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_folder(folder: str) -> FramePattern:
    groups: dict[tuple[str, str], list[str]] = {}
    for name in _visible_files(folder):
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        split = split_numbered(name)
        if split is not None:
            prefix, number, suffix = split
            groups.setdefault((prefix, suffix), []).append(number)
    if not groups:
        raise InputError(f"{folder}: no numbered image sequence in this folder")
    patterns = [
        FramePattern(folder, prefix, _infer_padding(numbers), suffix)
        for (prefix, suffix), numbers in sorted(groups.items())
    ]
    if len(patterns) > 1:
        listing = "; ".join(f"{p.hashes()} ({format_frames(_frames_on_disk(p), limit=3)})" for p in patterns)
        raise InputError(f"{folder}: {len(patterns)} image sequences in this folder, pass one as a pattern: {listing}")
    return patterns[0]


def _frames_on_disk(pattern: FramePattern) -> list[int]:
    """Frames whose file exists, spelled with the pattern's padding (or unpadded and longer)."""
    regex = re.compile(re.escape(pattern.prefix) + r"(-?\d+)" + re.escape(pattern.suffix))
    found = []
    for name in _visible_files(pattern.directory):
        match = regex.fullmatch(name)
        if match is None:
            continue
        number = int(match.group(1))
        # "plate.01001.exr" is not frame 1001 of a 4-padded sequence; "plate.10000.exr" is.
        if frame_digits(number, pattern.padding) == match.group(1):
            found.append(number)
    return sorted(found)


# -------------------------------------------------------------------------------------- frame sources


@runtime_checkable
class FrameSource(Protocol):
    """What the renderer needs from a plate: which frames exist and each one as a ``Plate``."""

    pattern: str

    def frames(self) -> list[int]: ...

    def path(self, frame: int) -> str: ...

    def read(self, frame: int) -> Plate: ...

    def close(self) -> None: ...


class ImageSequence:
    """A numbered image sequence on disk, given as a pattern, a folder or any one of its frames."""

    def __init__(self, path: str | os.PathLike[str], layer: str | None = None) -> None:
        text = os.fspath(path)
        self.layer = layer
        parsed = split_pattern(text)
        if parsed is not None:
            self._parsed = parsed
            self.pattern = text
            return
        if os.path.isdir(text):
            self._parsed = _scan_folder(text)
        else:
            directory, name = os.path.split(text)
            split = split_numbered(name)
            if split is None:
                raise InputError(
                    f"{text}: not an image sequence: no frame number; use a pattern such as "
                    "plate.####.exr or pass the folder of frames"
                )
            prefix, number, suffix = split
            siblings = [number]
            for sibling in _visible_files(directory):
                other = split_numbered(sibling)
                if other is not None and (other[0], other[2]) == (prefix, suffix):
                    siblings.append(other[1])
            padding = _infer_padding(siblings, must_fit=number)
            self._parsed = FramePattern(directory, prefix, padding, suffix)
        self.pattern = self._parsed.hashes()

    @property
    def padding(self) -> int:
        return self._parsed.padding

    @property
    def directory(self) -> str:
        return self._parsed.directory

    def frames(self) -> list[int]:
        """Frames present on disk now (listed afresh on each call: a farm may still be writing them)."""
        return _frames_on_disk(self._parsed)

    @property
    def first(self) -> int:
        return self._bounds()[0]

    @property
    def last(self) -> int:
        return self._bounds()[1]

    def _bounds(self) -> tuple[int, int]:
        frames = self.frames()
        if not frames:
            raise MissingFramesError(f"{self.pattern}: no frames on disk")
        return frames[0], frames[-1]

    def path(self, frame: int) -> str:
        return self._parsed.path(frame)

    def read(self, frame: int) -> Plate:
        return read_image(self.path(frame), self.layer)

    def close(self) -> None:
        """Nothing held open; present so every source can be closed the same way."""

    def __enter__(self) -> ImageSequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageSequence({self.pattern!r}, layer={self.layer!r})"


_TIMECODE = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2})")


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


@dataclass(frozen=True)
class Timecode:
    """A video's start timecode, counted as SMPTE 12M counts: whole frames at the nominal rate.

    23.976 fps counts 24 frames a second (its timecode drifts from the clock, as editorial expects);
    29.97 and 59.94 fps written with ``;`` are drop-frame: frame numbers 0 and 1 (0-3 at 59.94) are
    skipped at the start of every minute except each tenth, so that the timecode keeps to the clock.
    """

    start: int  # frames since 00:00:00:00
    fps: int
    drop: bool

    @classmethod
    def parse(cls, text: str, rate: Fraction) -> Timecode | None:
        """``HH:MM:SS:FF`` (or ``;`` / ``.`` before the frames for drop-frame); None when not one."""
        match = _TIMECODE.fullmatch(text.strip())
        fps = round(rate)
        if match is None or fps < 1:
            return None
        hours, minutes, seconds, separator, frames = match.groups()
        h, m, s, f = int(hours), int(minutes), int(seconds), int(frames)
        if h > 23 or m > 59 or s > 59 or f >= fps:
            return None
        drop = separator in ";.," and fps % 30 == 0  # drop-frame exists only for the 30000/1001 family
        count = (3600 * h + 60 * m + s) * fps + f
        if drop:
            total_minutes = 60 * h + m
            count -= cls._dropped_per_minute(fps) * (total_minutes - total_minutes // 10)
        return cls(count, fps, drop)

    @staticmethod
    def _dropped_per_minute(fps: int) -> int:
        return fps // 15  # 2 at 29.97, 4 at 59.94

    def fields(self, index: int) -> tuple[int, int, int, int]:
        """(hours, minutes, seconds, frames) of the ``index``-th frame after the start, wrapping at 24 h."""
        n = self.start + index
        if self.drop:
            dropped = self._dropped_per_minute(self.fps)
            per_ten = 600 * self.fps - 9 * dropped
            per_minute = 60 * self.fps - dropped
            tens, rest = divmod(n, per_ten)
            n += 9 * dropped * tens + (dropped * ((rest - dropped) // per_minute) if rest > dropped else 0)
        frames = n % self.fps
        seconds = n // self.fps
        return seconds // 3600 % 24, seconds // 60 % 60, seconds % 60, frames

    def packed(self, index: int) -> tuple[int, int]:
        """The ``index``-th frame's timecode as OpenEXR's ``timeCode`` stores it: (BCD time and flags, user bits).

        The frames field holds 0-29; above 30 fps SMPTE counts frame pairs and flags the second of each.
        """
        hours, minutes, seconds, frames = self.fields(index)
        second_of_pair = 0
        if self.fps > 30:
            frames, second_of_pair = divmod(frames, 2)
        value = _bcd(frames) | int(self.drop) << 6 | second_of_pair << 15
        value |= _bcd(seconds) << 8 | _bcd(minutes) << 16 | _bcd(hours) << 24
        return value, 0


class VideoSource:
    """A video file as frames ``start_frame, start_frame + 1, ...``, decoded with PyAV.

    Decoding runs forward only: reading frames in order costs one decode each, and a step back
    reopens the decoder from the start rather than seeking. Seeking by timestamp lands on keyframes
    and cannot be trusted to give frame N exactly in variable-frame-rate or edit-listed files, and a
    matte that is one frame off its plate is worse than a slow one. Pixels are 8 bits (or 16 for
    high-bit-depth video) sRGB-encoded RGB in [0, 1], converted by FFmpeg using the stream's own
    matrix and range tags.

    A video has no per-frame header, so each frame's gets the container's frame rate and, where the
    container has a start timecode, that frame's own timecode: the matte sequence then lines up in
    editorial and in Nuke as the video did.
    """

    def __init__(self, path: str | os.PathLike[str], start_frame: int = 1) -> None:
        import av  # imported here so image-only work never pays for FFmpeg

        self._av = av
        self.filename = os.fspath(path)
        self.pattern = self.filename
        self.start_frame = int(start_frame)
        if not os.path.exists(self.filename):
            raise ImageReadError(f"{self.filename}: file not found")
        if os.path.getsize(self.filename) == 0:
            raise ImageReadError(f"{self.filename}: file is empty (0 bytes)")
        self._lock = threading.Lock()
        self._container = None
        self._open()
        stream = self._stream
        self.width = int(stream.codec_context.width)
        self.height = int(stream.codec_context.height)
        self.frame_rate: Fraction | None = Fraction(stream.average_rate) if stream.average_rate else None
        aspect = stream.sample_aspect_ratio
        self.pixel_aspect = float(aspect) if aspect else 1.0
        pixel_format = stream.codec_context.format
        self.bits = max((c.bits for c in pixel_format.components), default=8) if pixel_format else 8
        self.codec = stream.codec_context.name
        self._count = int(stream.frames) or self._count_packets()
        if self._count <= 0:
            raise ImageReadError(f"{self.filename}: video has no frames")
        self._warnings: list[str] = []
        self.timecode = self._find_timecode()
        self._cached: tuple[int, np.ndarray] | None = None

    def _find_timecode(self) -> Timecode | None:
        """The start timecode, where FFmpeg puts it: the video stream (mov/mp4 tmcd), the container (MXF),
        or a data stream of its own."""
        container = self._container
        places = [self._stream.metadata, container.metadata, *(s.metadata for s in container.streams.data)]
        text = next((place["timecode"] for place in places if place.get("timecode")), None)
        if text is None or self.frame_rate is None:
            return None
        timecode = Timecode.parse(text, self.frame_rate)
        if timecode is None:
            # No file name: the render reports a sequence-wide warning once, by its text.
            self._warnings.append(
                f"video timecode {text!r} is not HH:MM:SS:FF at {float(self.frame_rate):.3f} fps; "
                "the mattes carry no timecode"
            )
        return timecode

    def _open(self) -> None:
        av = self._av
        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(self.filename)
        except (av.error.FFmpegError, OSError) as exc:
            raise ImageReadError(f"{self.filename}: cannot read video: {exc}") from exc
        if not self._container.streams.video:
            self._container.close()
            raise ImageReadError(f"{self.filename}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._decoded: Iterator = self._container.decode(self._stream)
        self._next_index = 0

    def _count_packets(self) -> int:
        """Frame count for containers that do not store one (mkv, webm): one packet per frame."""
        try:
            count = sum(1 for packet in self._container.demux(self._stream) if packet.size)
        finally:
            self._open()
        return count

    def frames(self) -> list[int]:
        return list(range(self.start_frame, self.start_frame + self._count))

    @property
    def first(self) -> int:
        return self.start_frame

    @property
    def last(self) -> int:
        return self.start_frame + self._count - 1

    def path(self, frame: int) -> str:
        return self.filename

    def header(self, frame: int | None = None) -> ImageHeader:
        """The header of ``frame`` (its timecode), or of the video as a whole when None."""
        timecode = None
        if self.timecode is not None and frame is not None:
            timecode = self.timecode.packed(frame - self.start_frame)
        timing, types = timing_attributes(self.frame_rate, timecode)
        return ImageHeader(
            width=self.width,
            height=self.height,
            pixel_aspect=self.pixel_aspect,
            attributes={"rvm:source_video": self.filename, **timing},
            attribute_types=types,
            colorspace=None,
            is_float=False,
            format_name=self.codec,
            bits=self.bits,
        )

    def read(self, frame: int) -> Plate:
        index = frame - self.start_frame
        if not 0 <= index < self._count:
            raise ImageReadError(f"{self.filename}: frame {frame} is outside the video ({self.first}-{self.last})")
        with self._lock:
            if self._cached is None or self._cached[0] != index:
                self._cached = (index, self._decode(index))
            rgb = self._cached[1].copy()
        return Plate(rgb=rgb, header=self.header(frame), warnings=list(self._warnings), path=self.filename)

    def _decode(self, index: int) -> np.ndarray:
        av = self._av
        if index < self._next_index:
            self._open()
        try:
            while True:
                frame = next(self._decoded)
                self._next_index += 1
                if self._next_index > index:
                    break
        except StopIteration:
            raise ImageReadError(
                f"{self.filename}: video ended after {self._next_index} frames, "
                f"frame {index + self.start_frame} requested"
            ) from None
        except av.error.FFmpegError as exc:
            frame_number = index + self.start_frame
            raise ImageReadError(f"{self.filename}: cannot decode frame {frame_number}: {exc}") from exc
        if self.bits > 8:
            return frame.to_ndarray(format="rgb48le").astype(np.float32) / np.float32(65535.0)
        return frame.to_ndarray(format="rgb24").astype(np.float32) / np.float32(255.0)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoSource({self.filename!r}, start_frame={self.start_frame})"


def open_source(
    path: str | os.PathLike[str], layer: str | None = None, start_frame: int = 1
) -> ImageSequence | VideoSource:
    """The right source for a path: a video file by its extension, else an image sequence."""
    text = os.fspath(path)
    if is_video(text) and split_pattern(text) is None:
        return VideoSource(text, start_frame=start_frame)
    return ImageSequence(text, layer=layer)


def resolve_frames(
    seq: FrameSource, frames: Iterable[int] | None = None, missing: str = "error"
) -> list[tuple[int, int]]:
    """Pair each output frame with the frame to read for it.

    ``frames`` None means every frame from the first to the last on disk, so gaps inside are caught.
    ``missing="hold"`` fills a gap with the last frame before it (or, before the first frame, the
    first), as a Nuke Read does, keeping output numbering continuous for editorial.
    """
    if missing not in MISSING_MODES:
        accepted = ", ".join(MISSING_MODES)
        raise InputError(f"unknown missing-frames policy {missing!r}; accepted: {accepted}")
    on_disk = sorted(set(seq.frames()))
    if frames is None:
        if not on_disk:
            raise MissingFramesError(f"{seq.pattern}: no frames on disk")
        requested = list(range(on_disk[0], on_disk[-1] + 1))
    else:
        requested = sorted(set(frames))
        if not requested:
            raise InputError(f"{seq.pattern}: empty frame range")
    present = set(on_disk)
    absent = [f for f in requested if f not in present]
    if absent and (missing == "error" or not on_disk):
        raise MissingFramesError(
            f"{seq.pattern}: missing frames {format_frames(absent)} (of {format_frames(requested)})"
        )
    mapping = []
    for frame in requested:
        if frame in present:
            mapping.append((frame, frame))
            continue
        position = bisect.bisect_left(on_disk, frame)
        mapping.append((frame, on_disk[position - 1] if position > 0 else on_disk[0]))
    return mapping
