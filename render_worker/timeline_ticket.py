"""A ticket that points at a timeline: every clip of one OpenTimelineIO track matted as a Job of its own.

``{"timeline": "edit/cut01.otio", "output": "cut01_mattes", "track": "V1", "handles": 8, ...}`` goes
through the editorial code of ``rvm-vfx timeline`` (the clips planned by ``plan_track``, the edit written
back by ``matte_timeline``), and each clip's Job through ``ticket.check_job`` like any ticket's: the
.otio and every clip's media inside an allowed input root, the mattes and the written .otio under the
output root, the checkpoint from the models dir. A clip whose media is missing is rendered around and
named in the report; the job then ends in ``failed/`` with cause ``input``, once the others are written.

A stopped job resumes clip by clip: ``timeline_clips.json`` in the job folder lists the clips finished,
so a later attempt neither renders them again nor trips over their mattes as existing outputs.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import opentimelineio as otio

from rvm_vfx.editorial.cli import CLIP_FIELDS
from rvm_vfx.editorial.timeline import (
    Shot,
    SkippedClip,
    find_track,
    matte_timeline,
    plan_track,
    read_timeline,
    timeline_output,
    write_timeline,
)
from rvm_vfx.errors import InputError
from rvm_vfx.spec.frames import format_frames
from rvm_vfx.spec.job import Job

from .config import WorkerConfig
from .executor_local import Outcome, ProgressSink
from .fsutil import atomic_write_json, inside, real
from .ticket import Ticket, _absolute, check_job, resolve_checkpoint

if TYPE_CHECKING:
    from .claim import Claim
    from .runner import Executor

#: The ticket's own fields; a clip's Job gets its input, output and frames from the edit.
TIMELINE_FIELDS = ("timeline", "output", "track", "handles", "name", "priority")
#: Job fields a timeline ticket passes to every clip's Job (checked by the Job schema): the timeline command's,
#: without ``layer``, and the farm's own settings.
CLIP_OPTIONS = (
    *(name for name in CLIP_FIELDS if name != "layer"),
    "preroll",
    "cuts",
    "snapshot_every",
    "metadata",
)
#: In the job folder: the folders of the clips already rendered, for a resumed attempt.
CLIPS_DONE = "timeline_clips.json"


@dataclass
class TimelineTicket:
    """A validated timeline ticket: the edit, where its mattes go, and one checked Ticket per clip to render."""

    name: str
    timeline_path: Path
    out_dir: Path
    timeline: otio.schema.Timeline
    track_index: int
    clips: list[tuple[Shot, Ticket]]
    skipped: list[SkippedClip]
    rendered: list[Shot] = field(default_factory=list)
    kind: str = "timeline"

    @property
    def frames(self) -> list[int]:
        """Every clip's frames, one after the other: what the job renders in all (``frames_total``)."""
        return [frame for _, clip in self.clips for frame in clip.frames]

    @property
    def target(self) -> str:
        return timeline_output(self.timeline_path, self.out_dir)

    @property
    def missing(self) -> list[SkippedClip]:
        return [clip for clip in self.skipped if clip.kind == "missing"]

    def report_fields(self) -> dict[str, Any]:
        """The report's ``timeline`` entry: each clip of the track and what became of it."""
        done = {shot.index for shot in self.rendered}
        clips: list[dict[str, Any]] = [
            {
                "clip": shot.number,
                "name": shot.clip_name,
                "state": "rendered" if shot.index in done else "not rendered",
                "frames": format_frames(ticket.frames),
                "output": ticket.job.output,
            }
            for shot, ticket in self.clips
        ]
        clips += [
            {"clip": c.number, "name": c.clip_name, "state": f"{c.kind} media", "reason": c.reason}
            for c in self.skipped
        ]
        clips.sort(key=lambda entry: entry["clip"])
        return {
            "timeline": {
                "input": str(self.timeline_path),
                "track": self.timeline.tracks[self.track_index].name,
                "output": self.target,
                "clips": clips,
            }
        }


