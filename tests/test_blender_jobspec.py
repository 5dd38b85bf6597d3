"""The Blender add-on's host-free job building, checked against the engine's own Job and colour config.

``plugins/blender/jobspec.py`` must never import bpy or rvm_vfx; these tests load it by path (not as a
package, whose ``__init__`` needs bpy) and hold its output to ``rvm_vfx.job.Job`` and the engine's OCIO
config, so the add-on and the engine cannot drift apart.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rvm_vfx.color import ColorPipeline
from rvm_vfx.job import Job

from .conftest import ROOT

PLUGIN = ROOT / "plugins" / "blender"


def load_plugin_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"rvm_blender_{name}", PLUGIN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


jobspec = load_plugin_module("jobspec")


def test_pure_python_modules_import_neither_bpy_nor_the_engine() -> None:
    for name in ("jobspec", "engine"):
        tree = ast.parse((PLUGIN / f"{name}.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}  # fmt: skip
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"bpy", "rvm_vfx", "torch", "numpy", ""}, (name, imported)


# ------------------------------------------------------------------------------------------ colour

BLENDER_PLATE_SPACES = {
    "sRGB": "sRGB Encoded Rec.709 (sRGB)",
    "Linear Rec.709": "Linear Rec.709 (sRGB)",
    "Linear Rec.2020": "Linear Rec.2020",
    "Linear DCI-P3 D65": "Linear P3-D65",
    "Linear CIE-XYZ D65": "CIE XYZ-D65 - Scene-referred",
    "Display P3": "sRGB Encoded P3-D65",
    "Rec.1886": "Gamma 2.4 Encoded Rec.709",
    "ACEScg": "ACEScg",
    "ACES2065-1": "ACES2065-1",
    "ACEScct": "ACEScct",
    "ACEScc": "ACEScc",
    "Non-Color": "Raw",
}


@pytest.fixture(scope="module")
def engine_colour() -> ColorPipeline:
    return ColorPipeline()


@pytest.mark.parametrize(("blender_name", "engine_space"), sorted(BLENDER_PLATE_SPACES.items()))
def test_blender_colour_spaces_resolve_in_the_engine_config(
    engine_colour: ColorPipeline, blender_name: str, engine_space: str
) -> None:
    name = jobspec.engine_colorspace(blender_name)
    assert engine_colour.validate_space(name) == engine_space


def test_output_space_is_linear_rec709_on_both_sides(engine_colour: ColorPipeline) -> None:
    assert engine_colour.validate_space(jobspec.ENGINE_LINEAR_REC709) == "Linear Rec.709 (sRGB)"
    assert jobspec.engine_colorspace(jobspec.BLENDER_LINEAR_REC709) == jobspec.ENGINE_LINEAR_REC709


def test_blender5_scene_linear_follows_the_working_space() -> None:
    assert jobspec.engine_colorspace("scene_linear") == "lin_rec709"
    assert jobspec.engine_colorspace("scene_linear", working_space="ACEScg") == "ACEScg"
    assert jobspec.engine_colorspace("scene_linear", working_space="Linear Rec.2020") == "lin_rec2020"


def test_studio_config_names_pass_through() -> None:
    assert jobspec.engine_colorspace("plate_alexa_logc4", studio_config=True) == "plate_alexa_logc4"


@pytest.mark.parametrize("name", ["AgX Log", "Filmic sRGB", "ACES 2.0 sRGB", "Rec.2020", "made up"])
def test_display_encodings_are_refused_with_the_usable_names(name: str) -> None:
    with pytest.raises(jobspec.JobSpecError, match=r"cannot be used for a plate.*Linear Rec\.709.*sRGB"):
        jobspec.engine_colorspace(name)


# ------------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    ("path", "pattern", "frame"),
    [
        ("/p/plate.1001.png", "/p/plate.####.png", 1001),
        ("/p/shot_v2.0007.exr", "/p/shot_v2.####.exr", 7),
        ("/p/render0042.tif", "/p/render####.tif", 42),
        ("/p/a12_b034_c.dpx", "/p/a12_b###_c.dpx", 34),
    ],
)
def test_sequence_pattern_replaces_blenders_frame_number(path: str, pattern: str, frame: int) -> None:
    assert jobspec.sequence_pattern(path) == (pattern, frame)


def test_sequence_pattern_needs_a_frame_number() -> None:
    with pytest.raises(jobspec.JobSpecError, match="no frame number"):
        jobspec.sequence_pattern("/p/still.png")


@pytest.mark.parametrize(
    ("path", "numbered", "stem"),
    [
        ("/p/plate.1001.png", True, "plate"),
        ("/p/shot_v2.0007.exr", True, "shot_v2"),
        ("/p/my plate#.####.png", True, "my_plate"),
        ("/p/shot010.mov", False, "shot010"),
        ("/p/0001.png", True, "plate"),
    ],
)
def test_plate_stem(path: str, numbered: bool, stem: str) -> None:
    assert jobspec.plate_stem(path, numbered=numbered) == stem


SHOT_A = "/shows/demo/shotA/juggle.1001.png"
SHOT_B = "/shows/demo/shotB/juggle.1001.png"
MOVIE_A = "/shows/demo/shotA/juggle.mov"


def test_plate_of_a_sequence_is_its_pattern_whichever_frame_was_picked() -> None:
    plate = jobspec.plate_for(SHOT_A, "SEQUENCE")
    assert plate == jobspec.Plate("/shows/demo/shotA/juggle.####.png", "sequence", 4)
    assert jobspec.plate_for("/shows/demo/shotA/../shotA/juggle.1002.png", "SEQUENCE") == plate
    assert jobspec.plate_for("/p/clip.000007.exr", "SEQUENCE").padding == 6
    assert jobspec.plate_for(MOVIE_A, "MOVIE") == jobspec.Plate(MOVIE_A, "movie", 4)


def test_plate_for_a_still_names_the_image_and_its_source() -> None:
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.plate_for("/p/still.png", "FILE", "still.png")
    assert str(info.value) == (
        "image 'still.png' is not a sequence or movie (its Source is File): "
        "set the Image node's Source to Image Sequence or Movie"
    )


def test_same_named_plates_get_their_own_folders() -> None:
    """Issue 11.17: shotA and shotB's juggle.####.png, and a movie of the same stem, never share a folder."""
    patterns = {path: jobspec.plate_for(path, kind).output_pattern("/shows/demo/rvm")
                for path, kind in ((SHOT_A, "SEQUENCE"), (SHOT_B, "SEQUENCE"), (MOVIE_A, "MOVIE"))}  # fmt: skip
    # The keys are pinned: a key that changed between add-on versions would orphan every matte folder.
    assert patterns == {
        SHOT_A: "/shows/demo/rvm/juggle-0ae09daf/juggle_rvm.####.exr",
        SHOT_B: "/shows/demo/rvm/juggle-bf87b8a4/juggle_rvm.####.exr",
        MOVIE_A: "/shows/demo/rvm/juggle-f8e49716/juggle_rvm.####.exr",
    }
    # The panel shows the folder as the setting spells it.
    assert jobspec.plate_for(SHOT_A, "SEQUENCE").folder("//rvm/") == "//rvm/juggle-0ae09daf"
    with pytest.raises(jobspec.JobSpecError, match="no output folder set"):
        jobspec.plate_for(SHOT_A, "SEQUENCE").folder("")


