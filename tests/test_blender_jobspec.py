"""The Blender add-on's host-free job building, checked against the engine's own Job and colour config.

``plugins/blender/jobspec.py`` must never import bpy or rvm_vfx: it builds the Job with the contract
vendored into the add-on (``vendor.rvm_spec``). These tests import the add-on as a package, the way Blender does
(its ``__init__`` imports the bpy modules only in ``register()``), and hold what it builds to the
engine's ``rvm_vfx.job.Job``, its messages and its OCIO config, so the two sides cannot drift apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rvm_vfx.color import ColorPipeline
from rvm_vfx.errors import InputError
from rvm_vfx.job import Job
from rvm_vfx.sequence import ImageSequence
from rvm_vfx.spec import SCHEMA_VERSION, format_frames, parse_frames

from .blender_driver import addon_package
from .blender_driver.addon_package import PACKAGE, addon_module
from .conftest import ROOT

PLUGIN = ROOT / "plugins" / "blender"

jobspec = addon_module("jobspec")
addon_spec = addon_module("vendor.rvm_spec")


def test_host_free_modules_import_neither_bpy_nor_the_engine() -> None:
    """What they load in an isolated Python without site-packages: the add-on and the standard library alone."""
    script = Path(addon_package.__file__)
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "jobspec", "engine"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert PACKAGE in loaded
    assert not loaded & {"bpy", "rvm_vfx", "torch", "numpy", "OpenImageIO", "PyOpenColorIO"}, loaded


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
    ("path", "pattern"),
    [
        ("/p/plate.1001.png", "/p/plate.####.png"),
        ("/p/shot_v2.0007.exr", "/p/shot_v2.####.exr"),
        ("/p/render0042.tif", "/p/render####.tif"),
        ("/p/a12_b034_c.dpx", "/p/a12_b###_c.dpx"),
        ("/p/clip.000007.exr", "/p/clip.######.exr"),
    ],
)
def test_sequence_pattern_replaces_blenders_frame_number(path: str, pattern: str) -> None:
    sequence = jobspec.sequence_pattern(path)
    assert sequence.hashes() == pattern
    assert sequence.padding == pattern.count("#")


def test_sequence_pattern_needs_a_frame_number() -> None:
    with pytest.raises(jobspec.JobSpecError, match="no frame number"):
        jobspec.sequence_pattern("/p/still.png")


@pytest.mark.parametrize(
    ("frame_path", "pattern"),
    [("/p/my plate#.1001.png", "/p/my plate#.####.png"), ("/p/take@2.0001.exr", "/p/take@2.####.exr")],
)
def test_a_second_frame_token_in_the_name_is_refused_as_the_engine_refuses_it(frame_path: str, pattern: str) -> None:
    """Blender numbers ``my plate#.1001.png`` by its digits; the engine would read ``#`` as a frame number too."""
    with pytest.raises(InputError) as engine:
        ImageSequence(pattern)
    with pytest.raises(jobspec.JobSpecError) as addon:
        jobspec.plate_for(frame_path, "SEQUENCE")
    assert str(addon.value) == str(engine.value)
    assert str(addon.value).startswith(f"{pattern}: more than one frame number token (")


@pytest.mark.parametrize(
    ("path", "kind", "stem"),
    [
        ("/p/plate.1001.png", "SEQUENCE", "plate"),
        ("/p/shot_v2.0007.exr", "SEQUENCE", "shot_v2"),
        ("/p/render0042.tif", "SEQUENCE", "render"),
        ("/p/my plate.1001.png", "SEQUENCE", "my_plate"),
        ("/p/0001.png", "SEQUENCE", "plate"),
        ("/p/a12_b034_c.dpx", "SEQUENCE", "a12_b__c"),  # the number is not at the end: kept (as #, then _)
        ("/p/shot010.mov", "MOVIE", "shot010"),
    ],
)
def test_plate_stem(path: str, kind: str, stem: str) -> None:
    """The name of a plate's outputs; pinned, since it names the matte folders of earlier add-on versions."""
    assert jobspec.plate_for(path, kind).stem == stem


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
                 "plate.10a5.png", "plate.1006.exr", "plate.01007.png", "plate.10008.png"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    # plate.01007.png is not frame 1007 of a 4-digit sequence (neither Blender nor the engine reads it as one);
    # plate.10008.png is frame 10008.
    assert jobspec.frames_on_disk(str(tmp_path / "plate.####.png")) == [1001, 1002, 1004, 10008]
    with pytest.raises(jobspec.JobSpecError, match=r"^no frames of .*/clip\.####\.png on disk$"):
        jobspec.frames_on_disk(str(tmp_path / "clip.####.png"))


