"""A worker ticket that points at a timeline: each clip of an OTIO track matted as a Job of its own.

The edit is built with the opentimelineio API over a real PNG plate; the worker runs in this process, one
``step`` at a time, so the test waits on nothing.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange

from render_worker.config import build_config
from render_worker.ticket import load_ticket
from render_worker.worker import Worker
from rvm_vfx.errors import InputError

from .test_worker_helpers import (
    drop_ticket,
    jobs_in,
    make_models_dir,
    make_plate,
    read_alpha,
    reference_render,
    torch_threads,
)

RATE = 24
TC = 86400  # 01:00:00:00: media times start at the source's timecode, as editors export them


def _range(start: int, duration: int) -> TimeRange:
    return TimeRange(RationalTime(start, RATE), RationalTime(duration, RATE))


def _clip(name: str, folder: Path, start: int, duration: int) -> otio.schema.Clip:
    """A clip of ``folder/plate.1001-1010.png``: source frame 1001 is media time ``TC``."""
    media = otio.schema.ImageSequenceReference(
        target_url_base=otio.url_utils.url_from_filepath(str(folder) + "/"),
        name_prefix="plate.",
        name_suffix=".png",
        start_frame=1001,
        rate=RATE,
        frame_zero_padding=4,
        available_range=_range(TC, 10),
    )
    return otio.schema.Clip(name, media, _range(TC + start - 1001, duration))


def _edit(path: Path, *clips: otio.schema.Clip) -> Path:
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for clip in clips:
        track.append(clip)
    timeline = otio.schema.Timeline(name="cut01")
    timeline.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    otio.adapters.write_to_file(timeline, str(path))
    return path


@pytest.fixture
def farm(tmp_path: Path) -> dict[str, Path]:
    plates = tmp_path / "plates"
    make_plate(plates / "shotA", 10, 64, 48)
    make_plate(tmp_path / "outside" / "shotX", 10, 64, 48)
    return {
        "base": tmp_path,
        "plates": plates,
        "outside": tmp_path / "outside",
        "models": make_models_dir(tmp_path / "models"),
        "root": tmp_path / "root",
        "out": tmp_path / "out",
    }


def _config(farm: dict[str, Path]):
    return build_config(
        {
            "root": farm["root"],
            "output_root": farm["out"],
            "allow_input_roots": [farm["plates"]],
            "models_dir": farm["models"],
            "default_checkpoint": "rvm",
        }
    )


def _run_one(farm: dict[str, Path], name: str, ticket: dict) -> tuple[str, Path, dict]:
    worker = Worker(_config(farm))
    worker.layout.ensure()
    drop_ticket(farm["root"], name, ticket)
    with torch_threads(1):
        assert worker.step()
    [(area, job)] = [(a, j) for a in ("done", "failed") for j in jobs_in(farm["root"], a, f"{name}-")]
    return area, job, json.loads((job / "report.json").read_text())


TICKET = {"timeline": "edit/cut01.otio", "output": "cut01_mattes", "track": "V1", "handles": 1, "device": "cpu"}


def test_two_clip_timeline_ticket_renders_each_clip_and_writes_the_edit_with_mattes(farm: dict[str, Path]) -> None:
    shot = farm["plates"] / "shotA"
    _edit(farm["plates"] / "edit" / "cut01.otio", _clip("sh010", shot, 1003, 2), _clip("sh020", shot, 1008, 2))
    area, _, report = _run_one(farm, "cut", TICKET)
    assert area == "done", report.get("reason")
    out = farm["out"].resolve() / "cut01_mattes"
    assert report["frames_total"] == 8
    assert report["timeline"] == {
        "input": str(farm["plates"].resolve() / "edit" / "cut01.otio"),
        "track": "V1",
        "output": str(out / "cut01.otio"),
        "clips": [
            {
                "clip": 1,
                "name": "sh010",
                "state": "rendered",
                "frames": "1002-1005",
                "output": str(out / "sh010" / "sh010.####.exr"),
            },
            {
                "clip": 2,
                "name": "sh020",
                "state": "rendered",
                "frames": "1007-1010",
                "output": str(out / "sh020" / "sh020.####.exr"),
            },
        ],
    }
    assert sorted(p.name for p in (out / "sh010").iterdir()) == [f"sh010.{f}.exr" for f in range(1002, 1006)]
    assert sorted(p.name for p in (out / "sh020").iterdir()) == [f"sh020.{f}.exr" for f in range(1007, 1011)]
    # Each clip starts its own recurrent state: its mattes are those of a plain render of its frames alone.
    reference = reference_render(str(shot / "plate.####.png"), farm["base"] / "ref", frames="1007-1010")
    for frame in range(1007, 1011):
        np.testing.assert_array_equal(
            read_alpha(out / "sh020" / f"sh020.{frame}.exr"), read_alpha(reference / f"m.{frame}.exr")
        )
    written = otio.adapters.read_from_file(str(out / "cut01.otio"))
    assert [t.name for t in written.tracks] == ["V1", "RVM matte"]
    mattes = list(written.tracks[1])
    assert [m.name for m in mattes] == ["sh010 matte", "sh020 matte"]
    first = mattes[0].media_reference
    assert first.target_url_base == otio.url_utils.url_from_filepath(str(out / "sh010") + "/")
    assert (first.name_prefix, first.start_frame) == ("sh010.", 1002)
    assert mattes[0].metadata["rvm"] == {"source_clip": "sh010", "frames": "1002-1005", "handle_in": 1, "handle_out": 1}


def test_a_clip_with_missing_media_fails_the_job_as_input_after_the_others_render(farm: dict[str, Path]) -> None:
    shot = farm["plates"] / "shotA"
    gone = farm["plates"] / "gone"
    _edit(farm["plates"] / "edit" / "cut01.otio", _clip("sh010", shot, 1003, 2), _clip("sh030", gone, 1001, 2))
    area, _, report = _run_one(farm, "cut", {**TICKET, "handles": 0})
    assert area == "failed"
    assert report["cause"] == "input"
    missing = f"clip 2 'sh030': {gone.resolve() / 'plate.####.png'}: no frames on disk"
    assert report["reason"] == f"timeline cut01.otio: media missing, not rendered: {missing}"
    clips = report["timeline"]["clips"]
    assert [(c["name"], c["state"]) for c in clips] == [("sh010", "rendered"), ("sh030", "missing media")]
    out = farm["out"] / "cut01_mattes"
    assert sorted(p.name for p in (out / "sh010").iterdir()) == ["sh010.1003.exr", "sh010.1004.exr"]
    written = otio.adapters.read_from_file(str(out / "cut01.otio"))
    assert [type(item).__name__ for item in written.tracks[1]] == ["Clip", "Gap"]


# --------------------------------------------------------------------------- validation


def _load(farm: dict[str, Path], ticket: dict):
    job_dir = farm["root"] / "active" / f"t-{time.monotonic_ns()}"
    job_dir.mkdir(parents=True)
    (job_dir / "ticket.json").write_text(json.dumps(ticket))
    return load_ticket(job_dir, _config(farm))


@pytest.fixture
def edit_farm(farm: dict[str, Path]) -> dict[str, Path]:
    shot = farm["plates"] / "shotA"
    _edit(farm["plates"] / "edit" / "cut01.otio", _clip("sh010", shot, 1003, 2))
    _edit(farm["plates"] / "edit" / "leak.otio", _clip("shX", farm["outside"] / "shotX", 1003, 2))
    _edit(farm["outside"] / "cut.otio", _clip("sh010", shot, 1003, 2))
    return farm


BAD = {
    "unknown_field": (
        {**TICKET, "post_render_cmd": "rm -rf /"},
        "ticket: unknown field 'post_render_cmd' in a timeline ticket",
    ),
    "input_and_timeline": (
        {**TICKET, "input": "shotA/plate.####.png"},
        "ticket: unknown field 'input' in a timeline ticket",
    ),
    "timeline_outside": (
        {**TICKET, "timeline": "../outside/cut.otio"},
        "ticket field 'timeline': '../outside/cut.otio' resolves outside the allowed input roots",
    ),
    "output_outside": (
        {**TICKET, "output": "../escape"},
        "ticket field 'output': '../escape' resolves outside the output root",
    ),
    "handles_negative": ({**TICKET, "handles": -2}, "ticket field 'handles': expected an integer of 0 or more, got -2"),
    "track_unknown": ({**TICKET, "track": "V9"}, "ticket field 'track': --track: no video track named 'V9'"),
    "timeline_type": ({**TICKET, "timeline": 3}, "ticket field 'timeline': expected a string, got int"),
    "checkpoint_outside": (
        {**TICKET, "checkpoint": "../x.pth"},
        "ticket field 'checkpoint': '../x.pth' is not inside the models dir",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_timeline_ticket_is_refused_naming_the_field(edit_farm: dict[str, Path], name: str) -> None:
    ticket, message = BAD[name]
    with pytest.raises(InputError) as caught:
        _load(edit_farm, ticket)
    assert str(caught.value).startswith(message)


def test_a_clip_whose_media_is_outside_the_input_roots_is_refused_naming_the_clip(edit_farm: dict[str, Path]) -> None:
    with pytest.raises(InputError) as caught:
        _load(edit_farm, {**TICKET, "timeline": "edit/leak.otio"})
    assert str(caught.value) == (
        "ticket field 'timeline': clip 1 'shX': ticket field 'input': "
        f"{str(edit_farm['outside'].resolve() / 'shotX' / 'plate.####.png')!r} resolves outside the allowed input roots"
    )


def test_a_wrong_matte_setting_is_named_by_the_job_schema(edit_farm: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="'preroll': expected integer"):
        _load(edit_farm, {**TICKET, "preroll": "ten"})


def test_a_good_timeline_ticket_checks_each_clip_job_like_a_ticket(edit_farm: dict[str, Path]) -> None:
    ticket = _load(edit_farm, {**TICKET, "downsample": 0.5})
    [(shot, clip)] = ticket.clips
    assert clip.job.input == str(edit_farm["plates"].resolve() / "shotA" / "plate.####.png")
    assert clip.job.output == str(edit_farm["out"].resolve() / "cut01_mattes" / "sh010" / "sh010.####.exr")
    assert clip.checkpoint == edit_farm["models"].resolve() / "rvm" / "model.json"
    assert (clip.frames, clip.job.downsample, clip.job.device) == ([1002, 1003, 1004, 1005], 0.5, "cpu")


def test_a_timeline_ticket_passes_warm_up_and_passes_to_every_clip(edit_farm: dict[str, Path]) -> None:
    ticket = _load(edit_farm, {**TICKET, "warmup": 3, "passes": "bidirectional"})
    [(_, clip)] = ticket.clips
    assert (clip.job.warmup, clip.job.passes) == (3, "bidirectional")


class _StopsAtClip:
    """An executor that renders nothing: it records the clips asked for and reports a stop at one of them."""

    mode = "local"

    def __init__(self, stop_at: str | None) -> None:
        self.stop_at = stop_at
        self.ran: list[str] = []

    def run(self, ticket, claim, stop, progress):
        from render_worker.executor_local import Outcome

        folder = Path(ticket.job.output).parent.name
        self.ran.append(folder)
        return Outcome(report={}, stopped=folder == self.stop_at, frames_written=[])


def test_a_stopped_timeline_job_resumes_at_its_first_unfinished_clip(farm: dict[str, Path]) -> None:
    from render_worker.claim import Claim
    from render_worker.timeline_ticket import render_timeline_ticket

    shot = farm["plates"] / "shotA"
    _edit(farm["plates"] / "edit" / "cut01.otio", _clip("sh010", shot, 1003, 2), _clip("sh020", shot, 1008, 2))
    claim = Claim(farm["root"] / "active" / "cut-1", "w1", 1)
    claim.job_dir.mkdir(parents=True)
    first, second = _StopsAtClip("sh020"), _StopsAtClip(None)
    stopped = render_timeline_ticket(_load(farm, TICKET), first, claim, threading.Event(), lambda event: None)
    assert stopped.stopped and first.ran == ["sh010", "sh020"]
    assert not (farm["out"] / "cut01_mattes" / "cut01.otio").exists()  # written by the attempt that finishes
    assert json.loads((claim.job_dir / "timeline_clips.json").read_text()) == ["sh010"]
    ticket = _load(farm, TICKET)
    finished = render_timeline_ticket(ticket, second, claim, threading.Event(), lambda event: None)
    assert not finished.stopped and second.ran == ["sh020"]
    assert [c["state"] for c in ticket.report_fields()["timeline"]["clips"]] == ["rendered", "rendered"]
    assert (farm["out"] / "cut01_mattes" / "cut01.otio").is_file()
