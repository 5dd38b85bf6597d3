"""The Nuke plugin's host-free decisions: knobs to Job, paths, frames, colour spaces, farm tickets.

The plugin builds its Job with its vendored copy of the contract (``rvm_nuke.vendor.rvm_spec``); here the Job dicts
are read back by the engine's own ``rvm_vfx.job.Job`` (the engine venv), and a bad knob must fail with
the very message the engine gives, so the plugin, which must not import the engine, cannot drift from it.
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import rvm_vfx.job
from rvm_vfx.job import Job
from rvm_vfx.spec import SCHEMA_VERSION, InputError, parse_frames

from .nuke_stub import PLUGIN_DIR, plugin_module

jobs = plugin_module("rvm_nuke.jobs")
contract = plugin_module("rvm_nuke.vendor.rvm_spec")

BUILTIN = "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6"


@pytest.fixture(scope="module")
def builtin_names():
    names = jobs.load_colour_names(BUILTIN)
    assert names is not None
    return names


def read_plate(path="/plates/sh010/plate.####.exr", first=1001, last=1010, colorspace="ACEScg"):
    return jobs.Source(input=path, first=first, last=last, colorspace=colorspace)


SCRIPT = "/shows/demo/sh010/comp/sh010_comp_v003.nk"


# ------------------------------------------------------------------------------------- colour spaces


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("default (ACEScg)", "ACEScg"),
        ("default (sRGB Encoded Rec.709 (sRGB))", "sRGB Encoded Rec.709 (sRGB)"),
        ("Default(linear)", "linear"),
        ("scene_linear", "scene_linear"),
        ("  sRGB ", "sRGB"),
        ("default", None),
        ("default ()", None),
        ("", None),
        (None, None),
    ],
)
def test_strip_default_wrapper(value, expected):
    assert jobs.strip_default_wrapper(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("default (ACEScg)", "ACEScg"),
        ("acescg", "ACEScg"),
        ("lin_ap1", "ACEScg"),
        ("scene_linear", "ACEScg"),  # a role becomes the space it names
        ("default (scene_linear)", "ACEScg"),
        ("srgb_tx", "sRGB Encoded Rec.709 (sRGB)"),
        ("Utility/Linear Rec.709 (sRGB)", "Linear Rec.709 (sRGB)"),  # family menu path
        ("Not A Space", "Not A Space"),  # left for the engine to report, with suggestions
        ("default", None),
    ],
)
def test_resolve_colorspace_in_the_scripts_config(builtin_names, value, expected):
    assert jobs.resolve_colorspace(value, builtin_names) == expected


def test_resolve_colorspace_without_a_config():
    assert jobs.resolve_colorspace("default (ACEScg)", None) == "ACEScg"
    assert jobs.resolve_colorspace("sRGB", None, "OCIO") == "sRGB"
    # Nuke's own colour management, its config not found: its names mapped to the engine's built-in config.
    assert jobs.resolve_colorspace("default (linear)", None, "Nuke") == "lin_rec709"
    assert jobs.resolve_colorspace("sRGB", None, "Nuke") == "srgb_tx"
    assert jobs.resolve_colorspace("Cineon", None, "Nuke") == "Cineon"


def test_scene_linear_name(builtin_names):
    assert jobs.scene_linear_name(builtin_names) == "ACEScg"
    assert jobs.scene_linear_name(None, "OCIO") == "scene_linear"
    assert jobs.scene_linear_name(None, "Nuke") == "linear"


def test_colour_names_from_a_config_file(tmp_path):
    import PyOpenColorIO as ocio

    path = tmp_path / "studio.ocio"
    path.write_text(ocio.Config.CreateFromFile(BUILTIN).serialize())
    names = jobs.load_colour_names(str(path))
    assert names.lookup("ACES - ACEScg") == "ACEScg"
    assert names.scene_linear == "ACEScg"
    assert jobs.load_colour_names(str(tmp_path / "missing.ocio")) is None
    assert jobs.load_colour_names(None) is None


def test_resolve_ocio_config(tmp_path):
    custom = tmp_path / "studio" / "config.ocio"
    custom.parent.mkdir()
    custom.write_text("ocio_profile_version: 2\n")
    active = tmp_path / "Nuke15.0v1" / "plugins" / "OCIOConfigs" / "configs" / "aces_1.2" / "config.ocio"
    active.parent.mkdir(parents=True)
    active.write_text("ocio_profile_version: 1\n")
    env = {"OCIO": "/env/config.ocio"}

    def resolve(management="OCIO", chosen="", path="", in_use="", environ=env):
        root = {"colorManagement": management, "OCIO_config": chosen, "customOCIOConfigPath": path,
                "OCIOConfigPath": in_use}  # fmt: skip
        return jobs.resolve_ocio_config(root, environ)

    assert resolve(chosen="custom", path=str(custom), in_use=str(active)) == str(custom)
    assert resolve(chosen="ocio://studio-config-latest") == "ocio://studio-config-latest"
    # Any other config (one bundled with Nuke, wherever Nuke is installed): the path of the one in use.
    assert resolve(chosen="aces_1.2", in_use=str(active)) == str(active)
    assert resolve(management="Nuke", chosen="aces_1.2", path=str(custom), in_use=str(active)) == str(active)
    assert resolve(chosen="aces_1.2", in_use="C:\\Program Files\\x.ocio") == "/env/config.ocio"  # not a file
    # Nothing usable in the script: $OCIO (which Nuke obeys too), else the engine's own default.
    assert resolve(chosen="aces_1.2", path="/gone/config.ocio") == "/env/config.ocio"
    assert resolve(chosen="custom", path="", environ={}) is None
    assert resolve(management="Nuke", environ={}) is None


# ---------------------------------------------------------------------------------------------- paths


def test_file_knob_pattern_after_nukes_evaluation():
    """Nuke evaluates a file name for one frame: the frame token comes back, the rest stays evaluated."""
    raw = "[file dirname [value root.name]]/m.####.exr"
    assert jobs.file_knob_pattern(raw, "/shots/comp/m.1002.exr", 1002) == "/shots/comp/m.####.exr"
    raw = "/shots/1002/[value take]/m.%04d.exr"
    assert jobs.file_knob_pattern(raw, "/shots/1002/v1/m.1002.exr", 1002) == "/shots/1002/v1/m.%04d.exr"
    assert jobs.file_knob_pattern("[value x]/m.#.exr", "/s/m.7.exr", 7) == "/s/m.#.exr"
    assert jobs.file_knob_pattern("[value x]/m.####.exr", "/s/m.-0007.exr", -7) == "/s/m.####.exr"
    # An evaluation that kept its token (Nuke's %04d notation), or a path with no token at all: as evaluated.
    assert jobs.file_knob_pattern("[value x]/m.####.exr", "/s/m.%04d.exr", 3) == "/s/m.%04d.exr"
    assert jobs.file_knob_pattern("[getenv MODELS]/a.pth", "/models/a.pth", 3) == "/models/a.pth"
    with pytest.raises(jobs.PluginError, match=r"evaluates to '/s/m\.1002\.exr' at frame 1003"):
        jobs.file_knob_pattern("[value x]/m.####.exr", "/s/m.1002.exr", 1003)


def test_file_knob_value_is_evaluated_at_two_frames():
    def never(frame):
        raise AssertionError("a path without TCL is not evaluated")

    # Nothing for TCL to do: the text as typed (Nuke would rewrite #### as %04d).
    assert jobs.file_knob_value("/shots/sh010/m.####.exr", never, 1001) == "/shots/sh010/m.####.exr"
    assert jobs.file_knob_value("", never, 1001) == ""
    seen = []

    def evaluate(frame):
        seen.append(frame)
        return f"/shots/comp/m.{frame:04d}.exr"

    assert jobs.file_knob_value("[value x]/m.####.exr", evaluate, 1001) == "/shots/comp/m.####.exr"
    assert seen == [1001, 1002]
    with pytest.raises(jobs.PluginError) as error:
        jobs.file_knob_value("[value x]/[frame]/m.####.exr", lambda f: f"/s/{f}/m.{f:04d}.exr", 1001)
    assert str(error.value) == (
        "'[value x]/[frame]/m.####.exr' changes from frame to frame other than by its frame number "
        "('/s/1001/m.####.exr' at frame 1001, '/s/1002/m.####.exr' at frame 1002); "
        "keep frame-dependent expressions out of the path, and use #### for the frame number"
    )


def test_default_output_is_beside_the_script():
    assert jobs.output_pattern("", SCRIPT, "RVMMatte1") == "/shows/demo/sh010/comp/rvm/RVMMatte1/RVMMatte1.####.exr"


def test_output_knob_relative_env_and_home(tmp_path):
    assert jobs.output_pattern("mattes/m.%04d.exr", SCRIPT, "n") == "/shows/demo/sh010/comp/mattes/m.%04d.exr"
    env = {"SHOT_ROOT": "/shows/demo/sh010"}
    assert jobs.output_pattern("$SHOT_ROOT/matte/m.$F4.exr", SCRIPT, "n", env) == "/shows/demo/sh010/matte/m.$F4.exr"
    assert jobs.output_pattern("${SHOT_ROOT}/m.####.exr", "", "n", env) == "/shows/demo/sh010/m.####.exr"
    assert jobs.output_pattern("~/m.####.exr", "", "n").startswith(jobs.slash(os.path.expanduser("~")))


@pytest.mark.parametrize(
    ("knob", "script", "message"),
    [
        ("", "", "Save the script first"),
        ("mattes/m.####.exr", "", "relative path"),
        ("/out/matte.exr", SCRIPT, "frame number"),
    ],
)
def test_output_errors_say_what_to_do(knob, script, message):
    with pytest.raises(jobs.PluginError, match=message):
        jobs.output_pattern(knob, script, "RVMMatte1")


def test_an_output_that_is_not_exr_is_refused_with_the_engines_message():
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"output": "/out/matte.####.png"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == engine_message(output="/out/matte.####.png")
    assert "outputs are written as OpenEXR, so the name must end in .exr" in str(error.value)


def test_node_names_become_safe_file_names():
    assert jobs.safe_name("RVM Matte/1:x") == "RVM_Matte_1_x"
    assert jobs.safe_name("..") == "rvm"
    out = jobs.output_pattern("", SCRIPT, "bad name")
    assert out.endswith("/rvm/bad_name/bad_name.####.exr")
    assert jobs.precomp_pattern(out, "bad name").endswith("/rvm/bad_name/precomp/bad_name.precomp.####.exr")
    assert jobs.job_file_path(out, "bad name").endswith("/rvm/bad_name/bad_name.rvm-job.json")


def test_existing_outputs(tmp_path):
    pattern = str(tmp_path / "m.####.exr")
    (tmp_path / "m.1002.exr").write_bytes(b"x")
    assert jobs.existing_outputs(pattern, [1001, 1002, 1003]) == [1002]
    (tmp_path / "m.-0007.exr").write_bytes(b"x")
    assert jobs.existing_outputs(str(tmp_path / "m.%04d.exr"), [-7, 1002, 1003]) == [-7, 1002]


# --------------------------------------------------------------------------------------------- frames


def engine_message(**fields) -> str:
    """What the engine's own Job says about these field values (the plugin must say the same)."""
    with pytest.raises(InputError) as error:
        Job(**{"input": "/plates/sh010/plate.####.exr", "output": "/o/m.####.exr", **fields})
    return str(error.value)


