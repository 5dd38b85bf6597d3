"""The Blender add-on end to end, in real Blender (PyPI ``bpy`` 5.0.1) against the real engine CLI.

Blender runs in its own venv (``.venv-blender``: bpy pins numpy < 2, the engine needs numpy 2), exactly
as an artist's Blender runs the engine from another environment. The driver installs the extension from
``plugins/blender``, runs the operator on a small plate sequence, renders compositor frames to EXR and
reports back; the pixels are judged here against the engine's own EXR matte composited by hand.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.job import Job

from .conftest import DATA, ROOT, TFJS_MODEL, require_blender_python

BLENDER_PYTHON = ROOT / ".venv-blender" / "bin" / "python"
DRIVER = ROOT / "tests" / "blender_driver" / "drive_rvm_matte.py"
ADDON = ROOT / "plugins" / "blender"
FRAMES, FIRST = 3, 1001
WIDTH, HEIGHT = 128, 96
RENDER_FRAME = 2  # scene frame 2 shows plate frame 1002 through the Image node's offset
BACKGROUND = [0.2, 0.4, 0.6, 1.0]

# The fake engine for the cancel case: says it started and finished one frame, then waits for SIGTERM
# and stops the way the real engine does (a "cancelled" event, exit 1). No timing involved.
FAKE_ENGINE = """\
import json, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
def say(**event):
    print(json.dumps(event), flush=True)
say(event="start", total=3)
say(event="progress", frame=1001, done=1, total=3, fps=2.0, eta_s=1.0)
signal.sigwait({signal.SIGTERM})
say(event="cancelled", done=1, total=3, outputs=[], stopped=True)
sys.exit(1)
"""


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def read(path: str | Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    return buf.get_pixels(oiio.FLOAT)


def make_movie(path: Path, plates: list[Path]) -> Path:
    """The same frames as a small MPEG-4 movie, the other kind of plate an Image node holds."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for plate in plates:
            rgb = oiio.ImageBuf(str(plate)).get_pixels(oiio.UINT8)[..., :3]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path