def test_a_plates_own_folder_may_be_overwritten(tmp_path: Path) -> None:
    plate = jobspec.plate_for(SHOT_A, "SEQUENCE")
    folder = tmp_path / "juggle-0ae09daf"
    jobspec.check_output_owner(str(folder), plate)  # not there yet
    folder.mkdir()
    jobspec.check_output_owner(str(folder), plate)  # empty
    jobspec.write_output_owner(str(folder), plate)
    (folder / "juggle_rvm.1001.exr").write_bytes(b"matte")
    jobspec.check_output_owner(str(folder), plate)
    jobspec.check_output_owner(str(folder), jobspec.plate_for("/shows/demo/shotA/juggle.1005.png", "SEQUENCE"))
    assert json.loads((folder / jobspec.OWNER_FILE).read_text()) == {
        "plate": "/shows/demo/shotA/juggle.####.png",
        "kind": "sequence",
    }
    assert sorted(p.name for p in folder.iterdir()) == ["juggle_rvm.1001.exr", "rvm_plate.json"]


NEVER = "and mattes of other plates are never overwritten: choose another Output Folder, or delete that folder"


@pytest.mark.parametrize(
    ("other", "described"),
    [((SHOT_B, "SEQUENCE"), "/shows/demo/shotB/juggle.####.png, a sequence"),
     ((SHOT_A.replace(".1001.png", ".mov"), "MOVIE"), "/shows/demo/shotA/juggle.mov, a movie")],
)  # fmt: skip
def test_another_plates_folder_is_refused(tmp_path: Path, other: tuple[str, str], described: str) -> None:
    folder = tmp_path / "juggle-0ae09daf"
    jobspec.write_output_owner(str(folder), jobspec.plate_for(*other))
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.check_output_owner(str(folder), jobspec.plate_for(SHOT_A, "SEQUENCE"))
    assert str(info.value) == f"the output folder {folder} holds the matte of another plate ({described}), {NEVER}"


