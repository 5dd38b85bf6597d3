"""The Blender add-on's host-free job building, checked against the engine's own Job and colour config.

``plugins/blender/jobspec.py`` must never import bpy or rvm_vfx; these tests load it by path (not as a
package, whose ``__init__`` needs bpy) and hold its output to ``rvm_vfx.job.Job`` and the engine's OCIO
config, so the add-on and the engine cannot drift apart.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
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


def test_output_pattern_one_folder_per_plate() -> None:
    assert jobspec.output_pattern("/shots/rvm", "plate", 4) == "/shots/rvm/plate/plate_rvm.####.exr"
    assert jobspec.output_pattern("/shots/rvm", "clip", 6).endswith("clip_rvm.######.exr")


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