def test_frames_on_disk_are_the_frames_the_engine_finds(tmp_path: Path) -> None:
    for name in ("plate.0998.png", "plate.0999.png", "plate.1000.png", "plate.01000.png", "plate.12345.png"):
        (tmp_path / name).write_bytes(b"")
    pattern = str(tmp_path / "plate.####.png")
    assert jobspec.frames_on_disk(pattern) == ImageSequence(pattern).frames() == [998, 999, 1000, 12345]


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
    with pytest.raises(jobspec.JobSpecError, match=r"has frames 1001-1005, 1007, 1009-1010: frames 1006, 1008 are "
                       r"missing$"):  # fmt: skip
        jobspec.check_frames_on_disk(range(1001, 1011), on_disk, node_name="P", start=1, offset=1000, duration=10)
    with pytest.raises(jobspec.JobSpecError, match=r": frame 1006 is missing$"):
        jobspec.check_frames_on_disk(range(1001, 1011), [f for f in range(1001, 1011) if f != 1006], node_name="P",
                                     start=1, offset=1000, duration=10)  # fmt: skip
    gapped = range(1001, 1100, 2)  # every other frame: one group, as the engine writes it
    with pytest.raises(jobspec.JobSpecError, match=r"has frames 1001-1099x2: frames 1002-1098x2 are missing$"):
        jobspec.check_frames_on_disk(range(1001, 1100), gapped, node_name="P", start=1, offset=1000, duration=99)


def test_a_badly_gapped_sequence_is_cut_short_as_the_engine_cuts_it() -> None:
    on_disk = [1000 + n * n for n in range(1, 40)]  # no two gaps alike: 39 groups
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.check_frames_on_disk(range(1001, 1011), on_disk, node_name="P", start=1, offset=1000, duration=10)
    assert f"the sequence on disk has frames {format_frames(on_disk)}: " in str(info.value)
    assert format_frames(on_disk).endswith(", ... (19 more)")


def test_frames_all_on_disk_pass() -> None:
    jobspec.check_frames_on_disk([1001, 1003], range(1001, 1004), node_name="P", start=1, offset=1000, duration=3)


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
    official = tmp_path / "rvm-vfx" / "rvm_resnet50.pth"
    assert jobspec.checkpoint_for("resnet50", "", "", os.environ) == str(official)
    assert official.parent == weights.cache_dir()
    with pytest.raises(jobspec.JobSpecError) as info:
        jobspec.checkpoint_for("vit", "", "", os.environ)
    assert str(info.value) == "encoder must be one of mobilenetv3, resnet50, not 'vit'"


# ------------------------------------------------------------------------------------------ the job

JOB_ARGS = {
    "input": "/shots/plates/plate.####.png",
    "output": "/shots/rvm/plate/plate_rvm.####.exr",
    "frames": [1001, 1002, 1003, 1005],
    "input_colorspace": "sRGB - Texture",
}


def _job(**overrides: object) -> object:
    return jobspec.build_job(**{**JOB_ARGS, **overrides})  # type: ignore[arg-type]


def test_built_job_is_the_contracts_job_and_the_engine_reads_it_back_the_same() -> None:
    built = _job(checkpoint="/models/rvm_mobilenetv3.pth", downsample=0.4, device="cuda", precision="fp16",
                 preroll=8, name="shot.blend: plate", metadata={"rvm:host": "Blender 5.0.1"})  # fmt: skip
    assert isinstance(built, addon_spec.Job)
    data = built.to_dict()
    job = Job.from_dict(json.loads(json.dumps(data)))  # as the engine reads the job file
    assert job.to_dict() == data  # every field, the engine's defaults and the schema version included
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert job.frames == "1001-1003, 1005" and parse_frames(job.frames) == [1001, 1002, 1003, 1005]
    assert job.downsample == 0.4 and job.device == "cuda" and job.precision == "fp16" and job.preroll == 8
    assert job.output_colorspace == "lin_rec709"
    assert job.output_mode == "premultiplied"
    assert job.overwrite is True
    assert job.metadata == {"rvm:host": "Blender 5.0.1"}


def test_default_job_leaves_engine_defaults() -> None:
    job = Job.from_dict(_job(output_colorspace=None).to_dict())
    assert job.checkpoint is None and job.downsample == "auto" and job.device == "auto"
    assert job.output_colorspace is None  # studio config: the engine's scene_linear role
    assert job == Job(input=JOB_ARGS["input"], output=JOB_ARGS["output"], frames="1001-1003, 1005",
                      input_colorspace="sRGB - Texture", overwrite=True)  # fmt: skip


def test_every_frame_of_a_long_gapped_range_is_in_the_job() -> None:
    """A message may cut a frame list short (``... (N more)``); a job never does."""
    frames = [1000 + n * n for n in range(1, 40)]
    assert parse_frames(_job(frames=frames).frames) == frames


@pytest.mark.parametrize(
    "overrides",
    [
        {"device": "tpu"},
        {"precision": "int8"},
        {"downsample": 1.5},
        {"downsample": 0.0},
        {"preroll": -1},
        {"input": ""},
        {"output": "/shots/rvm/plate/plate_rvm.####.png"},
        {"frames": []},
    ],
    ids=lambda overrides: "-".join(f"{k}={v}" for k, v in overrides.items()),
)
def test_bad_settings_are_refused_in_blender_with_the_engines_message(overrides: dict) -> None:
    engine_args = {**JOB_ARGS, **overrides, "frames": format_frames(overrides.get("frames", JOB_ARGS["frames"]),
                                                                    limit=None)}  # fmt: skip
    with pytest.raises(InputError) as engine:
        Job(**engine_args)
    with pytest.raises(jobspec.JobSpecError) as addon:
        _job(**overrides)
    assert str(addon.value) == str(engine.value)
    assert str(addon.value).startswith("job field '")