def test_a_folder_of_unknown_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".DS_Store").write_bytes(b"")  # hidden files are nobody's matte
    jobspec.check_output_owner(str(tmp_path), jobspec.plate_for(SHOT_A, "SEQUENCE"))
    (tmp_path / "juggle_rvm.1001.exr").write_bytes(b"someone's matte")
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.check_output_owner(str(tmp_path), jobspec.plate_for(SHOT_A, "SEQUENCE"))
    assert str(info.value) == (
        f"the output folder {tmp_path} holds files but no rvm_plate.json saying which plate they belong to, {NEVER}"
    )


@pytest.mark.parametrize("record", ["{not json", '{"plate": "/p/a.####.png"}', "[1, 2]"])
def test_an_unreadable_owner_record_is_refused_naming_it(tmp_path: Path, record: str) -> None:
    (tmp_path / jobspec.OWNER_FILE).write_text(record)
    with pytest.raises(jobspec.JobSpecError, match=rf"^cannot tell which plate owns {tmp_path}: "
                       rf"{tmp_path}/rvm_plate\.json is unreadable \("):  # fmt: skip
        jobspec.check_output_owner(str(tmp_path), jobspec.plate_for(SHOT_A, "SEQUENCE"))


def test_frames_on_disk_reads_only_the_sequences_own_numbers(tmp_path: Path) -> None:
    for name in ("plate.1001.png", "plate.1002.png", "plate.1004.png", "plate_v2.1003.png", "plate..png",
                 "plate.10a5.png", "plate.1006.exr"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    assert jobspec.frames_on_disk(str(tmp_path / "plate.####.png")) == [1001, 1002, 1004]
    with pytest.raises(jobspec.JobSpecError, match=r"^no frames of .*/clip\.####\.png on disk$"):
        jobspec.frames_on_disk(str(tmp_path / "clip.####.png"))


# ------------------------------------------------------------------------------------------ frames


def test_file_frames_follow_the_image_node_offset() -> None:
    # A sequence numbered from 1001 opened in a node: offset 1000, scene frames 1-3 show 1001-1003.
    assert jobspec.file_frames(1, 3, start=1, offset=1000, duration=100) == [1001, 1002, 1003]
    # The node starts at scene frame 10: scene 12-14 show the plate's 3rd-5th frames.
    assert jobspec.file_frames(12, 14, start=10, offset=1000, duration=100) == [1003, 1004, 1005]


def test_file_frames_hold_first_and_last_like_blender() -> None:
    # Scene frames before the node's start hold its first frame, after its end its last.
    assert jobspec.file_frames(1, 20, start=5, offset=0, duration=4) == [1, 2, 3, 4]
    assert jobspec.file_frames(50, 60, start=1, offset=0, duration=4) == [4]


def test_file_frames_cyclic_wraps() -> None:
    assert jobspec.file_frames(4, 6, start=1, offset=100, duration=4, cyclic=True) == [101, 102, 104]


def test_file_frames_refuse_empty_range() -> None:
    with pytest.raises(jobspec.JobSpecError, match="empty"):
        jobspec.file_frames(10, 5, start=1, offset=0, duration=4)
    with pytest.raises(jobspec.JobSpecError, match="no frames"):
        jobspec.file_frames(1, 5, start=1, offset=0, duration=0)


def test_wrong_offset_names_the_nodes_range_and_the_offset_to_set() -> None:
    """Issue 11.19: not "missing frames 1-12 (of 1-12)", but what the node asks for and how to fix it."""
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.check_frames_on_disk(range(1, 13), range(1001, 1013), node_name="Plate", start=1, offset=0,
                                     duration=12)  # fmt: skip
    assert str(info.value) == (
        "Image node 'Plate' asks for frames 1-12 (frame_start 1, offset 0, duration 12) but the sequence on disk "
        "has frames 1001-1012: set the node's offset to 1000"
    )
    # Off by one the other way (offset 1001 for a sequence from 1001).
    with pytest.raises(jobspec.JobSpecError, match=r"offset 1001, .* set the node's offset to 1000$"):
        jobspec.check_frames_on_disk(range(1002, 1014), range(1001, 1013), node_name="Plate", start=1, offset=1001,
                                     duration=12)  # fmt: skip


def test_too_long_a_node_duration_is_named() -> None:
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.check_frames_on_disk(range(1001, 1013), range(1001, 1011), node_name="Plate", start=1, offset=1000,
                                     duration=12)  # fmt: skip
    assert str(info.value) == (
        "Image node 'Plate' asks for frames 1001-1012 (frame_start 1, offset 1000, duration 12) but the sequence on "
        "disk has frames 1001-1010: the sequence ends at frame 1010: set the node's duration to 10"
    )


def test_frames_missing_inside_the_sequence_are_listed() -> None:
    on_disk = [*range(1001, 1006), 1007, 1009, 1010]
    with pytest.raises(jobspec.JobSpecError, match=r"has frames 1001-1005,1007,1009-1010: frames 1006,1008 are "
                       r"missing$"):  # fmt: skip
        jobspec.check_frames_on_disk(range(1001, 1011), on_disk, node_name="P", start=1, offset=1000, duration=10)
    with pytest.raises(jobspec.JobSpecError, match=r": frame 1006 is missing$"):
        jobspec.check_frames_on_disk(range(1001, 1011), [f for f in range(1001, 1011) if f != 1006], node_name="P",
                                     start=1, offset=1000, duration=10)  # fmt: skip
    gapped = range(1001, 1100, 2)  # every other frame: the message stays one line
    with pytest.raises(jobspec.JobSpecError, match=r"has frames 1001,1003,1005,1007,1009,1011,… \(50 runs\): "):
        jobspec.check_frames_on_disk(range(1001, 1100), gapped, node_name="P", start=1, offset=1000, duration=99)


def test_frames_all_on_disk_pass() -> None:
    jobspec.check_frames_on_disk([1001, 1003], range(1001, 1004), node_name="P", start=1, offset=1000, duration=3)


def test_format_frame_ranges() -> None:
    assert jobspec.format_frame_ranges([1003, 1001, 1002, 1010, 1012, 1011, 1020]) == "1001-1003,1010-1012,1020"
    assert jobspec.format_frame_ranges([7]) == "7"


# ------------------------------------------------------------------------------------------ model


def test_checkpoint_override_then_preference_then_engine_default() -> None:
    env = {"XDG_CACHE_HOME": "/cache"}
    assert jobspec.checkpoint_for("mobilenetv3", "/s/mine.pth", "/p/mnv3.pth", env) == "/s/mine.pth"
    assert jobspec.checkpoint_for("mobilenetv3", "", "/p/mnv3.pth", env) == "/p/mnv3.pth"
    assert jobspec.checkpoint_for("mobilenetv3", "", "", env) is None


def test_resnet50_default_is_the_engines_cached_official_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from rvm_vfx import weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # The add-on's idea of the engine's cache is the engine's own (Blender and the engine share a user).
    assert jobspec.engine_cache_dir(os.environ) == str(weights.cache_dir())
    assert jobspec.checkpoint_for("resnet50", "", "", os.environ) == str(tmp_path / "rvm-vfx" / "rvm_resnet50.pth")
    assert jobspec.OFFICIAL_CHECKPOINTS["mobilenetv3"] == weights.OFFICIAL_FILENAME
    with pytest.raises(jobspec.JobSpecError, match="encoder must be one of"):
        jobspec.checkpoint_for("vit", "", "", os.environ)


# ------------------------------------------------------------------------------------------ the job


def _job(**overrides: object) -> dict:
    args = {
        "input": "/shots/plates/plate.####.png",
        "output": "/shots/rvm/plate/plate_rvm.####.exr",
        "frames": [1001, 1002, 1003, 1005],
        "input_colorspace": "sRGB - Texture",
        **overrides,
    }
    return jobspec.build_job(**args)  # type: ignore[arg-type]


def test_built_job_is_a_valid_engine_job() -> None:
    data = _job(checkpoint="/models/rvm_mobilenetv3.pth", downsample=0.4, device="cuda", precision="fp16",
                preroll=8, name="shot.blend: plate", metadata={"rvm:host": "Blender 5.0.1"})  # fmt: skip
    job = Job.from_dict(data)
    assert job.frames == "1001-1003,1005"
    assert job.downsample == 0.4 and job.device == "cuda" and job.precision == "fp16" and job.preroll == 8
    assert job.output_colorspace == "lin_rec709"
    assert job.output_mode == "premultiplied"
    assert job.overwrite is True
    assert job.metadata == {"rvm:host": "Blender 5.0.1"}
    assert Job.from_dict(job.to_dict()) == job  # what the engine reads back is what the add-on meant


def test_default_job_leaves_engine_defaults() -> None:
    job = Job.from_dict(_job(output_colorspace=None))
    assert job.checkpoint is None and job.downsample == "auto" and job.device == "auto"
    assert job.output_colorspace is None  # studio config: the engine's scene_linear role


def test_every_job_key_is_an_engine_field() -> None:
    from dataclasses import fields

    assert set(_job()) <= {f.name for f in fields(Job)}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device": "tpu"}, "device must be one of"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"downsample": 1.5}, r"downsample must be in \(0, 1\]"),
        ({"downsample": 0.0}, r"downsample must be in \(0, 1\]"),
        ({"preroll": -1}, "pre-roll must be 0 or more"),
        ({"input": ""}, "no plate"),
        ({"frames": []}, "no frames"),
    ],
)
def test_bad_settings_are_refused_before_the_engine_starts(overrides: dict, message: str) -> None:
    with pytest.raises(jobspec.JobSpecError, match=message):
        _job(**overrides)