def make_plate(folder: Path) -> list[Path]:
    """Three 128x96 frames from different real portraits, so a wrong frame mapping shows in the pixels."""
    folder.mkdir(parents=True)
    sources = sorted((DATA / "portraits" / "image").glob("*.jpg"))[:FRAMES]
    paths = []
    for i, source in enumerate(sources):
        buf = oiio.ImageBuf(str(source))
        small = oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, WIDTH, 0, HEIGHT, 0, 1, 0, 3))
        path = folder / f"plate.{FIRST + i:04d}.png"
        assert small.write(str(path), "uint8"), small.geterror()
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def blender_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_blender_python(BLENDER_PYTHON)  # skips without Blender's optional venv, fails in CI
    work = tmp_path_factory.mktemp("blender")
    plates = make_plate(work / "plates")
    fake = work / "fake_engine" / "python"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\n{FAKE_ENGINE}")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    config = {
        "addon_dir": str(ADDON),
        "work_dir": str(work),
        "engine_python": sys.executable,
        "fake_engine": str(fake),
        "checkpoint": str(TFJS_MODEL),
        "plate_first": str(plates[0]),
        "movie": str(make_movie(work / "movie.mp4", plates)),
        "frames": FRAMES,
        "first_frame": FIRST,
        "render_frame": RENDER_FRAME,
        "background": BACKGROUND,
    }
    (work / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "OCIO")}
    env["BLENDER_USER_RESOURCES"] = str(work / "blender_user")  # never touch the real Blender profile
    proc = subprocess.run(
        [str(BLENDER_PYTHON), str(DRIVER), str(work / "config.json"), str(work / "result.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and (work / "result.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((work / "result.json").read_text())
    assert "driver_error" not in result, result["driver_error"] + proc.stdout[-4000:]
    result["plates"] = [str(p) for p in plates]
    return result


def test_runs_in_blender_5(blender_run: dict) -> None:
    assert blender_run["blender"].startswith("5.0.1")


def test_extension_registers_and_unregisters_cleanly(blender_run: dict) -> None:
    assert blender_run["registered"] == {"operator": True, "panel": True, "scene_settings": True}
    assert blender_run["registered_after_disable"] == {"operator": False, "panel": False, "scene_settings": False}


def test_missing_engine_python_is_explained(blender_run: dict) -> None:
    errors = blender_run["errors"]
    for case in (
        "no_python",
        "python_missing",
        "python_without_engine",
        "unsaved_blend",
        "still_image",
        "engine_error",
    ):
        assert errors[case]["result"] == ["CANCELLED"], case
        assert "Traceback" not in errors[case]["error"], errors[case]["error"]
    assert "no engine Python set" in errors["no_python"]["error"]
    assert "Preferences > Add-ons > RVM Matte" in errors["no_python"]["error"]
    assert "no-such-venv/bin/python does not exist" in errors["python_missing"]["error"]
    assert "has no rvm-vfx installed" in errors["python_without_engine"]["error"]
    assert "save the blend file first" in errors["unsaved_blend"]["error"]
    assert "is not a sequence or movie (its Source is File)" in errors["still_image"]["error"]


def test_engine_error_reaches_the_artist_as_a_report(blender_run: dict) -> None:
    message = blender_run["errors"]["engine_error"]["error"]
    assert "RVM Matte failed: CheckpointError:" in message
    assert "missing_checkpoint.pth" in message


def test_job_written_by_the_addon_is_a_valid_engine_job(blender_run: dict) -> None:
    job_dict = blender_run["alpha_over"]["job"]
    job = Job.from_dict(job_dict)
    assert job.input.endswith("plates/plate.####.png")
    assert job.frames == f"{FIRST}-{FIRST + FRAMES - 1}"
    assert job.input_colorspace == "sRGB - Texture"
    assert job.output_colorspace == "lin_rec709"
    assert job.device == "cpu"
    assert job.checkpoint == str(TFJS_MODEL)
    assert job.output.endswith("rvm/plate/plate_rvm.####.exr")


def test_matte_loaded_as_premultiplied_linear_sequence(blender_run: dict) -> None:
    image = blender_run["set_alpha"]["image"]
    assert image["count"] == 1  # the rerun reloaded the same Image
    assert image["source"] == "SEQUENCE"
    assert image["alpha_mode"] == "PREMUL"
    assert image["colorspace"] == "Linear Rec.709"
    assert image["filepath"] == f"//rvm/plate/plate_rvm.{FIRST}.exr"


def test_compositor_wired_to_group_output(blender_run: dict) -> None:
    over = blender_run["alpha_over"]["tree"]
    assert "RVM Matte (Plate).Image -> RVM Composite (Plate).Foreground" in over["links"]
    assert "RVM Composite (Plate).Image -> Group Output.Image" in over["links"]
    set_alpha = blender_run["set_alpha"]["tree"]
    assert sorted(set_alpha["links"]) == sorted(
        [
            "Plate.Image -> RVM Composite (Plate).Image",
            "RVM Matte (Plate).Alpha -> RVM Composite (Plate).Alpha",
            "RVM Composite (Plate).Image -> Group Output.Image",
        ]
    )
    types = sorted(n["type"] for n in set_alpha["nodes"])
    # Two runs, one plate node (found again from its file path), one matte node, one mix node.
    assert types == ["CompositorNodeImage", "CompositorNodeImage", "CompositorNodeSetAlpha", "NodeGroupOutput"]


def _matte_frame(blender_run: dict) -> np.ndarray:
    output = blender_run["alpha_over"]["job"]["output"]
    frame = FIRST + RENDER_FRAME - 1
    return read(output.replace("####", f"{frame:04d}"))


def test_engine_matte_is_linear_rec709_of_the_plate(blender_run: dict) -> None:
    """Where the matte is solid the engine keeps the plate: this checks the colour spaces the add-on chose."""
    matte = _matte_frame(blender_run)
    plate = srgb_to_linear(read(blender_run["plates"][RENDER_FRAME - 1]))
    alpha = matte[..., 3]
    solid, clear = alpha >= 0.999, alpha <= 0.001
    assert solid.mean() > 0.1 and clear.mean() > 0.1, "not a matte of a person"
    np.testing.assert_allclose(matte[..., :3][solid], plate[solid], atol=2e-3)
    assert np.abs(matte[..., :3][clear]).max() < 1e-3


def test_alpha_over_render_matches_hand_composite(blender_run: dict) -> None:
    matte = _matte_frame(blender_run)
    rendered = read(blender_run["alpha_over"]["render"])
    assert rendered.shape == (HEIGHT, WIDTH, 4)
    bg = np.array(BACKGROUND, np.float32)
    expected = matte + (1.0 - matte[..., 3:4]) * bg
    np.testing.assert_allclose(rendered, expected, atol=1e-3)


def test_set_alpha_render_matches_hand_composite(blender_run: dict) -> None:
    matte = _matte_frame(blender_run)
    plate = srgb_to_linear(read(blender_run["plates"][RENDER_FRAME - 1]))
    rendered = read(blender_run["set_alpha"]["render"])
    alpha = matte[..., 3:4]
    np.testing.assert_allclose(rendered[..., :3], plate * alpha, atol=3e-3)
    np.testing.assert_allclose(rendered[..., 3:], alpha, atol=1e-3)


def test_movie_plate_from_a_file_path(blender_run: dict) -> None:
    movie = blender_run["movie"]
    assert movie["result"] == ["FINISHED"], movie["error"]
    job = Job.from_dict(movie["job"])
    assert job.input.endswith("/movie.mp4") and job.start_frame == 1 and job.frames == "1-3"
    assert job.output.endswith("rvm/movie/movie_rvm.####.exr")
    assert movie["image"]["filepath"] == "//rvm/movie/movie_rvm.0001.exr"
    assert "RVM Composite (movie.mp4).Image -> Group Output.Image" in movie["tree"]["links"]
    # Scene frame 2 is the movie's 2nd frame; the render is the matte's frame 0002 over the background.
    matte = read(job.output.replace("####", "0002"))
    rendered = read(movie["render"])
    expected = matte + (1.0 - matte[..., 3:4]) * np.array(BACKGROUND, np.float32)
    np.testing.assert_allclose(rendered, expected, atol=1e-3)


def test_modal_run_pumped_by_timer_events_finishes_and_wires(blender_run: dict) -> None:
    modal = blender_run["modal"]
    assert modal["result"] == ["FINISHED"] and modal["exit_code"] == 0
    assert modal["operator_free_again"]
    assert [kind for kind, _ in modal["reports"]] == [["INFO"]]
    assert modal["reports"][0][1].startswith("RVM Matte: 3 frames in ")
    assert modal["statuses"][0] == "RVM Matte: starting the engine (loading the model)…  Esc to cancel"
    # The status line follows the engine's count (several lines may arrive between two timer events).
    done = [int(s.removeprefix("RVM Matte: ").split("/")[0]) for s in modal["statuses"][1:]]
    assert done == sorted(done) and done[-1] == 3
    assert all("/3 frames" in s and s.endswith("Esc to cancel") for s in modal["statuses"][1:])


def test_esc_stops_the_engine_and_reports(blender_run: dict) -> None:
    cancel = blender_run["cancel"]
    assert cancel["result"] == ["CANCELLED"]
    assert cancel["exit_code"] == 1
    assert cancel["operator_free_again"]
    assert len(cancel["reports"]) == 1
    kind, message = cancel["reports"][0]
    assert kind == ["WARNING"]
    assert message.startswith("RVM Matte cancelled: 1 of 3 frames were written to ")
    assert cancel["statuses"] == [
        "RVM Matte: starting the engine (loading the model)…  Esc to cancel",
        "RVM Matte: 1/3 frames · frame 1001 · 2.00 fps · ETA 0:01  Esc to cancel",
        "RVM Matte: stopping after the current frame…",
    ]