@pytest.mark.parametrize(
    ("knob", "frames"),
    [("1001-1003", "1001-1003"), ("1001", "1001"), ("1-9x4", "1-9x4"), ("1001-1002, 1005", "1001-1002,1005"),
     (" 1001-1010 1020 ", "1001-1010,1020"), ("-2--1", "-2--1"), ("", "1001-1010")],
)  # fmt: skip
def test_the_frame_range_knob_reaches_the_job(knob, frames):
    job = jobs.build_job({"frame_range": knob}, read_plate(), node_name="N", script_path=SCRIPT)
    assert job["frames"] == frames
    assert parse_frames(job["frames"]) == parse_frames(knob or "1001-1010")


# 1-1000001 is one frame over the engine's limit: the plugin's own copy of the parser used to let it through.
@pytest.mark.parametrize("text", ["1001-", "a-b", "1010-1001", "1-10x0", "1-1000001", "1-99999999", "1-5,,x"])
def test_bad_frame_ranges_are_refused_with_the_engines_message(text):
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"frame_range": text}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == engine_message(frames=",".join(contract.frames.range_parts(text)))
    assert str(error.value).startswith("job field 'frames': bad frame range")


def test_the_frame_limit_is_the_engines():
    assert engine_message(frames="1-1000001") == (
        "job field 'frames': bad frame range '1-1000001': more than 1000000 frames"
    )
    job = jobs.build_job({"frame_range": "1-1000000"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert Job.from_dict(job).frames == "1-1000000"


def test_an_empty_input_range_is_refused():
    assert jobs.frames_text("", 1001, 1100) == "1001-1100"
    with pytest.raises(jobs.PluginError, match=r"the input's frame range 10-9 is empty"):
        jobs.frames_text("", 10, 9)


# -------------------------------------------------------------------------------------------- sources


def test_plain_read_problem():
    read = {"file": "/p/plate.####.exr", "disable": False, "frame": ""}
    assert jobs.plain_read_problem("Read", read) is None
    assert jobs.plain_read_problem("Read", {**read, "file": "/p/plate.mov"}) is None
    assert "Grade" in jobs.plain_read_problem("Grade", read)
    assert "disabled" in jobs.plain_read_problem("Read", {**read, "disable": True})
    assert "no file" in jobs.plain_read_problem("Read", {**read, "file": " "})
    assert "frame" in jobs.plain_read_problem("Read", {**read, "frame": "frame+10"})
    assert "single image" in jobs.plain_read_problem("Read", {**read, "file": "/p/still.exr"})


class _N:
    def __init__(self, klass, up=None, disabled=False):
        self.klass, self.up, self.disabled = klass, up, disabled


def test_find_source_walks_through_dots_and_disabled_nodes():
    read = _N("Read")
    chain = _N("Dot", _N("Grade", _N("Dot", read), disabled=True))
    found = jobs.find_source(chain, lambda n: n.klass, lambda n: n.up, lambda n: n.disabled)
    assert found is read
    grade = _N("Grade", read)
    assert jobs.find_source(_N("Dot", grade), lambda n: n.klass, lambda n: n.up, lambda n: n.disabled) is grade
    # A disabled node with nothing above it is what the input is.
    lone = _N("Blur", None, disabled=True)
    assert jobs.find_source(lone, lambda n: n.klass, lambda n: n.up, lambda n: n.disabled) is lone
    # A loop (an expression-linked mess) does not hang.
    a = _N("Dot")
    a.up = _N("Dot", a)
    assert jobs.find_source(a, lambda n: n.klass, lambda n: n.up, lambda n: n.disabled) is not None


def test_read_source(builtin_names):
    knobs = {"file": "plates/plate.####.exr", "first": 1001, "last": 1010, "origfirst": 990,
             "colorspace": "default (scene_linear)"}  # fmt: skip
    src = jobs.read_source(knobs, builtin_names, SCRIPT)
    assert src == jobs.Source("/shows/demo/sh010/comp/plates/plate.####.exr", 1001, 1010, "ACEScg", 1, False)
    # The node's own colour-space knob wins over the Read's.
    assert jobs.read_source(knobs, builtin_names, SCRIPT, colorspace_override="srgb_tx").colorspace == (
        "sRGB Encoded Rec.709 (sRGB)"
    )
    movie = jobs.read_source({**knobs, "file": "/p/plate.mov", "first": 1, "last": 48, "origfirst": 1}, None, "")
    assert (movie.input, movie.start_frame, movie.colorspace) == ("/p/plate.mov", 1, "scene_linear")


def test_precomp_is_scene_linear_half_float_exr(builtin_names):
    src = jobs.precomp_source("/o/rvm/n/n.####.exr", "n", 1001, 1010, builtin_names)
    assert src.precomp and src.input == "/o/rvm/n/precomp/n.precomp.####.exr" and src.colorspace == "ACEScg"
    knobs = dict(jobs.precomp_write_knobs(src))
    assert knobs["file"] == src.input and knobs["file_type"] == "exr" and knobs["datatype"] == "16 bit half"
    assert knobs["colorspace"] == "ACEScg" and knobs["channels"] == "rgb"
    assert list(dict(jobs.precomp_write_knobs(src)))[:2] == ["file", "file_type"]  # exr knobs exist after type


# ----------------------------------------------------------------------------------------------- jobs


def test_checkpoint_value(tmp_path):
    env = {"XDG_CACHE_HOME": "/cache"}
    assert jobs.checkpoint_value("", "mobilenetv3", SCRIPT, env) is None  # the engine's default
    assert jobs.checkpoint_value("", "resnet50", SCRIPT, env) == "/cache/rvm-vfx/rvm_resnet50.pth"
    assert jobs.checkpoint_value("models/mine.pth", "resnet50", SCRIPT, env) == "/shows/demo/sh010/comp/models/mine.pth"
    # On the farm a checkpoint is a file name inside the worker's models folder.
    assert jobs.checkpoint_value("/models/mine.pth", "mobilenetv3", SCRIPT, env, farm=True) == "mine.pth"
    assert jobs.checkpoint_value("", "resnet50", SCRIPT, env, farm=True) == "rvm_resnet50.pth"
    assert jobs.checkpoint_value("", "mobilenetv3", SCRIPT, env, farm=True) is None


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"downsample_auto": False, "downsample": 0.0}, {"downsample": 0.0}),
     ({"downsample_auto": False, "downsample": 1.5}, {"downsample": 1.5}),
     ({"preroll": -1}, {"preroll": -1}),
     ({"device": "tpu"}, {"device": "tpu"}),
     ({"precision": "fp8"}, {"precision": "fp8"})],
)  # fmt: skip
def test_bad_knobs_are_refused_with_the_engines_message(settings, field):
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job(settings, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == engine_message(**field)
    assert str(error.value).startswith(f"job field '{next(iter(field))}': ")


def test_downsample_knobs():
    job = jobs.build_job({"downsample": 0.3}, read_plate(), node_name="N", script_path=SCRIPT)
    assert job["downsample"] == "auto"
    job = jobs.build_job(
        {"downsample_auto": False, "downsample": 0.375}, read_plate(), node_name="N", script_path=SCRIPT
    )
    assert job["downsample"] == 0.375


def test_settings_are_normalised_and_checked():
    settings = jobs.normalise_settings(
        {"preroll": 8.0, "device": "cuda", "checkpoint": None, "output": " /o.####.exr "}
    )
    assert settings["preroll"] == 8 and isinstance(settings["preroll"], int)
    assert settings["device"] == "cuda" and settings["checkpoint"] == "" and settings["output"] == "/o.####.exr"
    # A knob of the node's own (not a Job field) is checked here.
    with pytest.raises(jobs.PluginError) as error:
        jobs.normalise_settings({"encoder": "vit"})
    assert str(error.value) == "knob 'encoder': expected one of mobilenetv3, resnet50, got 'vit'"


def test_every_device_the_engine_has_can_be_chosen():
    """The plugin's device list was a copy that lacked the engine's mps."""
    device = next(k for k in jobs.KNOBS if k.name == "device")
    assert device.choices == rvm_vfx.job.DEVICES == ("auto", "cpu", "cuda", "mps")
    job = jobs.build_job({"device": "mps"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert Job.from_dict(job).device == "mps"
    precision = next(k for k in jobs.KNOBS if k.name == "precision")
    assert precision.choices == rvm_vfx.job.PRECISIONS and precision.default == "fp32"


def test_knob_table_is_consistent():
    names = [k.name for k in jobs.KNOBS]
    assert len(names) == len(set(names))
    for spec in jobs.KNOBS:
        if spec.kind == "enum":
            assert spec.default in spec.choices
    assert jobs.normalise_settings(jobs.default_settings()) == jobs.default_settings()
    # The labels are what .nk scripts save; the values are the engine's, every one of them.
    assert list(jobs.OUTPUT_MODES) == ["premultiplied RGBA", "alpha only"]
    assert tuple(jobs.OUTPUT_MODES.values()) == rvm_vfx.job.OUTPUT_MODES
    encoder = next(k for k in jobs.KNOBS if k.name == "encoder")
    assert encoder.choices == ("mobilenetv3", "resnet50") and encoder.default == "mobilenetv3"
    assert {"render", "send_to_farm", "reload"} <= set(names)


def test_default_job_is_a_valid_engine_job(builtin_names):
    job = jobs.build_job({}, read_plate(), node_name="RVMMatte1", script_path=SCRIPT, ocio_config="/c/config.ocio")
    engine_job = Job.from_dict(job, source="plugin job")
    # Every field written, with the engine's types: the dict *is* the Job.
    assert engine_job.to_dict() == job
    assert job["input"] == "/plates/sh010/plate.####.exr"
    assert job["output"] == "/shows/demo/sh010/comp/rvm/RVMMatte1/RVMMatte1.####.exr"
    assert job["frames"] == "1001-1010"
    assert job["input_colorspace"] == "ACEScg" and job["ocio_config"] == "/c/config.ocio"
    assert job["downsample"] == "auto" and job["output_mode"] == "premultiplied" and job["checkpoint"] is None
    assert job["metadata"] == {"host": "nuke", "nuke_node": "RVMMatte1", "nuke_script": SCRIPT}
    assert job["overwrite"] is False and job["priority"] == 0


def test_every_knob_reaches_the_job(tmp_path):
    settings = {
        "checkpoint": str(tmp_path / "rvm_resnet50.pth"),
        "encoder": "resnet50",
        "downsample_auto": False,
        "downsample": 0.4,
        "preroll": 12,
        "device": "cuda",
        "precision": "fp16",
        "input_colorspace": "ignored here: the Source carries the resolved space",
        "output": str(tmp_path / "out" / "m.%04d.exr"),
        "frame_range": "1003-1008",
        "output_mode": "alpha only",
        "farm_priority": 75,
    }
    job = jobs.build_job(
        settings, read_plate(), node_name="N", script_path=SCRIPT, farm=True, overwrite=True, name="N_20260101",
        metadata={"nuke_version": "14.0v5"},
    )  # fmt: skip
    engine_job = Job.from_dict(job)
    assert engine_job.to_dict() == job
    assert job["checkpoint"] == "rvm_resnet50.pth"
    assert (job["downsample"], job["preroll"], job["device"], job["precision"]) == (0.4, 12, "cuda", "fp16")
    assert job["output"] == jobs.slash(str(tmp_path / "out" / "m.%04d.exr"))
    assert (job["frames"], job["output_mode"], job["overwrite"]) == ("1003-1008", "alpha", True)
    assert (job["name"], job["priority"], job["metadata"]["nuke_version"]) == ("N_20260101", 75, "14.0v5")


def test_job_file_round_trips_through_the_engine(tmp_path):
    job = jobs.build_job({"output": str(tmp_path / "m.####.exr")}, read_plate(), node_name="N", script_path=SCRIPT)
    path = jobs.write_json_atomic(str(tmp_path / "N.rvm-job.json"), job)
    assert Job.from_json(path).to_dict() == job  # absolute paths: nothing re-based on the job's folder
    assert [p.name for p in tmp_path.iterdir()] == ["N.rvm-job.json"]


def test_bad_knobs_fail_before_any_work():
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"preroll": -1}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == "job field 'preroll': must be >= 0, got -1"
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"frame_range": "soon"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == "job field 'frames': bad frame range 'soon': 'soon' is not N, A-B or A-BxSTEP"


def test_the_job_is_built_by_the_vendored_contract():
    """Inside Nuke the engine cannot be imported: the plugin's Job is its own copy of the engine's."""
    assert jobs.Job is contract.Job and jobs.Job is not Job
    assert Path(contract.__file__).parent == PLUGIN_DIR / "rvm_nuke" / "vendor" / "rvm_spec"
    job = jobs.build_job({}, read_plate(), node_name="N", script_path=SCRIPT)
    assert job["schema_version"] == SCHEMA_VERSION == 2


def test_matte_read_knobs():
    job = jobs.build_job({"frame_range": "1001-1004,1010"}, read_plate(), node_name="N", script_path=SCRIPT)
    knobs = dict(jobs.matte_read_knobs(job, "ACEScg"))
    assert knobs == {
        "file": job["output"], "first": 1001, "last": 1010, "origfirst": 1001, "origlast": 1010,
        "colorspace": "ACEScg", "premultiplied": True, "raw": False, "on_error": "error",
    }  # fmt: skip
    assert [k for k, _ in jobs.matte_read_knobs(job, "ACEScg")][0] == "file"
    assert dict(jobs.matte_read_knobs({**job, "output_colorspace": "lin_rec709"}, "ACEScg"))["colorspace"] == (
        "lin_rec709"
    )


def test_an_alpha_only_matte_is_read_as_data():
    """The engine tags alpha-only EXRs as data (Raw, or the config's data role): Nuke must not convert them
    from the output colour space, or a soft edge of 0.5 would come back as another value."""
    alpha = jobs.build_job({"output_mode": "alpha only"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert dict(jobs.matte_read_knobs(alpha, "ACEScg", farm=True)) == {
        "file": alpha["output"], "first": 1001, "last": 1010, "origfirst": 1001, "origlast": 1010,
        "premultiplied": False, "raw": True, "on_error": "black",
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ farm


def test_reload_read_knobs_stop_showing_black_once_the_farm_is_done():
    job = jobs.build_job({}, read_plate(last=1003), node_name="N", script_path=SCRIPT)
    farm = jobs.matte_read_knobs(job, "ACEScg", farm=True)
    assert dict(jobs.reload_read_knobs(farm, landed=2, total=3))["on_error"] == "black"
    done = jobs.reload_read_knobs(farm, landed=3, total=3)
    assert dict(done)["on_error"] == "error" and [k for k, _ in done] == [k for k, _ in farm]
    local = jobs.matte_read_knobs(job, "ACEScg")
    assert jobs.reload_read_knobs(local, landed=1, total=3) == local  # a local render never turns black


def test_precomp_frames_include_the_pre_roll():
    assert jobs.precomp_frames("1001-1003", preroll=0, first_available=1001) == [1001, 1002, 1003]
    assert jobs.precomp_frames("1005-1006,1009", preroll=3, first_available=1001) == list(range(1002, 1010))
    assert jobs.precomp_frames("1002-1003", preroll=10, first_available=1001) == [1001, 1002, 1003]


def test_knob_scripts_are_guarded_python():
    quiet = jobs.knob_script("knob_changed(nuke.thisNode(), nuke.thisKnob())")
    button = jobs.knob_script("on_render(nuke.thisNode())", missing_message="not here")
    for script in (quiet, button):
        compile(script, "<knob>", "exec")
        assert script.startswith("try:\n    import rvm_nuke.node\nexcept ImportError:\n")
    assert "nuke.message" not in quiet and "nuke.message('not here')" in button
    assert button.endswith("else:\n    rvm_nuke.node.on_render(nuke.thisNode())\n")


def test_job_ids_are_safe_and_unique():
    now = datetime.datetime(2026, 3, 4, 5, 6, 7)
    assert jobs.make_job_id("RVMMatte1", now, "a1b2c3") == "RVMMatte1_20260304-050607_a1b2c3"
    weird = jobs.make_job_id("../../etc/pass wd", now)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", weird) and not weird.startswith(".")
    assert jobs.make_job_id("n", now) != jobs.make_job_id("n", now)


def test_watch_folder(tmp_path):
    assert jobs.watch_folder(str(tmp_path), {}) == str(tmp_path)
    assert jobs.watch_folder("", {jobs.WATCH_FOLDER_ENV: str(tmp_path)}) == str(tmp_path)
    assert jobs.watch_folder("  ", {jobs.WATCH_FOLDER_ENV: str(tmp_path)}) == str(tmp_path)
    with pytest.raises(jobs.PluginError, match=jobs.WATCH_FOLDER_ENV):
        jobs.watch_folder("", {})
    with pytest.raises(jobs.PluginError, match="does not exist"):
        jobs.watch_folder(str(tmp_path / "unmounted"), {})


def test_ticket_is_written_atomically_into_incoming(tmp_path):
    job_id = "RVMMatte1_20260304-050607_a1b2c3"
    job = jobs.build_job({"farm_priority": 10}, read_plate(), node_name="RVMMatte1", script_path=SCRIPT, farm=True,
                         name=job_id)  # fmt: skip
    path = jobs.write_ticket(job, str(tmp_path), job_id)
    assert Path(path) == tmp_path / "incoming" / f"{job_id}.json"
    assert sorted(os.listdir(tmp_path / "incoming")) == [f"{job_id}.json"]  # no temporary left behind
    ticket = json.loads(Path(path).read_text())
    assert ticket == job and Job.from_dict(ticket).priority == 10
    with pytest.raises(jobs.PluginError, match="already exists"):
        jobs.write_ticket(job, str(tmp_path), job_id)


def test_failed_ticket_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        jobs.write_ticket({"input": object()}, str(tmp_path), "x")
    assert os.listdir(tmp_path / "incoming") == []


def test_engine_python_precedence():
    env = {jobs.ENGINE_PYTHON_ENV: "/env/python", "VENVS": "/venvs"}
    assert jobs.engine_python("/knob/python", "/pref/python", env) == "/knob/python"
    assert jobs.engine_python("", "/pref/python", env) == "/pref/python"
    assert jobs.engine_python("", "", env) == "/env/python"
    assert jobs.engine_python("$VENVS/rvm/bin/python", "", env) == "/venvs/rvm/bin/python"
    assert jobs.engine_python("", None, {}) is None


# --------------------------------------------------------------------------------- Nuke's Python 3.9


PLUGIN_FILES = sorted(PLUGIN_DIR.rglob("*.py"))
FORBIDDEN = {"torch", "numpy", "rvm_vfx", "render_worker"}


def test_plugin_files_exist():
    names = {p.relative_to(PLUGIN_DIR).as_posix() for p in PLUGIN_FILES}
    assert {"init.py", "menu.py", "rvm_nuke/jobs.py", "rvm_nuke/engine.py", "rvm_nuke/node.py"} <= names


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.relative_to(PLUGIN_DIR).as_posix())
def test_plugin_parses_as_python_3_9_and_never_imports_the_engine(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
        assert not isinstance(node, ast.Match), f"{path}:{node.lineno}: match statements need Python 3.10"
    assert not imported & FORBIDDEN, f"{path} imports {imported & FORBIDDEN}"
    # Annotations such as `str | None` are only safe on 3.9 when they are never evaluated.
    has_annotations = any(
        isinstance(n, (ast.AnnAssign, ast.arg))
        and n.annotation is not None
        or isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        and n.returns is not None
        for n in ast.walk(tree)
    )
    if has_annotations:
        assert "from __future__ import annotations" in path.read_text(encoding="utf-8")


def _python39():
    for candidate in (os.environ.get("RVM_VFX_PYTHON39"), os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python")):
        if candidate and os.path.isfile(candidate):
            return candidate
    from shutil import which

    return which("python3.9")


@pytest.mark.skipif(_python39() is None, reason="no Python 3.9 interpreter here (set RVM_VFX_PYTHON39)")
def test_plugin_imports_under_python_3_9(tmp_path):
    """Import every module of the plugin with a real 3.9, as Nuke 14 would, with an empty ``nuke``: the
    vendored contract included, with no engine to fall back on, and its checks working there too."""
    code = f"""
import json, sys, types
sys.modules["nuke"] = types.ModuleType("nuke")
sys.path.insert(0, {str(PLUGIN_DIR)!r})
import rvm_nuke.jobs as j, rvm_nuke.engine as e, rvm_nuke.node as n
src = j.Source("/p/p.####.exr", 1, 3, "ACEScg")
job = j.build_job({{"device": "mps"}}, src, node_name="N", script_path="/s/c.nk")
try:
    j.build_job({{"frame_range": "1-1000001"}}, src, node_name="N", script_path="/s/c.nk")
except j.PluginError as exc:
    refused = str(exc)
engine = sorted(m for m in sys.modules if m.split(".")[0] in ("rvm_vfx", "torch", "numpy"))
print(json.dumps([e.engine_command("/py", "/j.json"), job, refused, engine, list(sys.version_info[:2])]))
"""
    out = subprocess.run([_python39(), "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    command, job, refused, engine, version = json.loads(out.stdout)
    assert command == ["/py", "-m", "rvm_vfx", "render", "/j.json", "--progress", "json"]
    assert Job.from_dict(job).to_dict() == job and (job["frames"], job["device"]) == ("1-3", "mps")
    assert refused == "job field 'frames': bad frame range '1-1000001': more than 1000000 frames"
    assert (engine, version) == ([], [3, 9])
