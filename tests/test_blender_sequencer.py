"""The add-on's Video Sequencer operator: host-free frame mapping here, and end to end in real Blender.

The real-bpy part runs ``tests/blender_driver/drive_rvm_sequencer.py`` in Blender's own venv (as
test_blender_addon.py does): a colour strip in channel 1, a plate image strip trimmed and offset in
channel 2, the operator with the real engine, then sequencer renders to float EXR, judged here against the
engine's EXR matte composited by hand in linear.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from .blender_driver.addon_package import addon_module
from .conftest import ROOT, TFJS_MODEL, require_blender_python
from .test_blender_addon import (
    ADDON,
    BLENDER_PYTHON,
    HEIGHT,
    WIDTH,
    make_movie,
    make_plate,
    read,
    run_driver,
    srgb_to_linear,
)

jobspec = addon_module("jobspec")
DRIVER = ROOT / "tests" / "blender_driver" / "drive_rvm_sequencer.py"
COLOR = [0.2, 0.4, 0.6]
PLATE_START, TRIM = 10, (1, 0)  # 3 images at scene frames 10-12, the first one trimmed: 11-12 show 1002, 1003
RENDER_FRAME = 12  # shows the plate's content frame 2: plate.1003.png
MOVIE_RENDER_FRAME = 5  # the movie strip starts at 3, trimmed by 1: frame 5 shows its 3rd frame


# ------------------------------------------------------------------------------------------ host-free


def test_strip_window_follows_frame_start_and_trims() -> None:
    window = jobspec.strip_window("Plate", frame_start=10, offset_start=1, offset_end=1, duration=5)
    assert (window.start, window.end, window.first, window.last, window.content_start) == (11, 14, 1, 3, 11)
    assert [window.content_frame(f) for f in range(11, 14)] == [1, 2, 3]


def test_strip_window_holds_past_the_content_as_blender_does() -> None:
    window = jobspec.strip_window("Plate", frame_start=10, offset_start=-2, offset_end=-1, duration=3)
    assert (window.start, window.end, window.first, window.last, window.content_start) == (8, 14, 0, 2, 10)
    assert [window.content_frame(f) for f in range(8, 14)] == [0, 0, 0, 1, 2, 2]


def test_strip_window_refuses_fractional_and_empty_strips() -> None:
    with pytest.raises(jobspec.JobSpecError) as exc:
        jobspec.strip_window("Plate", frame_start=10.5, offset_start=0, offset_end=0, duration=3)
    assert str(exc.value) == "strip 'Plate': frame_start is 10.5, between two frames; move the strip onto whole frames"
    with pytest.raises(jobspec.JobSpecError, match=r"^strip 'Plate' shows no frames \(trimmed to 12-11\)$"):
        jobspec.strip_window("Plate", frame_start=10, offset_start=2, offset_end=1, duration=3)


def test_strip_sequence_numbers_each_image_and_refuses_a_foreign_file(tmp_path: Path) -> None:
    plate, frames = jobspec.strip_sequence("Plate", str(tmp_path), ["p.1001.png", "p.1003.png", "p.1002.png"])
    assert plate.input == str(tmp_path / "p.####.png") and frames == [1001, 1003, 1002]
    with pytest.raises(jobspec.JobSpecError) as exc:
        jobspec.strip_sequence("Plate", str(tmp_path), ["p.1001.png", "q.1002.png"])
    assert str(exc.value) == (
        "image strip 'Plate' holds 'q.1002.png', which is not a frame of p.####.png: "
        "matte one numbered sequence per strip"
    )
    with pytest.raises(jobspec.JobSpecError, match="not a frame of p.####.png"):
        jobspec.strip_sequence("Plate", str(tmp_path), ["p.1001.png", "p.01002.png"])  # another padding


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"retiming_keys": 3}, "strip 'S' is retimed (3 retiming keys): its frames cannot be mapped exactly"),
        ({"media_fps": 25.0, "scene_fps": 24.0}, "movie strip 'S' is 25 fps in a 24 fps scene"),
        ({"strobe": 2.0}, "strip 'S' has Strobe 2: set it to 1"),
        ({"reverse": True}, "strip 'S' plays its frames reversed"),
        ({"animation_offsets": (2, 0)}, "strip 'S' has animation offsets 2/0: set them to 0"),
    ],
)
def test_speed_changed_strips_are_refused(timing: dict, message: str) -> None:
    with pytest.raises(jobspec.JobSpecError) as exc:
        jobspec.check_strip_timing("S", **timing)
    assert str(exc.value).startswith(message), str(exc.value)


def test_strips_at_their_own_speed_pass() -> None:
    jobspec.check_strip_timing("S", strobe=1.0, media_fps=24.0, scene_fps=24.0)
    jobspec.check_strip_timing("S", strobe=0.0)  # Blender's value for "no strobe" on some strips


# ------------------------------------------------------------------------------------------ real Blender


@pytest.fixture(scope="module")
def sequencer_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_blender_python(BLENDER_PYTHON)
    work = tmp_path_factory.mktemp("blender_vse")
    plates = make_plate(work / "plates")  # plate.1001-1003.png, three different portraits
    config = {
        "addon_dir": str(ADDON),
        "work_dir": str(work),
        "engine_python": sys.executable,
        "checkpoint": str(TFJS_MODEL),
        "plate_files": [str(p) for p in plates],
        "movie": str(make_movie(work / "movie.mp4", plates)),
        "shot_files": [str(p) for p in make_plate(work / "shots", name="shot")],
        "plate_start": PLATE_START,
        "trim": list(TRIM),
        "scene_frames": 20,
        "width": WIDTH,
        "height": HEIGHT,
        "color": COLOR,
        "render_frame": RENDER_FRAME,
        "movie_render_frame": MOVIE_RENDER_FRAME,
    }
    result = run_driver(DRIVER, work, config)
    result["plates"] = [str(p) for p in plates]
    return result


def test_operator_and_panel_register_and_unregister(sequencer_run: dict) -> None:
    assert sequencer_run["registered"] == {"operator": True, "panel": True}
    assert sequencer_run["registered_after_disable"] == {"operator": False, "panel": False}


def test_wrong_selections_are_explained(sequencer_run: dict) -> None:
    assert sequencer_run["no_strip"]["error"] == (
        "Error: RVM Matte: the scene has no Video Sequencer strips: add the plate as a movie or image strip"
    )
    assert sequencer_run["color_selected"]["error"] == (
        "Error: RVM Matte: strip 'Background' is a color strip: select a movie or image strip"
    )
    assert sequencer_run["movie_other_fps"]["result"] == ["CANCELLED"]
    assert sequencer_run["movie_other_fps"]["error"].startswith(
        "Error: RVM Matte: movie strip 'Movie' is 24 fps in a 25 fps scene, so Blender plays it at another speed"
    )


def test_matte_strip_sits_above_the_plate_on_its_frames(sequencer_run: dict) -> None:
    run = sequencer_run["image"]
    assert run["result"] == ["FINISHED"], run["error"]
    assert run["job"]["frames"] == "1002-1003"  # only the frames the trimmed strip shows
    plate, matte = run["plate"], run["matte"]
    assert (plate["frame_final_start"], plate["frame_final_end"]) == (11, 13)
    assert {k: matte[k] for k in ("name", "type", "channel", "frame_final_start", "frame_final_end")} == {
        "name": "RVM Matte (Plate)",
        "type": "IMAGE",
        "channel": 3,
        "frame_final_start": 11,
        "frame_final_end": 13,
    }
    assert matte["elements"] == ["plate_rvm.1002.exr", "plate_rvm.1003.exr"]
    assert matte["directory"] == os.path.dirname(run["job"]["output"]) + "/"
    assert (matte["blend_type"], matte["alpha_mode"], matte["colorspace"]) == ("ALPHA_OVER", "PREMUL", "Linear Rec.709")


def test_running_again_replaces_its_matte_strip(sequencer_run: dict) -> None:
    rerun = sequencer_run["image_rerun"]
    assert rerun["result"] == ["FINISHED"], rerun["error"]
    assert rerun["channel_3"] == ["RVM Matte (Plate)"]
    assert rerun["matte"] == sequencer_run["image"]["matte"]


def _expected_over(matte: np.ndarray, below: np.ndarray) -> np.ndarray:
    """The premultiplied matte over an opaque layer, in linear: what Alpha Over must give."""
    return matte[..., :3] + (1.0 - matte[..., 3:4]) * below[..., :3]


def test_sequencer_render_equals_the_matte_composited_by_hand(sequencer_run: dict) -> None:
    run = sequencer_run["image"]
    matte = read(run["job"]["output"].replace("####", "1003"))  # frame 12 shows the plate's 1003
    renders = {case: read(path) for case, path in run["renders"].items()}
    color = renders["color"]
    assert color.shape == (HEIGHT, WIDTH, 4)
    # The colour strip as the sequencer renders it (one value everywhere): the layer the matte goes over.
    assert np.ptp(color[..., :3].reshape(-1, 3), axis=0).max() == 0.0
    alpha = matte[..., 3]
    assert (alpha > 0.999).mean() > 0.1 and (alpha < 0.001).mean() > 0.1, "not a matte of a person"
    # Blender's float Alpha Over vs numpy's float32, both in Linear Rec.709 (the sequencer's space here, the
    # EXR's own): see TOLERANCE.
    np.testing.assert_allclose(renders["matte_over_color"][..., :3], _expected_over(matte, color), atol=TOLERANCE)
    # The whole stack: the matte over the plate's own frame 1003, decoded from sRGB as Blender does.
    plate = srgb_to_linear(read(sequencer_run["plates"][RENDER_FRAME - PLATE_START]))
    np.testing.assert_allclose(renders["stack"][..., :3], _expected_over(matte, plate), atol=PLATE_TOLERANCE)
    # A matte of another frame would not match: the alignment is what is tested.
    other = read(run["job"]["output"].replace("####", "1002"))
    assert np.abs(renders["matte_over_color"][..., :3] - _expected_over(other, color)).max() > 0.05


# Matte over the colour strip: Blender's float32 Alpha Over vs numpy's, measured 0 with bpy 5.0.1 and 4.2.0 (and 0
# for the movie). Over the plate: plus Blender's sRGB decode of the 8-bit PNG vs the float64 formula, measured
# 1.1e-5. Kept at 1e-3, as in test_blender_addon.py, for the once-seen 2.9e-4 there (cause not found); the
# matte of the neighbouring frame is off by more than 0.05 (asserted below).
TOLERANCE = PLATE_TOLERANCE = 1e-3


def test_movie_strip_trimmed_and_offset(sequencer_run: dict) -> None:
    run = sequencer_run["movie"]
    assert run["result"] == ["FINISHED"], run["error"]
    matte = run["matte"]
    assert (run["plate"]["frame_final_start"], run["plate"]["frame_final_end"]) == (4, 6)
    assert (matte["channel"], matte["frame_final_start"], matte["frame_final_end"]) == (5, 4, 6)
    assert matte["elements"] == ["movie_rvm.0002.exr", "movie_rvm.0003.exr"]
    exr = read(os.path.join(matte["directory"], "movie_rvm.0003.exr"))
    color = read(sequencer_run["image"]["renders"]["color"])
    np.testing.assert_allclose(read(run["render"])[..., :3], _expected_over(exr, color), atol=TOLERANCE)


def test_several_selected_strips_each_get_their_matte(sequencer_run: dict) -> None:
    run = sequencer_run["multi"]
    assert run["result"] == ["FINISHED"], run["error"]
    # "Plate" (channel 2, frames 11-12: 1002, 1003) again, and "Shot" (channel 6, frames 14-15: 1001, 1002);
    # the selected, active colour strip is passed over.
    expected = {
        "plate": ("RVM Matte (Plate)", 3, 11, 13, ["plate_rvm.1002.exr", "plate_rvm.1003.exr"]),
        "shot": ("RVM Matte (Shot)", 7, 14, 16, ["shot_rvm.1001.exr", "shot_rvm.1002.exr"]),
    }
    for label, (name, channel, start, end, elements) in expected.items():
        plate, mattes = run[label], run[f"{label}_mattes"]
        assert (plate["frame_final_start"], plate["frame_final_end"]) == (start, end)
        assert len(mattes) == 1, mattes
        matte = mattes[0]
        assert (matte["name"], matte["channel"], matte["frame_final_start"], matte["frame_final_end"]) == (
            name,
            channel,
            start,
            end,
        )
        assert matte["elements"] == elements
        assert all(os.path.isfile(os.path.join(matte["directory"], e)) for e in elements)
    assert run["plate_mattes"][0]["directory"] != run["shot_mattes"][0]["directory"]


def test_one_unsupported_strip_refuses_the_whole_selection(sequencer_run: dict) -> None:
    refused = sequencer_run["multi_refused"]
    assert refused["result"] == ["CANCELLED"]
    assert refused["error"].startswith(
        "Error: RVM Matte: strip 'Movie' plays its frames reversed: switch off Reverse Frames, or "
    ), refused["error"]
    # Refused before any engine started: no matte of "Shot" on disk or in the channel above it.
    assert refused["channel_7"] == [] and refused["shot_mattes"] == []


def test_esc_stops_the_current_strip_and_the_rest(sequencer_run: dict) -> None:
    case = sequencer_run["multi"]["modal_cancel"]
    assert case["order"] == ["Plate", "Movie", "Shot"]  # lowest channel first
    assert case["result"] == ["CANCELLED"] and case["operator_free_again"]
    prefixes = sorted({status.split(": ")[0] for status in case["statuses"]})
    assert prefixes == ["strip 1 of 3 (Plate)", "strip 2 of 3 (Movie)"], case["statuses"]
    plate_code, movie_code, shot_code = case["exit_codes"]
    assert plate_code == 0 and isinstance(movie_code, int) and shot_code == "the engine was never started"
    messages = [message for _, message in case["reports"]]
    assert messages[0].startswith("RVM Matte: 2 frames in ") and messages[0].endswith("→ RVM Matte (Plate)")
    assert messages[-1].startswith("RVM Matte cancelled: ") and "movie" in messages[-1], messages
    assert case["channel_7"] == ["RVM Matte (Shot)"]  # the earlier run's matte, untouched
