"""``rvm-vfx timeline``: an OpenTimelineIO edit's clips matted one shot each, the edit written back with mattes.

The timelines are built with the opentimelineio API and the plates are real files (96x64 PNG sequences, an
MPEG-4 movie), so what is checked is what an editor's exported .otio goes through.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange

from rvm_vfx.cli import main
from rvm_vfx.errors import InputError

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence

CKPT = str(TFJS_MODEL)
RATE = 24
TC_ONE_HOUR = 86400  # 01:00:00:00 at 24 fps: media times start at the source's timecode, as NLEs export them


def _t(value: int) -> RationalTime:
    return RationalTime(value, RATE)


def _range(start: int, duration: int) -> TimeRange:
    return TimeRange(_t(start), _t(duration))


def _sequence_ref(folder: Path, prefix: str, first: int, count: int) -> otio.schema.ImageSequenceReference:
    return otio.schema.ImageSequenceReference(
        target_url_base=otio.url_utils.url_from_filepath(str(folder) + "/"),
        name_prefix=prefix,
        name_suffix=".png",
        start_frame=first,
        rate=RATE,
        frame_zero_padding=4,
        available_range=_range(TC_ONE_HOUR, count),
    )


def _events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _pixels(path: Path) -> np.ndarray:
    return oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT)


def _timeline(path: Path, *items: otio.core.Item) -> Path:
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for item in items:
        track.append(item)
    timeline = otio.schema.Timeline(name="edit")
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(path))
    return path


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """shotA.1001-1024.png: one source two clips are cut from."""
    folder = tmp_path_factory.mktemp("timeline") / "plate"
    composites, _ = portrait_clip(24, 96, 64)
    write_sequence(folder, "shotA", composites, first=1001)
    return folder


@pytest.fixture
def edit(plate: Path, tmp_path: Path) -> Path:
    """shotA 1003-1006, a 5-frame gap, shotA 1021-1023, then shotC whose folder does not exist."""
    return _timeline(
        tmp_path / "edit.otio",
        otio.schema.Clip("shotA", _sequence_ref(plate, "shotA.", 1001, 24), _range(TC_ONE_HOUR + 2, 4)),
        otio.schema.Gap(source_range=_range(0, 5)),
        otio.schema.Clip("shotA", _sequence_ref(plate, "shotA.", 1001, 24), _range(TC_ONE_HOUR + 20, 3)),
        otio.schema.Clip("shotC", _sequence_ref(tmp_path / "gone", "shotC.", 1001, 10), _range(TC_ONE_HOUR, 4)),
    )


def _run(edit: Path, out: Path, *flags: str) -> int:
    return main(["timeline", str(edit), str(out), "--checkpoint", CKPT, "--progress", "json", *flags])


def test_three_clips_render_two_shots_with_handles_report_the_missing_one_and_write_the_mattes_track(
    edit: Path, plate: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert _run(edit, out, "--handles", "2") == 1
    events = _events(capsys)
    missing = f"clip 3 'shotC': {tmp_path / 'gone' / 'shotC.####.png'}: no frames on disk (not rendered)"
    assert [e["message"] for e in events if e["event"] == "warning"] == [missing]
    # Clip 1 gets both handles; clip 2's tail handle stops at the source's last frame on disk (1024).
    starts = [(e["first"], e["last"], e["output"]) for e in events if e["event"] == "start"]
    assert starts == [
        (1001, 1008, str(out / "shotA_1" / "shotA_1.####.exr")),
        (1019, 1024, str(out / "shotA_2" / "shotA_2.####.exr")),
    ]
    assert [e["frames_written"] for e in events if e["event"] == "done"] == ["1001-1008", "1019-1024"]
    assert events[-1] == {
        "event": "error",
        "error": {
            "type": "TimelineIncomplete",
            "message": f"2 of 3 clips matted, timeline written to {out / 'edit.otio'}; not matted: "
            f"{missing.removesuffix(' (not rendered)')}",
        },
    }
    assert sorted(os.listdir(out)) == ["edit.otio", "shotA_1", "shotA_2"]
    assert sorted(os.listdir(out / "shotA_2")) == [f"shotA_2.{f}.exr" for f in range(1019, 1025)]

    written = otio.adapters.read_from_file(str(out / "edit.otio"))
    assert [t.name for t in written.tracks] == ["V1", "RVM matte"]
    source, mattes = written.tracks
    assert [type(i).__name__ for i in mattes] == ["Clip", "Gap", "Clip", "Gap"]
    for index in range(4):  # every matte item where its clip is in the edit
        assert mattes.range_of_child_at_index(index) == source.range_of_child_at_index(index)
    expected = ((0, "shotA_1", 1001, 1008, (1003, 1006)), (2, "shotA_2", 1019, 1024, (1021, 1023)))
    for index, folder, first, last, frames in expected:
        clip, matte = source[index], mattes[index]
        ref = matte.media_reference
        assert isinstance(ref, otio.schema.ImageSequenceReference)
        assert matte.source_range == clip.source_range
        assert (ref.target_url_base, ref.name_prefix, ref.name_suffix) == (
            otio.url_utils.url_from_filepath(str(out / folder) + "/"),
            f"{folder}.",
            ".exr",
        )
        assert (ref.start_frame, ref.end_frame(), ref.frame_zero_padding, ref.rate) == (first, last, 4, RATE)
        assert ref.available_range == _range(TC_ONE_HOUR + first - 1001, last - first + 1)
        assert dict(matte.metadata["rvm"]) == {
            "source_clip": "shotA",
            "frames": f"{first}-{last}",
            "handle_in": 2,
            "handle_out": last - frames[1],
        }
        # The plate's own reference and the matte's agree on the frame of each of the clip's times.
        times = [clip.source_range.start_time + _t(i) for i in range(frames[1] - frames[0] + 1)]
        assert [clip.media_reference.frame_for_time(t) for t in times] == list(range(frames[0], frames[1] + 1))
        assert [ref.frame_for_time(t) for t in times] == list(range(frames[0], frames[1] + 1))
        for t in times:
            path = otio.url_utils.filepath_from_url(ref.target_url_for_image_number(ref.frame_for_time(t) - first))
            assert Path(path).is_file(), path
    assert isinstance(mattes[3], otio.schema.Gap) and mattes[3].duration() == _t(4)

    # Each clip is a shot of its own: clip 2 starts from a fresh state, as a render of its frames alone does.
    alone = tmp_path / "alone" / "m.####.exr"
    flags = ("--frames", "1019-1024", "--checkpoint", CKPT, "--progress", "none")
    assert main(["matte", str(plate / "shotA.####.png"), str(alone), *flags]) == 0
    for frame in (1019, 1021):
        np.testing.assert_array_equal(
            _pixels(out / "shotA_2" / f"shotA_2.{frame}.exr"), _pixels(alone.parent / f"m.{frame}.exr")
        )


def test_a_movie_clip_is_numbered_from_1_at_the_media_start(tmp_path: Path, capsys) -> None:
    import av

    composites, _ = portrait_clip(8, 96, 64)
    movie = tmp_path / "take.mp4"
    with av.open(str(movie), "w") as container:
        stream = container.add_stream("mpeg4", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for pixels in composites:
            rgb = np.ascontiguousarray((pixels * 255 + 0.5).astype(np.uint8))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    ref = otio.schema.ExternalReference(target_url=str(movie), available_range=_range(TC_ONE_HOUR, 8))
    # Media times 01:00:00:03-04 are the video's 4th and 5th frames: engine frames 4-5 (the first is 1).
    edit = _timeline(tmp_path / "cut.otio", otio.schema.Clip("take", ref, _range(TC_ONE_HOUR + 3, 2)))
    out = tmp_path / "out"
    assert _run(edit, out, "--handles", "1") == 0
    events = _events(capsys)
    assert [(e["first"], e["last"]) for e in events if e["event"] == "start"] == [(3, 6)]
    assert events[-1]["event"] == "done" and events[-1]["frames_written"] == "3-6"
    matte = otio.adapters.read_from_file(str(out / "cut.otio")).tracks[1][0]
    assert [matte.media_reference.frame_for_time(matte.source_range.start_time + _t(i)) for i in (0, 1)] == [4, 5]
    # The same frames as `rvm-vfx matte take.mp4 --frames 3-6` numbers them.
    direct = tmp_path / "direct" / "m.####.exr"
    assert main(["matte", str(movie), str(direct), "--frames", "3-6", "--checkpoint", CKPT, "--progress", "none"]) == 0
    for frame in (3, 4, 6):
        np.testing.assert_array_equal(
            _pixels(out / "take" / f"take.{frame:04d}.exr"), _pixels(direct.parent / f"m.{frame:04d}.exr")
        )


def test_bad_track_and_existing_timeline_stop_before_any_frame(edit: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _run(edit, out, "--track", "V2") == 2
    assert _events(capsys)[-1]["error"] == {
        "type": "InputError",
        "message": "--track: no video track named 'V2'; video tracks: 'V1'",
    }
    out.mkdir()
    (out / "edit.otio").write_text("{}")
    assert _run(edit, out) == 2
    assert _events(capsys)[-1]["error"]["message"] == f"output exists: {out / 'edit.otio'}; use --overwrite to replace"
    assert os.listdir(out) == ["edit.otio"] and (out / "edit.otio").read_text() == "{}"


def test_warm_up_and_passes_reach_every_clip(edit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rvm_vfx.editorial import timeline

    seen: dict = {}

    def fake_render_timeline(*_args, options, **_kwargs):
        seen.update(options)
        raise InputError("stop here")

    monkeypatch.setattr(timeline, "render_timeline", fake_render_timeline)
    assert _run(edit, tmp_path / "out", "--warmup", "3", "--passes", "bidirectional") == 2
    assert (seen["warmup"], seen["passes"]) == (3, "bidirectional")
