"""An OpenTimelineIO track as shots to matte, and the edit given back with a matte track above it.

Each clip is a Job of its own: a clip boundary in an edit is a cut, and RVM's recurrent memory must not
carry one shot into the next. A clip's Job covers its source range plus handles (for the compositor's
slip room), the handles shortened where the media ends or its frames stop on disk.

OTIO times are media times (``RationalTime`` at the media's rate); the engine reads frame numbers. The
map between them is linear, one ``MediaFrames`` per clip, and this is the one place that knows it:

- ``ImageSequenceReference``: as OTIO's ``frame_for_time``: ``start_frame`` + the offset from the start of
  ``available_range`` (``frame_step`` 1 only: a stepped sequence is reported, not guessed at).
- ``ExternalReference`` to a movie (an extension of ``spec.names.VIDEO_EXTENSIONS``): the frame's index from
  the start of ``available_range`` (the movie's first frame, often its start timecode; time 0 without an
  available range), numbered from 1 as the engine numbers a video's decoded frames (``Job.start_frame``
  1): time ``start + n`` is engine frame ``n + 1``, and the mattes are numbered so.
- ``ExternalReference`` to a sequence pattern (``plate.####.exr``, ``%04d``): the first frame on disk is the
  start of ``available_range``; without an available range a time's value is its frame number (as
  Hiero writes such references).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio
from opentimelineio.opentime import RationalTime, TimeRange

from ..errors import InputError, RvmError
from ..job import Job
from ..render_report import ProgressCallback, RenderReport
from ..spec.frames import format_frames, split_pattern
from ..spec.names import is_video
from ..spec.progress import DONE, WARNING, event

#: The name of the track the mattes go on, above the clips' own track.
MATTE_TRACK = "RVM matte"
#: Frames of a matte file name: ``####`` as the engine writes them (longer numbers unpadded).
MATTE_PADDING = 4


@dataclass(frozen=True)
class MediaFrames:
    """One clip's media: the engine's input for it, and its times as engine frame numbers."""

    plate: str  # a sequence pattern or a video file, as ``Job.input``
    rate: float
    origin_time: RationalTime  # the media time of engine frame ``origin_frame``
    origin_frame: int
    available: frozenset[int]  # frames that exist (on disk, in the video) and lie in the available range

    def frame_at(self, time: RationalTime) -> int:
        return self.origin_frame + round((time - self.origin_time).value_rescaled_to(self.rate))

    def time_at(self, frame: int) -> RationalTime:
        return (self.origin_time + RationalTime(frame - self.origin_frame, self.rate)).rescaled_to(self.rate)


@dataclass(frozen=True)
class Shot:
    """A clip to matte: its frames without and with handles, and where its mattes go."""

    index: int  # the clip's position among the track's children (gaps and transitions counted)
    number: int  # 1 for the track's first clip, 2 for the next...
    clip_name: str
    folder: str  # under the output folder; unique on the track
    media: MediaFrames
    source: tuple[int, int]  # the clip's source range as engine frames, inclusive
    rendered: tuple[int, int]  # with its handles

    @property
    def handles(self) -> tuple[int, int]:
        return self.source[0] - self.rendered[0], self.rendered[1] - self.source[1]

    def output(self, out_dir: str | os.PathLike[str]) -> str:
        return os.path.join(os.fspath(out_dir), self.folder, f"{self.folder}.{'#' * MATTE_PADDING}.exr")

    def job(self, out_dir: str | os.PathLike[str], **options: Any) -> Job:
        """The clip's render; ``options`` are the Job fields the command passes through (colour, device...)."""
        return Job(
            input=self.media.plate,
            output=self.output(out_dir),
            frames=f"{self.rendered[0]}-{self.rendered[1]}",
            start_frame=1,
            **options,
        )

    def describe(self) -> str:
        return f"clip {self.number} {self.clip_name!r}"


