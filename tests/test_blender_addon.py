"""The Blender add-on end to end, in real Blender (PyPI ``bpy`` 5.0.1) against the real engine CLI.

Blender runs in its own venv (``.venv-blender``: bpy pins numpy < 2, the engine needs numpy 2), exactly
as an artist's Blender runs the engine from another environment. The driver installs the extension from
``plugins/blender``, runs the operator on a small plate sequence, renders compositor frames to EXR and
reports back; the pixels are judged here against the engine's own EXR matte composited by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.job import Job
from rvm_vfx.spec import SCHEMA_VERSION
from rvm_vfx.spec.job import DEVICES, PRECISIONS
from rvm_vfx.spec.names import ENCODERS

from .conftest import DATA, ROOT, TFJS_MODEL, require_blender_python
from .fake_engine import engine_python, kill_fake_engines

# Another Blender (bpy 4.2, 4.5...) or add-on version can be put under the same test with these.
BLENDER_PYTHON = Path(os.environ.get("RVM_VFX_BLENDER_PYTHON", ROOT / ".venv-blender" / "bin" / "python"))
DRIVER = ROOT / "tests" / "blender_driver" / "drive_rvm_matte.py"
ADDON = Path(os.environ.get("RVM_VFX_BLENDER_ADDON", ROOT / "plugins" / "blender"))
FRAMES, FIRST = 3, 1001
WIDTH, HEIGHT = 128, 96
RENDER_FRAME = 2  # scene frame 2 shows plate frame 1002 through the Image node's offset
BACKGROUND = [0.2, 0.4, 0.6, 1.0]


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


def make_plate(folder: Path, name: str = "plate", first_portrait: int = 0) -> list[Path]:
    """Three 128x96 frames from different real portraits, so a wrong frame mapping shows in the pixels."""
    folder.mkdir(parents=True)
    sources = sorted((DATA / "portraits" / "image").glob("*.jpg"))[first_portrait : first_portrait + FRAMES]
    paths = []
    for i, source in enumerate(sources):
        buf = oiio.ImageBuf(str(source))
        small = oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, WIDTH, 0, HEIGHT, 0, 1, 0, 3))
        path = folder / f"{name}.{FIRST + i:04d}.png"
        assert small.write(str(path), "uint8"), small.geterror()
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def blender_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_blender_python(BLENDER_PYTHON)  # skips without Blender's optional venv, fails in CI
    work = tmp_path_factory.mktemp("blender")
    plates = make_plate(work / "plates")
    # Two shots whose plates share a file name (different people), and a movie of the same name.
    shot_a = make_plate(work / "shotA", "juggle")
    shot_b = make_plate(work / "shotB", "juggle", first_portrait=FRAMES)
    # The cancel case's engine: frame 1, then it waits for SIGTERM and stops as the engine does.
    fake = engine_python(work / "fake_engine", "wait")
    config = {
        "addon_dir": str(ADDON),
        "work_dir": str(work),
        "engine_python": sys.executable,
        "fake_engine": str(fake),
        "checkpoint": str(TFJS_MODEL),
        "plate_first": str(plates[0]),
        "movie": str(make_movie(work / "movie.mp4", plates)),
        "shot_a": str(shot_a[0]),
        "shot_b": str(shot_b[0]),
        "shot_a_movie": str(make_movie(work / "shotA" / "juggle.mp4", shot_a)),
        "frames": FRAMES,
        "first_frame": FIRST,
        "render_frame": RENDER_FRAME,
        "background": BACKGROUND,
    }
    result = run_driver(DRIVER, work, config)
    result["plates"] = [str(p) for p in plates]
    result["shot_plates"] = {"shot_a": [str(p) for p in shot_a], "shot_b": [str(p) for p in shot_b]}
    return result


def run_driver(driver: Path, work: Path, config: dict) -> dict:
    """Run a driver script inside real bpy with ``config``; its result, or a failure showing Blender's output."""
    (work / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "OCIO")}
    env["BLENDER_USER_RESOURCES"] = str(work / "blender_user")  # never touch the real Blender profile
    proc = subprocess.run(
        [str(BLENDER_PYTHON), str(driver), str(work / "config.json"), str(work / "result.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and (work / "result.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((work / "result.json").read_text())
    assert "driver_error" not in result, result["driver_error"] + proc.stdout[-4000:]
    return result


def host_names(blender_run: dict) -> dict[str, str]:
    """Names that differ by Blender version: 5.0 made the compositor a node group and named Alpha Over's inputs."""
    if int(blender_run["blender"].split(".")[0]) >= 5:
        return {"output": "Group Output", "output_type": "NodeGroupOutput", "foreground": "Foreground"}
    return {"output": "Composite", "output_type": "CompositorNodeComposite", "foreground": "Image"}


def test_runs_in_the_blender_of_its_venv(blender_run: dict) -> None:
    assert blender_run["blender"].startswith(blender_run["bpy_package"])
    if "RVM_VFX_BLENDER_PYTHON" not in os.environ:
        assert blender_run["bpy_package"] == "5.0.1"


def test_extension_registers_and_unregisters_cleanly(blender_run: dict) -> None:
    assert blender_run["registered"] == {"operator": True, "panel": True, "scene_settings": True}
    assert blender_run["registered_after_disable"] == {"operator": False, "panel": False, "scene_settings": False}


def test_the_settings_offer_the_values_the_engine_accepts(blender_run: dict) -> None:
    assert blender_run["enums"] == {
        "preferences.device": list(DEVICES),
        "scene.device": ["PREFS", *DEVICES],
        "scene.precision": list(PRECISIONS),
        "scene.encoder": list(ENCODERS),
    }


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
    assert job.to_dict() == job_dict  # every field, as the engine writes a Job
    assert job_dict["schema_version"] == SCHEMA_VERSION
    assert job.input.endswith("plates/plate.####.png")
    assert job.frames == f"{FIRST}-{FIRST + FRAMES - 1}"
    assert job.input_colorspace == "sRGB - Texture"
    assert job.output_colorspace == "lin_rec709"
    assert job.device == "cpu"
    assert job.checkpoint == str(TFJS_MODEL)
    assert re.search(r"/rvm/plate-[0-9a-f]{8}/plate_rvm\.####\.exr$", job.output), job.output


def test_matte_loaded_as_premultiplied_linear_sequence(blender_run: dict) -> None:
    image = blender_run["set_alpha"]["image"]
    assert image["count"] == 1  # the rerun reloaded the same Image
    assert image["source"] == "SEQUENCE"
    assert image["alpha_mode"] == "PREMUL"
    assert image["colorspace"] == "Linear Rec.709"
    assert re.fullmatch(rf"//rvm/plate-[0-9a-f]{{8}}/plate_rvm\.{FIRST}\.exr", image["filepath"]), image["filepath"]


def test_compositor_wired_to_the_output(blender_run: dict) -> None:
    names = host_names(blender_run)
    output, output_type = names["output"], names["output_type"]
    over = blender_run["alpha_over"]["tree"]
    assert f"RVM Matte (Plate).Image -> RVM Composite (Plate).{names['foreground']}" in over["links"]
    assert f"RVM Composite (Plate).Image -> {output}.Image" in over["links"]
    set_alpha = blender_run["set_alpha"]["tree"]
    assert sorted(set_alpha["links"]) == sorted(
        [
            "Plate.Image -> RVM Composite (Plate).Image",
            "RVM Matte (Plate).Alpha -> RVM Composite (Plate).Alpha",
            f"RVM Composite (Plate).Image -> {output}.Image",
        ]
    )
    types = sorted(n["type"] for n in set_alpha["nodes"])
    # Two runs, one plate node (found again from its file path), one matte node, one mix node.
    assert types == sorted(["CompositorNodeImage", "CompositorNodeImage", "CompositorNodeSetAlpha", output_type])


def _matte_frame(blender_run: dict) -> np.ndarray:
    output = blender_run["alpha_over"]["job"]["output"]
    frame = FIRST + RENDER_FRAME - 1
    return read(output.replace("####", f"{frame:04d}"))


def assert_matte_keeps_plate(matte: np.ndarray, plate_path: str) -> None:
    """Where the matte is solid the engine keeps the plate's own (linearised) pixels: the matte is of that plate."""
    plate = srgb_to_linear(read(plate_path))
    alpha = matte[..., 3]
    solid, clear = alpha >= 0.999, alpha <= 0.001
    assert solid.mean() > 0.1 and clear.mean() > 0.1, "not a matte of a person"
    # OCIO's float32 sRGB decode vs the float64 formula, half storage (<= 2.4e-4 below 1.0) and the solid
    # ramp-in just below alpha 1: measured 3.3e-4, the same on every ISA.
    np.testing.assert_allclose(matte[..., :3][solid], plate[solid], atol=2e-3)
    assert np.abs(matte[..., :3][clear]).max() < 1e-3  # premultiplied: at most alpha (<= 1e-3) x colour (<= 1)


def test_engine_matte_is_linear_rec709_of_the_plate(blender_run: dict) -> None:
    """This checks the colour spaces the add-on chose."""
    assert_matte_keeps_plate(_matte_frame(blender_run), blender_run["plates"][RENDER_FRAME - 1])


def test_alpha_over_render_matches_hand_composite(blender_run: dict) -> None:
    matte = _matte_frame(blender_run)
    rendered = read(blender_run["alpha_over"]["render"])
    assert rendered.shape == (HEIGHT, WIDTH, 4)
    bg = np.array(BACKGROUND, np.float32)
    expected = matte + (1.0 - matte[..., 3:4]) * bg
    # Blender's float32 alpha over vs numpy's: measured 0 under every oneDNN / ATen setting, but the movie case
    # below once differed by 2.9e-4 (ATEN_CPU_CAPABILITY=default; cause not pinned down), so 1e-3 stays.
    np.testing.assert_allclose(rendered, expected, atol=1e-3)


def test_set_alpha_render_matches_hand_composite(blender_run: dict) -> None:
    matte = _matte_frame(blender_run)
    plate = srgb_to_linear(read(blender_run["plates"][RENDER_FRAME - 1]))
    rendered = read(blender_run["set_alpha"]["render"])
    alpha = matte[..., 3:4]
    # Blender's own sRGB decode of the 8-bit plate vs the float64 formula: measured 1.5e-5 on every setting;
    # the alpha is the matte's, passed through (measured 0). Kept at 3e-3 / 1e-3 for the unexplained 2.9e-4 of
    # the movie case below; a wrong colour space is off by more than 1e-2.
    np.testing.assert_allclose(rendered[..., :3], plate * alpha, atol=3e-3)
    np.testing.assert_allclose(rendered[..., 3:], alpha, atol=1e-3)


def test_movie_plate_from_a_file_path(blender_run: dict) -> None:
    movie = blender_run["movie"]
    assert movie["result"] == ["FINISHED"], movie["error"]
    job = Job.from_dict(movie["job"])
    assert job.input.endswith("/movie.mp4") and job.start_frame == 1 and job.frames == "1-3"
    folder = re.search(r"/rvm/(movie-[0-9a-f]{8})/movie_rvm\.####\.exr$", job.output)
    assert folder, job.output
    assert movie["image"]["filepath"] == f"//rvm/{folder.group(1)}/movie_rvm.0001.exr"
    host = host_names(blender_run)
    assert f"RVM Composite (movie.mp4).Image -> {host['output']}.Image" in movie["tree"]["links"]
    # Scene frame 2 is the movie's 2nd frame; the render is the matte's frame 0002 over the background.
    matte = read(job.output.replace("####", "0002"))
    rendered = read(movie["render"])
    expected = matte + (1.0 - matte[..., 3:4]) * np.array(BACKGROUND, np.float32)
    # As in the alpha-over test: measured 0, and once 2.9e-4 (ATEN_CPU_CAPABILITY=default, cause not found).
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
    # The movie chosen by its file path again: its Image node is found again, not added a second time.
    plates = [n["name"] for n in modal["tree"]["nodes"] if n.get("image", "").startswith("movie.mp4")]
    assert plates == ["movie.mp4"]


def test_esc_stops_the_engine_and_reports(blender_run: dict) -> None:
    cancel = blender_run["cancel"]
    assert cancel["result"] == ["CANCELLED"]
    assert cancel["exit_code"] == 1
    assert cancel["operator_free_again"]
    assert len(cancel["reports"]) == 1
    kind, message = cancel["reports"][0]
    assert kind == ["WARNING"]
    assert message == f"RVM Matte cancelled: 1 of 3 frames were written to {cancel['folder']}"
    assert re.search(r"/rvm_cancel/movie-[0-9a-f]{8}$", cancel["folder"]), cancel["folder"]
    # The frame written before Esc, and nothing half-written.
    assert [name for name in cancel["files"] if name.endswith(".exr")] == ["movie_rvm.0001.exr"]
    statuses = cancel["statuses"]
    assert statuses[0] == "RVM Matte: starting the engine (loading the model)…  Esc to cancel"
    # The fake says "start" a moment before its first frame: a timer event may fall in between.
    assert set(statuses[1:-2]) <= {"RVM Matte: 0/3 frames  Esc to cancel"}
    assert statuses[-2:] == [
        "RVM Matte: 1/3 frames · frame 1 · 2.50 fps · ETA 0:01  Esc to cancel",
        "RVM Matte: stopping after the current frame…",
    ]
    assert kill_fake_engines(Path(cancel["folder"])) == []  # it ended when asked


# ------------------------------------------------------------------------------------------ issue 11


def _node(tree: dict, name: str) -> dict:
    return next(n for n in tree["nodes"] if n["name"] == name)


def test_renamed_plate_node_updates_its_matte_instead_of_adding_one(blender_run: dict) -> None:
    rename, host = blender_run["rename"], host_names(blender_run)
    renamed = rename["renamed"]
    assert renamed["result"] == ["FINISHED"], renamed["error"]
    names = sorted(n["name"] for n in renamed["tree"]["nodes"])
    # The same nodes as before the rename; the matte and composite nodes follow the plate's new name.
    assert len(names) == len(rename["before"]["nodes"])
    assert "RVM Matte (Plate)" not in names and "RVM Composite (Plate)" not in names
    assert f"RVM Matte (Plate v2).Image -> RVM Composite (Plate v2).{host['foreground']}" in renamed["tree"]["links"]
    assert f"RVM Composite (Plate v2).Image -> {host['output']}.Image" in renamed["tree"]["links"]


def test_plate_node_renamed_while_the_engine_renders_is_still_wired(blender_run: dict) -> None:
    mid_run, host = blender_run["rename"]["mid_run"], host_names(blender_run)
    assert mid_run["result"] == ["FINISHED"], mid_run["reports"]
    assert [kind for kind, _ in mid_run["reports"]] == [["INFO"]]
    assert mid_run["reports"][0][1].endswith("→ RVM Composite (Plate v3)")
    assert len(mid_run["tree"]["nodes"]) == len(blender_run["rename"]["before"]["nodes"])
    assert f"RVM Matte (Plate v3).Image -> RVM Composite (Plate v3).{host['foreground']}" in mid_run["tree"]["links"]


def test_a_copied_plate_node_gets_its_own_matte(blender_run: dict) -> None:
    rename, host = blender_run["rename"], host_names(blender_run)
    copied = rename["copied"]
    assert copied["result"] == ["FINISHED"], copied["error"]
    names = {n["name"] for n in copied["tree"]["nodes"]}
    assert len(copied["tree"]["nodes"]) == len(rename["mid_run"]["tree"]["nodes"]) + 3  # the copy, its matte, its mix
    assert {"RVM Matte (Plate v3)", "RVM Matte (Plate copy)", "RVM Composite (Plate copy)"} <= names
    assert f"RVM Matte (Plate copy).Image -> RVM Composite (Plate copy).{host['foreground']}" in copied["tree"]["links"]


def test_wrong_image_node_offset_names_the_range_asked_and_on_disk(blender_run: dict) -> None:
    offset = blender_run["offset"]
    assert offset["result"] == ["CANCELLED"]
    assert offset["error"] == (
        "Error: RVM Matte: Image node 'Plate v3' asks for frames 1-3 (frame_start 1, offset 0, duration 3) "
        "but the sequence on disk has frames 1001-1003: set the node's offset to 1000"
    )


def test_same_named_plates_get_their_own_folders_mattes_and_images(blender_run: dict) -> None:
    runs = dict(blender_run["same_name"])
    other_frame = runs.pop("shot_a_other_frame")
    for label, run in runs.items():
        assert run["result"] == ["FINISHED"], (label, run["error"])
    outputs = {label: run["job"]["output"] for label, run in runs.items()}
    folders = {label: os.path.dirname(output) for label, output in outputs.items()}
    assert len(set(folders.values())) == 3, folders
    for output in outputs.values():
        assert re.search(r"/rvm/juggle-[0-9a-f]{8}/juggle_rvm\.####\.exr$", output), output
    # Each folder keeps its own plate's job file and matte, after all three ran.
    for label, plate in (("shot_a", "shotA/juggle.####.png"), ("shot_b", "shotB/juggle.####.png"),
                         ("shot_a_movie", "shotA/juggle.mp4")):  # fmt: skip
        job = json.loads((Path(folders[label]) / "juggle_rvm.job.json").read_text())
        assert job["input"].endswith(plate) and job["output"] == outputs[label]
    frame = FIRST + RENDER_FRAME - 1
    for label in ("shot_a", "shot_b"):
        matte = read(outputs[label].replace("####", f"{frame:04d}"))
        assert_matte_keeps_plate(matte, blender_run["shot_plates"][label][RENDER_FRAME - 1])
    # One Image datablock per plate, each loaded from its own folder, in the matte node of its plate.
    images = {label: run["image"] for label, run in runs.items()}
    assert all(image["count"] == 1 for image in images.values()), images
    assert len({image["name"] for image in images.values()}) == 3
    tree = runs["shot_a_movie"]["tree"]
    mattes = [n for n in tree["nodes"] if n["name"].startswith("RVM Matte (juggle")]
    assert len(mattes) == 3
    assert sorted(os.path.dirname(n["image_path"]) for n in mattes) == sorted(folders.values())
    # Picking frame 1002 of shot A is shot A again: same folder, no new node, the same image.
    assert other_frame["result"] == ["FINISHED"], other_frame["error"]
    assert other_frame["job"]["output"] == outputs["shot_a"]
    assert len(other_frame["tree"]["nodes"]) == len(tree["nodes"])
    assert other_frame["image"] == images["shot_a"]


def test_another_plates_matte_folder_is_never_overwritten(blender_run: dict) -> None:
    foreign = blender_run["foreign"]
    folder = foreign["folder"]
    assert foreign["other_plate"]["result"] == ["CANCELLED"]
    assert foreign["other_plate"]["error"] == (
        f"Error: RVM Matte: the output folder {folder} holds the matte of another plate "
        "(/elsewhere/juggle.####.png, a sequence), and mattes of other plates are never overwritten: "
        "choose another Output Folder, or delete that folder"
    )
    assert foreign["no_owner"]["result"] == ["CANCELLED"]
    assert foreign["no_owner"]["error"] == (
        f"Error: RVM Matte: the output folder {folder} holds files but no rvm_plate.json saying which plate "
        "they belong to, and mattes of other plates are never overwritten: choose another Output Folder, "
        "or delete that folder"
    )
    assert foreign["frames_untouched"]


def test_panel_shows_the_plates_output_folder(blender_run: dict) -> None:
    panel = blender_run["panel"]
    shot_b = os.path.basename(os.path.dirname(blender_run["same_name"]["shot_b"]["job"]["output"]))
    assert f"Matte folder: //rvm/{shot_b}/" in panel["shot_b"]
    plate = os.path.basename(os.path.dirname(blender_run["alpha_over"]["job"]["output"]))
    assert f"Matte folder: //rvm/{plate}/" in panel["node"]
    assert not [label for label in panel["unknown_node"] if label.startswith("Matte folder")]