def load_timeline_ticket(data: dict[str, Any], config: WorkerConfig) -> TimelineTicket:
    """Validate a timeline ticket field by field, plan its clips and check each clip's Job as a ticket's."""
    unknown = sorted(set(data) - set(TIMELINE_FIELDS) - set(CLIP_OPTIONS))
    if unknown:
        raise InputError(f"ticket: unknown field {unknown[0]!r} in a timeline ticket")
    for name in ("timeline", "output", "track", "name"):
        if name in data and not isinstance(data[name], str):
            raise InputError(f"ticket field {name!r}: expected a string, got {type(data[name]).__name__}")
    for name in ("timeline", "output"):
        if not data.get(name):
            raise InputError(f"ticket field {name!r}: required in a timeline ticket")
    handles = data.get("handles", 0)
    if not isinstance(handles, int) or isinstance(handles, bool) or handles < 0:
        raise InputError(f"ticket field 'handles': expected an integer of 0 or more, got {handles!r}")
    options = _clip_options(data)
    options["checkpoint"] = str(resolve_checkpoint(options.get("checkpoint"), config))  # once, not per clip
    timeline_path = _timeline_path(data["timeline"], config)
    out_dir = _output_dir(data["output"], config)
    timeline = read_timeline(timeline_path)
    try:
        track_index = find_track(timeline, data.get("track"))
    except InputError as exc:
        raise InputError(f"ticket field 'track': {exc}") from None
    planned = plan_track(timeline.tracks[track_index], timeline_path.parent, handles)
    target = timeline_output(timeline_path, out_dir)
    if os.path.exists(target) and not options.get("overwrite"):
        raise InputError(f"ticket field 'output': {target} exists; set \"overwrite\": true to replace it")
    clips = [(shot, _check_clip(shot, out_dir, options, config)) for shot in planned if isinstance(shot, Shot)]
    total = sum(len(ticket.frames) for _, ticket in clips)
    if total > config.max_frames:
        limit = config.max_frames
        raise InputError(f"ticket: the timeline's clips have {total} frames; this worker's limit is {limit}")
    return TimelineTicket(
        name=data.get("name") or timeline_path.stem,
        timeline_path=timeline_path,
        out_dir=out_dir,
        timeline=timeline,
        track_index=track_index,
        clips=clips,
        skipped=[item for item in planned if isinstance(item, SkippedClip)],
    )


def _clip_options(data: dict[str, Any]) -> dict[str, Any]:
    """The matte settings, typed by the Job schema (which names a wrong field) before any clip is planned."""
    given = {name: data[name] for name in CLIP_OPTIONS if name in data}
    checked = Job.from_dict({"input": "-", "output": "-.####.exr", **given}, source="ticket")
    return {name: getattr(checked, name) for name in given}


def _timeline_path(value: str, config: WorkerConfig) -> Path:
    """The .otio, read like a plate: relative to the first input root, and inside one of them."""
    roots = list(config.allow_input_roots)
    path = Path(_absolute(value, roots[0] if roots else None, "timeline"))
    if not inside(path, roots):
        raise InputError(f"ticket field 'timeline': {value!r} resolves outside the allowed input roots")
    return real(path)


def _output_dir(value: str, config: WorkerConfig) -> Path:
    """The folder of the mattes and the written .otio: under the output root."""
    path = Path(value) if Path(value).is_absolute() else config.output_root / value
    if not inside(path, [config.output_root]) or real(path) == real(config.output_root):
        raise InputError(f"ticket field 'output': {value!r} resolves outside the output root")
    return real(path)


def _check_clip(shot: Shot, out_dir: Path, options: dict[str, Any], config: WorkerConfig) -> Ticket:
    """The clip's Job through the checks of any ticket's; a refusal names the clip."""
    try:
        return check_job(shot.job(out_dir, **options), config)
    except InputError as exc:
        raise InputError(f"ticket field 'timeline': {shot.describe()}: {exc}") from None


# ------------------------------------------------------------------------------------------- rendering


def render_timeline_ticket(
    ticket: TimelineTicket, executor: Executor, claim: Claim, stop: threading.Event, progress: ProgressSink
) -> Outcome:
    """Render the clips one after the other through the worker's executor, then write the edit with its mattes.

    Stopped, it returns at once (the .otio is written by the attempt that finishes). Clips with missing
    media raise an InputError naming them, after the others are rendered and the .otio is written.
    """
    done_file = claim.job_dir / CLIPS_DONE
    finished = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    frames_written: list[int] = []
    reports: list[dict[str, Any]] = []
    for shot, clip in ticket.clips:
        if shot.folder in finished:
            ticket.rendered.append(shot)
            continue
        outcome = executor.run(clip, claim, stop, progress)
        frames_written += outcome.frames_written
        if outcome.stopped:
            return Outcome(report={"clips": reports}, stopped=True, frames_written=frames_written)
        reports.append({"clip": shot.number, **{k: v for k, v in outcome.report.items() if k != "outputs"}})
        ticket.rendered.append(shot)
        finished.add(shot.folder)
        atomic_write_json(done_file, sorted(finished))
    rendered = {shot.index: shot for shot in ticket.rendered}
    ticket.out_dir.mkdir(parents=True, exist_ok=True)  # no clip may have made it: all media missing
    write_timeline(matte_timeline(ticket.timeline, ticket.track_index, rendered, ticket.out_dir), ticket.target)
    if ticket.missing:
        named = "; ".join(clip.describe() for clip in ticket.missing)
        raise InputError(f"timeline {ticket.timeline_path.name}: media missing, not rendered: {named}")
    return Outcome(report={"clips": reports}, stopped=False, frames_written=frames_written)