@dataclass(frozen=True)
class SkippedClip:
    """A clip that gets no matte, and why: ``missing`` media is a failure, ``unsupported`` media is not."""

    index: int
    number: int
    clip_name: str
    kind: str  # "missing" or "unsupported"
    reason: str

    def describe(self) -> str:
        return f"clip {self.number} {self.clip_name!r}: {self.reason}"


class _NoMedia(Exception):
    """A clip's media cannot be matted; ``kind`` as ``SkippedClip.kind``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# ------------------------------------------------------------------------------------------- reading


def read_timeline(path: str | os.PathLike[str]) -> otio.schema.Timeline:
    """The timeline in an ``.otio`` file (or any format an installed OTIO adapter reads), or an InputError."""
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise InputError(f"{text}: timeline file not found")
    try:
        result = otio.adapters.read_from_file(text)
    except Exception as exc:  # noqa: BLE001 - OTIO raises its own kinds and ValueError for a bad document
        raise InputError(f"{text}: cannot read the timeline: {exc}") from None
    if not isinstance(result, otio.schema.Timeline):
        raise InputError(f"{text}: holds a {result.schema_name()}, not a timeline")
    return result


def find_track(timeline: otio.schema.Timeline, name: str | None) -> int:
    """The index in ``timeline.tracks`` of the video track named ``name``, or of the lowest video track."""
    videos = [(i, t) for i, t in enumerate(timeline.tracks) if t.kind == otio.schema.TrackKind.Video]
    if not videos:
        raise InputError(f"timeline {timeline.name!r} has no video track")
    if name is None:
        return videos[0][0]
    for index, track in videos:
        if track.name == name:
            return index
    names = ", ".join(repr(t.name) for _, t in videos)
    raise InputError(f"--track: no video track named {name!r}; video tracks: {names}")


def plan_track(track: otio.schema.Track, base_dir: str | os.PathLike[str], handles: int) -> list[Shot | SkippedClip]:
    """A shot (or the reason there is none) for each clip of ``track``, in order; relative media paths are
    taken from ``base_dir`` (the timeline file's folder)."""
    if handles < 0:
        raise InputError(f"--handles: must be 0 or more, got {handles}")
    clips = [(i, item) for i, item in enumerate(track) if isinstance(item, otio.schema.Clip)]
    folders = _folder_names([clip.name for _, clip in clips])
    planned: list[Shot | SkippedClip] = []
    for number, ((index, clip), folder) in enumerate(zip(clips, folders, strict=True), start=1):
        try:
            media = media_frames(clip.media_reference, Path(base_dir))
            planned.append(_shot(index, number, clip, folder, media, handles))
        except _NoMedia as exc:
            planned.append(SkippedClip(index, number, clip.name, exc.kind, exc.reason))
        except InputError as exc:  # a reference the sequence reader refuses (two frame tokens...)
            planned.append(SkippedClip(index, number, clip.name, "missing", str(exc)))
    return planned


def _shot(index: int, number: int, clip: otio.schema.Clip, folder: str, media: MediaFrames, handles: int) -> Shot:
    source_range = clip.trimmed_range()
    first = media.frame_at(source_range.start_time)
    count = round(source_range.duration.value_rescaled_to(media.rate))
    last = first + count - 1
    wanted = range(first, last + 1)
    absent = [f for f in wanted if f not in media.available]
    if count < 1 or absent:
        spelled = format_frames(absent) if absent else "none"
        raise _NoMedia("missing", f"{media.plate}: source frames {first}-{last} not all there (missing {spelled})")
    head = _extend(first, -1, handles, media.available)
    tail = _extend(last, +1, handles, media.available)
    return Shot(index, number, clip.name, folder, media, (first, last), (head, tail))


def _extend(frame: int, step: int, handles: int, available: frozenset[int]) -> int:
    """Up to ``handles`` frames beyond ``frame`` in direction ``step``, stopping at the first one not there."""
    for _ in range(handles):
        if frame + step not in available:
            break
        frame += step
    return frame


def _folder_names(names: Iterable[str]) -> list[str]:
    """A file-system-safe folder per clip: its name, with the clip's number added where names repeat."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") for name in names]
    counts = {name: safe.count(name) for name in safe}
    return [
        name if name and counts[name] == 1 else f"{name or 'clip'}_{number}"
        for number, name in enumerate(safe, start=1)
    ]


def media_frames(reference: Any, base_dir: Path) -> MediaFrames:
    """The engine's view of a clip's media reference (module docstring: the mapping), or ``_NoMedia``."""
    if isinstance(reference, otio.schema.ImageSequenceReference):
        return _image_sequence(reference, base_dir)
    if isinstance(reference, otio.schema.ExternalReference):
        path = _local_path(reference.target_url, base_dir)
        if is_video(path) and split_pattern(path) is None:
            return _movie(reference, path)
        if split_pattern(path) is not None:
            return _pattern(reference, path)
        raise _NoMedia("unsupported", f"{path}: neither a movie nor an image sequence pattern")
    if isinstance(reference, otio.schema.MissingReference):
        raise _NoMedia("missing", "no media (a missing reference)")
    raise _NoMedia("unsupported", f"its media is a {reference.schema_name()}, not a sequence or a movie")


def _local_path(url: str, base_dir: Path) -> str:
    if not url:
        raise _NoMedia("missing", "the media reference has no target_url")
    path = otio.url_utils.filepath_from_url(url) if "://" in url else url
    return path if os.path.isabs(path) else str(base_dir / path)


def _media_rate(reference: Any, fallback: float | None = None) -> float:
    available = reference.available_range
    rate = available.start_time.rate if available is not None else fallback
    if not rate or rate <= 0:
        raise _NoMedia("unsupported", "its media has no frame rate (no available_range)")
    return rate


def _in_available_range(reference: Any, media_frames_: MediaFrames, frames: Iterable[int]) -> frozenset[int]:
    available = reference.available_range
    if available is None:
        return frozenset(frames)
    first = media_frames_.frame_at(available.start_time)
    count = round(available.duration.value_rescaled_to(media_frames_.rate))
    return frozenset(f for f in frames if first <= f < first + count)


def _image_sequence(reference: otio.schema.ImageSequenceReference, base_dir: Path) -> MediaFrames:
    from ..sequence import ImageSequence

    if reference.frame_step != 1:
        raise _NoMedia("unsupported", f"image sequence with frame_step {reference.frame_step} (only 1 is read)")
    folder = _local_path(reference.target_url_base or ".", base_dir)
    padding = "#" * max(1, reference.frame_zero_padding)
    plate = os.path.join(folder, f"{reference.name_prefix}{padding}{reference.name_suffix}")
    available = reference.available_range
    rate = reference.rate or _media_rate(reference)
    origin = available.start_time.rescaled_to(rate) if available is not None else RationalTime(0, rate)
    partial = MediaFrames(plate, rate, origin, reference.start_frame, frozenset())
    on_disk = ImageSequence(plate).frames()
    return _with_frames(reference, partial, on_disk)


def _pattern(reference: otio.schema.ExternalReference, path: str) -> MediaFrames:
    from ..sequence import ImageSequence

    on_disk = ImageSequence(path).frames()
    if not on_disk:
        raise _NoMedia("missing", f"{path}: no frames on disk")
    available = reference.available_range
    if available is None:
        raise _NoMedia("unsupported", f"{path}: a sequence reference with no available_range has no frame rate")
    rate = _media_rate(reference)
    partial = MediaFrames(path, rate, available.start_time.rescaled_to(rate), on_disk[0], frozenset())
    return _with_frames(reference, partial, on_disk)


def _movie(reference: otio.schema.ExternalReference, path: str) -> MediaFrames:
    from ..errors import ImageReadError
    from ..sequence import VideoSource

    if not os.path.exists(path):
        raise _NoMedia("missing", f"{path}: file not found")
    try:
        with_video = VideoSource(path, start_frame=1)
    except ImageReadError as exc:
        raise _NoMedia("missing", str(exc)) from None
    try:
        frames, video_rate = with_video.frames(), with_video.frame_rate
    finally:
        with_video.close()
    rate = _media_rate(reference, float(video_rate) if video_rate else None)
    available = reference.available_range
    origin = available.start_time.rescaled_to(rate) if available is not None else RationalTime(0, rate)
    return _with_frames(reference, MediaFrames(path, rate, origin, 1, frozenset()), frames)


def _with_frames(reference: Any, partial: MediaFrames, frames: list[int]) -> MediaFrames:
    if not frames:
        raise _NoMedia("missing", f"{partial.plate}: no frames on disk")
    available = _in_available_range(reference, partial, frames)
    return MediaFrames(partial.plate, partial.rate, partial.origin_time, partial.origin_frame, available)


# ------------------------------------------------------------------------------------------- writing


def matte_reference(shot: Shot, out_dir: str | os.PathLike[str]) -> otio.schema.ImageSequenceReference:
    """The rendered mattes as an image sequence whose times are the source media's: the clip's own
    source range finds the matte of each of its frames."""
    first, last = shot.rendered
    folder = os.path.abspath(os.path.join(os.fspath(out_dir), shot.folder))
    return otio.schema.ImageSequenceReference(
        target_url_base=otio.url_utils.url_from_filepath(folder + os.sep),
        name_prefix=f"{shot.folder}.",
        name_suffix=".exr",
        start_frame=first,
        frame_step=1,
        rate=shot.media.rate,
        frame_zero_padding=MATTE_PADDING,
        missing_frame_policy=otio.schema.ImageSequenceReference.MissingFramePolicy.error,
        available_range=TimeRange(shot.media.time_at(first), RationalTime(last - first + 1, shot.media.rate)),
    )


def matte_timeline(
    timeline: otio.schema.Timeline, track_index: int, rendered: dict[int, Shot], out_dir: str | os.PathLike[str]
) -> otio.schema.Timeline:
    """A copy of ``timeline`` with a track above ``track_index``: each rendered clip's matte at the clip's
    place with its source range, and a gap of the same length for every other item (transitions take no
    time of their own and are left out: the mattes cut where the clips' centres meet)."""
    result = timeline.deepcopy()
    source = result.tracks[track_index]
    mattes = otio.schema.Track(name=MATTE_TRACK, kind=otio.schema.TrackKind.Video)
    for index, item in enumerate(source):
        if isinstance(item, otio.schema.Transition):
            continue
        shot = rendered.get(index)
        if shot is None:
            mattes.append(otio.schema.Gap(source_range=TimeRange(duration=item.duration())))
            continue
        clip = otio.schema.Clip(
            name=f"{item.name} matte",
            media_reference=matte_reference(shot, out_dir),
            source_range=item.trimmed_range(),
        )
        clip.metadata["rvm"] = {
            "source_clip": item.name,
            "frames": f"{shot.rendered[0]}-{shot.rendered[1]}",
            "handle_in": shot.handles[0],
            "handle_out": shot.handles[1],
        }
        mattes.append(clip)
    result.tracks.insert(track_index + 1, mattes)
    return result


def write_timeline(timeline: otio.schema.Timeline, path: str | os.PathLike[str]) -> None:
    """Written to a hidden name beside it, then renamed: an editor never opens half a timeline."""
    target = os.fspath(path)
    folder, name = os.path.split(target)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        otio.adapters.write_to_file(timeline, temporary, adapter_name="otio_json")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# ------------------------------------------------------------------------------------------- rendering


class TimelineIncomplete(RvmError):
    """Some clips got no matte (missing media, a failed or stopped render); the others' are written, and so
    is the timeline. Exit 1: a script sees the partial result, the message names the clips."""


@dataclass
class TimelineResult:
    """What ``render_timeline`` did, clip by clip."""

    otio_path: str
    track: str
    clips: int  # every clip of the track, whatever its media
    rendered: list[tuple[Shot, RenderReport]] = field(default_factory=list)
    skipped: list[SkippedClip] = field(default_factory=list)
    failed: list[tuple[Shot, str]] = field(default_factory=list)
    stopped: bool = False

    @property
    def missing(self) -> list[SkippedClip]:
        return [clip for clip in self.skipped if clip.kind == "missing"]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed or self.stopped)

    def problems(self) -> list[str]:
        lines = [clip.describe() for clip in self.missing]
        lines += [f"{shot.describe()}: {message}" for shot, message in self.failed]
        return lines + (["stopped on request"] if self.stopped else [])


def timeline_output(timeline_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> str:
    """``OUT_DIR/<timeline's stem>.otio``: the edit with its mattes, beside them."""
    return os.path.join(os.fspath(out_dir), f"{Path(timeline_path).stem}.otio")


def render_timeline(
    timeline_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    track: str | None = None,
    handles: int = 0,
    options: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    notify: Callable[[str], None] | None = None,
) -> TimelineResult:
    """Matte every clip of a track, one Job each, then write the edit with a matte track above it.

    ``options`` are Job fields for every clip (``overwrite`` among them). ``notify`` receives a line per
    clip for a console. A clip whose media is missing, or whose render raises an ``InputError``, is
    reported (a ``warning`` event) and the rest still render; any other error is raised after the
    timeline for the clips already rendered is written.
    """
    from ..render import render
    from ..render_outputs import check_outputs

    options = dict(options or {})
    say = notify or (lambda line: None)
    timeline = read_timeline(timeline_path)
    track_index = find_track(timeline, track)
    source_track = timeline.tracks[track_index]
    target = timeline_output(timeline_path, out_dir)
    if os.path.exists(target) and not options.get("overwrite"):
        raise InputError(f"output exists: {target}; use --overwrite to replace")
    planned = plan_track(source_track, Path(timeline_path).resolve().parent, handles)
    shots = [(item, item.job(out_dir, **options)) for item in planned if isinstance(item, Shot)]
    for shot, job in shots:  # every clip's outputs checked before the first renders: a rerun fails at once
        check_outputs(job, list(range(shot.rendered[0], shot.rendered[1] + 1)), False)
    result = TimelineResult(target, source_track.name, len(planned))
    warn = _warner(progress, say)
    for clip in (item for item in planned if isinstance(item, SkippedClip)):
        result.skipped.append(clip)
        warn(f"{clip.describe()} (not rendered)")
    try:
        for shot, job in shots:
            if stop is not None and stop.is_set():
                result.stopped = True
                break
            head, tail = shot.handles
            say(
                f"{shot.describe()}: frames {shot.rendered[0]}-{shot.rendered[1]} (source {shot.source[0]}-"
                f"{shot.source[1]}, handles {head}+{tail}) -> {job.output}"
            )
            try:
                report = render(job, progress=progress, stop=stop)
            except InputError as exc:
                result.failed.append((shot, str(exc)))
                warn(f"{shot.describe()}: {exc} (not rendered)")
                continue
            if report.stopped:
                result.stopped = True
                break
            if progress is not None:
                progress(event(DONE, **report.to_dict()))
            result.rendered.append((shot, report))
    finally:
        done = {shot.index: shot for shot, _ in result.rendered}
        write_timeline(matte_timeline(timeline, track_index, done, out_dir), target)
        say(f"wrote {target}: {len(done)} of {len(planned)} clips of track {source_track.name!r} matted")
    return result


def _warner(progress: ProgressCallback | None, say: Callable[[str], None]) -> Callable[[str], None]:
    def warn(message: str) -> None:
        if progress is not None:  # a terminal bar prints warnings itself
            progress(event(WARNING, message=message))
        else:
            say(f"warning: {message}")

    return warn
