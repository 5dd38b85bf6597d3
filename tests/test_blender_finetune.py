"""The add-on's "Train on keyframes" (issue 14): host-free with the fake engine, then in real Blender.

The host-free part runs ``training.FinetuneProcess`` against the plugins' fake engine (its ``finetune``
reports steps and a loss): the command, the progress, the cancel. The real-bpy part runs
``tests/blender_driver/drive_rvm_finetune.py`` in Blender's venv (as test_blender_addon.py does): a roto
sequence in an Image node and a drawn Mask in a Mask node, the refusals, and the operator with the real
engine for each, whose render must use the checkpoint its training wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rvm_vfx.spec.finetune import FinetuneSettings, finetune_arguments

from .blender_driver.addon_package import addon_module
from .conftest import ROOT, TFJS_MODEL, require_blender_python
from .fake_engine import engine_python, kill_fake_engines
from .test_blender_addon import ADDON, BLENDER_PYTHON, FIRST, FRAMES, HEIGHT, WIDTH, make_plate, read, run_driver

jobspec = addon_module("jobspec")
training = addon_module("training")
DRIVER = ROOT / "tests" / "blender_driver" / "drive_rvm_finetune.py"


# ------------------------------------------------------------------------------------------ host-free


def _job(**fields):
    return jobspec.build_job(input="/shots/sh010/plate.####.png", output="/out/sh010/plate_rvm.####.exr",
                             frames=[1001, 1002, 1003], input_colorspace="sRGB - Texture", **fields)  # fmt: skip


def test_training_takes_the_plate_as_the_render_reads_it():
    job = _job(checkpoint="/models/rvm.pth", device="cpu", downsample=0.5)
    settings = training.finetune_settings(job, "/roto/r.####.exr", 40, 2.5)
    assert settings.to_dict() == FinetuneSettings(
        keyframes="/roto/r.####.exr", frames="1001-1003", checkpoint="/models/rvm.pth", downsample=0.5,
        iterations=40, time_limit=2.5, device="cpu", input_colorspace="sRGB - Texture",
    ).to_dict()  # fmt: skip
    with pytest.raises(jobspec.JobSpecError) as error:
        training.finetune_settings(job, "/roto/r.####.exr", 0, 2.5)
    assert str(error.value).startswith("training: finetune field 'iterations': ")
    assert training.trained_checkpoint("/out/sh010/plate_rvm.####.exr", "plate") == "/out/sh010/plate_trained.pth"
    assert training.keyframe_list("1, 12-13") == [1, 12, 13]
    with pytest.raises(jobspec.JobSpecError, match="^list the scene frames of the Mask's keyframes"):
        training.keyframe_list(" ")


def test_the_training_process_runs_finetune_and_reports_steps_and_loss(tmp_path: Path):
    python = engine_python(tmp_path / "fake", "ok")
    settings = FinetuneSettings(keyframes=str(tmp_path / "roto.####.exr"), iterations=4)
    out = tmp_path / "out" / "plate_trained.pth"
    out.parent.mkdir()
    process = training.FinetuneProcess(str(python), "/shots/plate.####.png", str(out), settings)
    expected = finetune_arguments("/shots/plate.####.png", str(out), settings, progress="json", overwrite=True)
    assert process.command == [str(python), "-m", "rvm_vfx", *expected]
    assert process.state.status_line().startswith("RVM Matte: training: starting the engine")
    process.start()
    lines = []
    while process.poll() is None:
        process.events(timeout=0.5)
        lines.append(process.state.status_line())
    assert process.wait() == 0 and process.failure(0) is None
    assert (process.state.done, process.state.total, process.state.steps, process.state.loss) == (4, 4, 4, 0.125)
    assert out.read_bytes() == b"trained weights"
    recorded = json.loads((out.parent / "fake-finetune.json").read_text())["arguments"]
    assert recorded == expected
    assert process.state.status_line() == "RVM Matte: training step 4/4 · loss 0.1250  Esc to cancel"


def test_cancelling_the_training_stops_it_cleanly(tmp_path: Path):
    python = engine_python(tmp_path / "fake", "wait")
    out = tmp_path / "out" / "plate_trained.pth"
    out.parent.mkdir()
    settings = FinetuneSettings(keyframes=str(tmp_path / "roto.####.exr"), iterations=5)
    process = training.FinetuneProcess(str(python), "/shots/plate.####.png", str(out), settings)
    process.start()
    while process.state.done < 1:  # the first step reported: the fake now waits for SIGTERM
        process.events(timeout=0.5)
        assert process.poll() is None, process.stderr_tail
    assert process.state.status_line() == "RVM Matte: training step 1/5 · loss 0.5000 · ETA 0:04  Esc to cancel"
    process.cancel()
    code = process.wait()
    assert code == 1 and process.state.stopped and not process.state.finished
    assert out.read_bytes() == b"trained weights"  # the best weights so far, kept by the engine
    assert kill_fake_engines(tmp_path) == []


# ------------------------------------------------------------------------------------------ real Blender


ROTO = np.zeros((HEIGHT, WIDTH, 1), np.float32)
ROTO[HEIGHT // 4 : HEIGHT * 3 // 4, WIDTH // 4 : WIDTH * 3 // 4] = 1.0  # a box: far from a person's matte


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_blender_python(BLENDER_PYTHON)  # skips without Blender's optional venv, fails in CI
    import OpenImageIO as oiio

    work = tmp_path_factory.mktemp("blender_finetune")
    plates = make_plate(work / "plates")
    roto_dir = work / "roto"
    roto_dir.mkdir()
    for frame in (FIRST, FIRST + 2):  # keyframes 1001 and 1003: the roto sequence has a gap, as roto does
        buf = oiio.ImageBuf(oiio.ImageSpec(WIDTH, HEIGHT, 1, oiio.UINT8))
        buf.set_pixels(oiio.ROI(0, WIDTH, 0, HEIGHT, 0, 1, 0, 1), ROTO)
        assert buf.write(str(roto_dir / f"roto.{frame}.png")), buf.geterror()
    config = {
        "addon_dir": str(ADDON),
        "work_dir": str(work),
        "engine_python": sys.executable,
        "checkpoint": str(TFJS_MODEL),
        "plate_first": str(plates[0]),
        "roto_first": str(roto_dir / f"roto.{FIRST}.png"),
        "frames": FRAMES,
        "first_frame": FIRST,
        "iterations": 2,
    }
    result = run_driver(DRIVER, work, config)
    result["work"] = str(work)
    return result


def test_the_operator_and_its_panel_are_registered_with_the_engines_defaults(finetune_run: dict) -> None:
    assert finetune_run["registered"] == {"operator": True, "panel": True}
    assert finetune_run["settings"] == {"iterations": 150, "time_limit": 10.0}


def test_refusals_name_what_to_fix(finetune_run: dict) -> None:
    assert finetune_run["refusals"] == {
        "no_node": "choose the roto's node (an Image node of mattes, or a Mask node) in Roto Node",
        "missing_node": "the roto node 'Nope' is not in the compositor",
        "mask_without_keyframes": "list the scene frames of the Mask's keyframes in Keyframes (e.g. 1,12,24)",
        "mask_keyframe_outside": "Keyframes: frame 9 is outside the scene's frame range 1-3",
    }


@pytest.mark.parametrize("roto", ["image", "mask"])
def test_trains_then_renders_the_matte_with_the_trained_checkpoint(finetune_run: dict, roto: str) -> None:
    outcome = finetune_run[roto]
    assert outcome["run"] == {"result": ["FINISHED"], "error": None}
    planned = outcome["planned"]
    checkpoint = Path(planned["checkpoint"])
    assert checkpoint.name == "plate_trained.pth" and checkpoint.is_file()
    sidecar = outcome["sidecar"]
    assert sidecar["iterations"]["done"] == 2 and sidecar["sha256"]
    # The render's Job names the trained weights, and the matte it wrote is on disk.
    job = outcome["job_file"]
    assert job["checkpoint"] == str(checkpoint) == planned["job"]["checkpoint"]
    assert all(Path(job["output"].replace("####", str(f))).is_file() for f in range(FIRST, FIRST + FRAMES))
    command = planned["command"]
    assert command[3:7] == ["finetune", job["input"], planned["keyframes"], str(checkpoint)]
    if roto == "image":
        assert planned["keyframes"].endswith("/roto/roto.####.png")
        assert sidecar["keyframes"]["frames"] == [FIRST, FIRST + 2]
    else:
        # The Mask was rendered at scene frame 2, which the plate's node shows as plate frame 1002.
        assert planned["mask_frames"] == {"2": FIRST + 1}
        assert sidecar["keyframes"]["frames"] == [FIRST + 1]
        mask = read(planned["keyframes"].replace("####", str(FIRST + 1)))
        assert mask.shape == (HEIGHT, WIDTH, 1)
        # Blender's mask space is square, the frame's width spanning 0-1: the square drawn from 0.25 to 0.75 covers
        # 64x64 pixels in the middle of this 128x96 frame (mean 1/3), 1 inside and 0 outside.
        side = WIDTH // 2
        top, left = (HEIGHT - side) // 2, (WIDTH - side) // 2
        assert mask[top + 2 : top + side - 2, left + 2 : left + side - 2].min() == 1.0
        assert mask[: top - 2].max() == 0.0 and mask[:, : left - 2].max() == 0.0
        assert abs(float(mask.mean()) - 1 / 3) < 0.01  # (anti-aliased edges may move a few pixels' worth)
