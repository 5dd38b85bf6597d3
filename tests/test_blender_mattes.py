"""The add-on's garbage, core and hold-out mattes, warm-up and passes (issue 13): host-free, then in real Blender.

The host-free part holds ``jobspec`` to the engine's own Job. The real-bpy part runs
``tests/blender_driver/drive_rvm_mattes.py`` in Blender's venv (as test_blender_addon.py does): the plate and
matte sequences in compositor Image nodes, the Job the operator builds for each setting, its refusals, and
one run with the real engine whose EXR matte must be exactly 0 under the garbage matte and 1 under the core.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.job import Job
from rvm_vfx.spec.job import FIELDS_BY_NAME, PASSES

from .blender_driver.addon_package import addon_module
from .conftest import ROOT, TFJS_MODEL, require_blender_python
from .test_blender_addon import ADDON, BLENDER_PYTHON, FIRST, FRAMES, HEIGHT, WIDTH, make_plate, read, run_driver

jobspec = addon_module("jobspec")
DRIVER = ROOT / "tests" / "blender_driver" / "drive_rvm_mattes.py"
PLATE = "/shots/sh010/plate.####.png"


# ------------------------------------------------------------------------------------------ host-free


def test_the_mattes_are_the_contracts():
    assert jobspec.MATTES == ("garbage", "core", "holdout")


def test_mattes_warmup_and_passes_reach_the_job():
    mattes = [
        jobspec.Matte("garbage", "/shots/sh010/garbage.####.png", invert=True),
        jobspec.Matte("holdout", "/shots/sh010/people.####.exr", channel="mask.a"),
    ]
    job = jobspec.build_job(
        input=PLATE, output="/out/m.####.exr", frames=[1001, 1002], input_colorspace="sRGB - Texture",
        warmup=5, passes="bidirectional", mattes=mattes,
    )  # fmt: skip
    data = job.to_dict()
    assert Job.from_dict(data).to_dict() == data
    assert (data["warmup"], data["passes"]) == (5, "bidirectional")
    assert (data["garbage_matte"], data["garbage_channel"], data["invert_garbage"]) == (
        "/shots/sh010/garbage.####.png",
        None,
        True,
    )
    assert (data["holdout_matte"], data["holdout_channel"], data["invert_holdout"]) == (
        "/shots/sh010/people.####.exr",
        "mask.a",
        False,
    )
    assert (data["core_matte"], data["core_channel"], data["invert_core"]) == (None, None, False)


def test_without_mattes_the_job_keeps_the_engines_defaults():
    data = jobspec.build_job(input=PLATE, output="/out/m.####.exr", frames=[1], input_colorspace="ACEScg").to_dict()
    for name in ("warmup", "passes", "garbage_matte", "core_channel", "invert_holdout"):
        assert data[name] == FIELDS_BY_NAME[name].default, name


def test_bad_warmup_and_passes_are_refused_with_the_engines_message():
    with pytest.raises(jobspec.JobSpecError) as error:
        jobspec.build_job(input=PLATE, output="/out/m.####.exr", frames=[1], input_colorspace="ACEScg", warmup=-1)
    assert str(error.value) == "job field 'warmup': must be >= 0, got -1"
    with pytest.raises(jobspec.JobSpecError) as error:
        jobspec.build_job(input=PLATE, output="/o/m.####.exr", frames=[1], input_colorspace="ACEScg", passes="back")
    assert str(error.value) == "job field 'passes': expected one of forward, bidirectional, got 'back'"
    with pytest.raises(jobspec.JobSpecError) as error:
        jobspec.build_job(input=PLATE, output="/o/m.####.exr", frames=[1], input_colorspace="ACEScg",
                          mattes=[jobspec.Matte("core", "/m.####.png", channel=" ")])  # fmt: skip
    assert str(error.value).startswith("job field 'core_channel': ")


def test_image_frame_is_what_file_frames_lists():
    mapping = {"start": 3, "offset": 1000, "duration": 4, "cyclic": False}
    assert [jobspec.image_frame(f, **mapping) for f in range(1, 9)] == [1001, 1001, 1001, 1002, 1003, 1004, 1004, 1004]
    assert jobspec.file_frames(1, 8, **mapping) == [1001, 1002, 1003, 1004]


def test_a_matte_node_framed_otherwise_than_the_plate_is_refused_naming_the_fix():
    plate = {"start": 1, "offset": 1000, "duration": 3, "cyclic": False}
    jobspec.check_matte_mapping(1, 3, matte_node="G", plate_node="P", matte=dict(plate), plate=plate)
    # A longer matte node shows the same frames over the scene range: accepted.
    jobspec.check_matte_mapping(1, 3, matte_node="G", plate_node="P", matte={**plate, "duration": 9}, plate=plate)
    with pytest.raises(jobspec.JobSpecError) as error:
        jobspec.check_matte_mapping(1, 3, matte_node="G", plate_node="P", matte={**plate, "offset": 0}, plate=plate)
    assert str(error.value) == (
        "Image node 'G' shows its frame 1 at scene frame 1, where the plate's node 'P' shows frame 1001: the engine "
        "reads a matte at the plate's frame numbers, so give 'G' the plate node's frame_start 1, offset 1000 and "
        "duration 3 (and renumber the matte's files if they are numbered otherwise)"
    )
    with pytest.raises(jobspec.JobSpecError, match="^Image node 'G' shows its frame 1003 at scene frame 4, where"):
        jobspec.check_matte_mapping(1, 4, matte_node="G", plate_node="P", matte=plate, plate={**plate, "duration": 4})


# ------------------------------------------------------------------------------------------ real Blender


def _write_sequence(folder: Path, name: str, planes: np.ndarray, frames: list[int], ext: str) -> Path:
    """``planes`` (H x W x C, 0-1) as a sequence: 8-bit PNG (grey), or half EXR with R, G, B, A."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        channels = planes.shape[2]
        spec = oiio.ImageSpec(WIDTH, HEIGHT, channels, oiio.UINT8 if ext == "png" else oiio.HALF)
        buf = oiio.ImageBuf(spec)
        buf.set_pixels(oiio.ROI(0, WIDTH, 0, HEIGHT, 0, 1, 0, channels), planes.astype(np.float32))
        assert buf.write(str(folder / f"{name}.{frame}.{ext}")), buf.geterror()
    return folder / f"{name}.{frames[0]}.{ext}"


GARBAGE = np.zeros((HEIGHT, WIDTH, 1), np.float32)
GARBAGE[:, : WIDTH // 4] = 1.0  # the left quarter
CORE = np.zeros((HEIGHT, WIDTH, 4), np.float32)
CORE[HEIGHT * 2 // 3 :, WIDTH * 3 // 4 :, 0] = 1.0  # R: the bottom-right block; A stays 0 (the default pick)


@pytest.fixture(scope="module")
def mattes_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_blender_python(BLENDER_PYTHON)  # skips without Blender's optional venv, fails in CI
    work = tmp_path_factory.mktemp("blender_mattes")
    plates = make_plate(work / "plates")
    frames = [FIRST + i for i in range(FRAMES)]
    config = {
        "addon_dir": str(ADDON),
        "work_dir": str(work),
        "engine_python": sys.executable,
        "checkpoint": str(TFJS_MODEL),
        "plate_first": str(plates[0]),
        "garbage_first": str(_write_sequence(work / "mattes", "garbage", GARBAGE, frames, "png")),
        "core_first": str(_write_sequence(work / "mattes", "core", CORE, frames, "exr")),
        "holdout_first": str(_write_sequence(work / "mattes", "people", GARBAGE, frames[::2], "png")),
        "frames": FRAMES,
        "first_frame": FIRST,
    }
    result = run_driver(DRIVER, work, config)
    result["work"] = str(work)
    return result


def test_the_settings_are_the_contracts(mattes_run: dict) -> None:
    settings = mattes_run["settings"]
    assert settings["warmup"]["default"] == FIELDS_BY_NAME["warmup"].default and settings["warmup"]["min"] == 0
    assert (
        settings["warmup"]["description"]
        == "Frames of the shot played in reverse before its first frame to warm the state"
    )
    assert settings["passes"]["items"] == list(PASSES) and settings["passes"]["default"] == "forward"
    for name in ("garbage", "core", "holdout"):
        assert settings[f"{name}_node"]["label"] == name.title()
        assert settings[f"{name}_channel"]["default"] == ""  # the contract's None: the engine picks
        assert settings[f"invert_{name}"]["default"] is False
    assert settings["garbage_node"]["description"] == (
        "Garbage matte sequence: alpha forced to 0 where it is 1. The Image node holding it (a sequence or movie "
        "framed like the plate's node); empty: none"
    )
    assert settings["core_channel"]["description"] == (
        "Core matte's channel (default: A, else the only channel, else R); empty: that default"
    )


def test_the_job_names_the_matte_nodes_sequences(mattes_run: dict) -> None:
    assert mattes_run["no_mattes"]["error"] is None
    plain = mattes_run["no_mattes"]["job"]
    assert (plain["garbage_matte"], plain["core_matte"], plain["holdout_matte"]) == (None, None, None)
    planned = mattes_run["mattes"]
    assert planned["error"] is None
    job = planned["job"]
    assert Job.from_dict(job).to_dict() == job
    mattes = Path(mattes_run["work"]) / "mattes"
    assert (job["garbage_matte"], job["garbage_channel"], job["invert_garbage"]) == (
        str(mattes / "garbage.####.png"),
        None,
        True,
    )
    assert (job["core_matte"], job["core_channel"], job["invert_core"]) == (str(mattes / "core.####.exr"), "R", False)
    assert job["holdout_matte"] is None
    assert (job["warmup"], job["passes"]) == (4, "bidirectional")


def test_matte_nodes_that_cannot_be_read_are_refused_naming_them(mattes_run: dict) -> None:
    refusals = mattes_run["refusals"]
    assert refusals["missing_node"] == (
        "the Holdout matte's node 'No Such Node' is not in the compositor: choose an Image node, or clear the setting"
    )
    assert refusals["missing_frame"] == (
        "Image node 'Holdout' asks for frames 1001-1003 (frame_start 1, offset 1000, duration 3) but the sequence "
        "on disk has frames 1001, 1003: frame 1002 is missing"
    )
    assert refusals["other_mapping"].startswith(
        "Image node 'Garbage' shows its frame 1 at scene frame 1, where the plate's node 'Plate' shows frame 1001"
    )


def test_the_engine_applies_the_mattes_the_addon_names(mattes_run: dict) -> None:
    render = mattes_run["render"]
    assert render["result"] == ["FINISHED"], render["error"]
    job = render["job"]
    assert job["core_channel"] == "R" and job["invert_garbage"] is False
    for frame in range(FIRST, FIRST + FRAMES):
        matte = read(job["output"].replace("####", f"{frame:04d}"))
        alpha = matte[..., 3]
        garbage, core = GARBAGE[..., 0] == 1.0, CORE[..., 0] == 1.0
        assert np.all(alpha[garbage] == 0.0) and np.all(matte[..., :3][garbage] == 0.0)  # exactly nothing
        assert np.all(alpha[core] == 1.0)  # exactly solid
        assert 0.0 < alpha[~garbage & ~core].mean() < 1.0  # elsewhere the network's matte
