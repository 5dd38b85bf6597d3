"""The Nuke glue (``rvm_nuke.node``, ``menu.py``) against a stand-in ``nuke`` module, and one real render.

The stand-in (``tests/nuke_stub/fake_nuke.py``) holds knob values and records dialogs, executes and
progress; the engine is either the protocol-speaking fake (``fake_engine.py``) or, in the end-to-end
test, the real ``python -m rvm_vfx render`` on a small plate with the official weights.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import PyOpenColorIO as ocio
import pytest

from rvm_vfx.job import Job

from .conftest import DATA, TFJS_MODEL
from .nuke_stub import FAKE_ENGINE, PLUGIN_DIR, kill_fake_engines, plugin_module
from .nuke_stub.fake_nuke import ALWAYS_SAVE, INVISIBLE, STARTLINE, FakeNuke, frame_range, restrict_values, seen

jobs = plugin_module("rvm_nuke.jobs")
engine = plugin_module("rvm_nuke.engine")
contract = plugin_module("rvm_nuke.vendor.rvm_spec")

BUILTIN = "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6"


@pytest.fixture(autouse=True)
def no_engine_outlives_its_test(tmp_path):
    yield
    assert kill_fake_engines(tmp_path) == [], "a fake engine was still running after the test"


@pytest.fixture(scope="module")
def studio_config(tmp_path_factory) -> Path:
    """An OCIO config file as a studio would have one (the built-in CG config, written out)."""
    path = tmp_path_factory.mktemp("ocio") / "config.ocio"
    path.write_text(ocio.Config.CreateFromFile(BUILTIN).serialize())
    return path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    stub = FakeNuke()
    monkeypatch.setitem(sys.modules, "nuke", stub.module)
    for name in ("RVM_VFX_WATCH_FOLDER", "RVM_VFX_PYTHON", "OCIO"):
        monkeypatch.delenv(name, raising=False)
    return stub


@pytest.fixture
def node(fake, monkeypatch):
    module = plugin_module("rvm_nuke.node")
    monkeypatch.setattr(module, "nuke", fake.module)
    module._RUNNING.clear()
    monkeypatch.setattr(module, "_watching_exit", False, raising=False)  # each test's stand-in gets its own callbacks
    return module


@pytest.fixture
def use_fake_engine(monkeypatch):
    """Point the plugin at fake_engine.py in the given mode (instead of ``python -m rvm_vfx``)."""

    def use(mode: str) -> list[list[str]]:
        launched = []

        def launcher(python, which=None):
            launched.append(python)
            return [sys.executable, str(FAKE_ENGINE), mode]

        monkeypatch.setattr(engine, "engine_launcher", launcher)
        return launched

    return use


def make_shot(fake, node, tmp_path, config, *, colorspace="default (ACEScg)", file=None, first=1001, last=1003):
    root = fake.root()
    root["name"].setValue(jobs.slash(str(tmp_path / "comp" / "sh010_comp_v001.nk")))
    root["OCIO_config"].setValue("custom")
    root["customOCIOConfigPath"].setValue(str(config))
    read = fake.nodes.Read(name="Plate", first=first, last=last, origfirst=first, origlast=last, colorspace=colorspace)
    read["file"].setValue(file or jobs.slash(str(tmp_path / "plates" / "sh010.####.exr")))
    frame_range(read, first, last)
    fake.selected = read
    group = node.create_node()
    return read, group


def seen_progress(fake) -> threading.Event:
    """Set once any progress task the plugin opens reports progress (so a test waits on an event, not a clock)."""
    event = threading.Event()
    make_task = fake.ProgressTask

    def task(title):
        made = make_task(title)
        set_progress = made.setProgress

        def record(value):
            set_progress(value)
            event.set()

        made.setProgress = record
        return made

    fake.ProgressTask = task
    return event


def read_knobs(group, node):
    read = group.node(node.READ_NAME)
    return {name: read[name].value() for name in ("file", "first", "last", "origfirst", "origlast", "colorspace",
                                                   "premultiplied", "on_error")}  # fmt: skip


# ----------------------------------------------------------------------------------------- install


def test_menu_registers_the_toolbar_entry_and_preferences(fake, node):
    runpy.run_path(str(PLUGIN_DIR / "init.py"))
    runpy.run_path(str(PLUGIN_DIR / "menu.py"))
    command = fake.menus["Nodes"].findItem("RVM").findItem("RVM Matte")
    assert "rvm_nuke.node.create_node()" in command
    prefs = fake.toNode("preferences")
    assert prefs.knob(jobs.PREF_ENGINE_PYTHON) is not None and prefs.knob(jobs.PREF_WATCH_FOLDER) is not None
    runpy.run_path(str(PLUGIN_DIR / "menu.py"))  # a second run (reloaded menu.py) adds nothing twice
    assert list(prefs.knobs()).count(jobs.PREF_ENGINE_PYTHON) == 1


def test_preferences_are_saved_with_nukes_and_come_back_after_a_restart(fake, node):
    runpy.run_path(str(PLUGIN_DIR / "menu.py"))
    prefs = fake.toNode("preferences")
    names = ["rvm_preferences", jobs.PREF_ENGINE_PYTHON, jobs.PREF_WATCH_FOLDER]
    assert [name for name in prefs.knobs() if prefs[name].getFlag(ALWAYS_SAVE)] == names
    prefs[jobs.PREF_ENGINE_PYTHON].setValue("/opt/rvm-vfx/.venv/bin/python")
    fake.reload_preferences()  # Nuke writes its preferences file, quits and starts again
    prefs = fake.toNode("preferences")
    assert list(prefs.knobs()) == names  # restored from the file, and not added a second time
    assert node.preference(jobs.PREF_ENGINE_PYTHON) == "/opt/rvm-vfx/.venv/bin/python"
    assert all(prefs[name].getFlag(ALWAYS_SAVE) for name in names)
    assert prefs[jobs.PREF_WATCH_FOLDER].tooltip().startswith("The render worker's watch folder")


def test_knob_scripts_do_nothing_harmful_on_a_nuke_without_the_plugin(fake, node, tmp_path, studio_config,
                                                                      monkeypatch):  # fmt: skip
    """A script with the node opened elsewhere (a farm Nuke, a colleague without the plugin) must not raise."""
    _, group = make_shot(fake, node, tmp_path, studio_config)
    fake.this_node, fake.this_knob = group, group["downsample_auto"]
    group["downsample_auto"].setValue(False)
    exec(group["knobChanged"].value(), {"nuke": fake.module})  # with the plugin: the panel follows the knob
    assert group["downsample"].enabled()

    monkeypatch.setitem(sys.modules, "rvm_nuke", None)  # `import rvm_nuke` now fails as it does there
    monkeypatch.setitem(sys.modules, "rvm_nuke.node", None)
    exec(group["knobChanged"].value(), {"nuke": fake.module})
    assert fake.messages == []
    exec(group["render"].command(), {"nuke": fake.module})
    assert fake.messages == [
        "RVM Matte: the rvm-vfx Nuke plugin is not installed in this Nuke (its folder is not on the plugin "
        "path), so this button cannot run here. The node still shows the matte rendered so far."
    ]


def test_create_node_builds_the_group(fake, node, tmp_path, studio_config):
    read, group = make_shot(fake, node, tmp_path, studio_config)
    assert group.Class() == "Group" and group.name() == "RVMMatte1" and group.input(0) is read
    for spec in jobs.KNOBS:
        knob = group.knob(spec.name)
        assert knob is not None, spec.name
        if spec.kind in jobs.VALUE_KINDS:
            assert knob.value() == spec.default, spec.name
        assert knob.tooltip() == spec.tooltip
    assert group["encoder"].values() == list(jobs.ENCODERS)
    assert group["output_mode"].values() == ["premultiplied RGBA", "alpha only"]
    assert group[node.STATE_KNOB].getFlag(INVISIBLE) and group["render"].getFlag(STARTLINE)
    # Every button calls a function that exists.
    for name in ("render", "send_to_farm", "reload"):
        function = group[name].command().rsplit("rvm_nuke.node.", 1)[1].split("(")[0]
        assert callable(getattr(node, function))
    assert "knob_changed" in group["knobChanged"].value()
    # Input -> Switch(0), matte Read -> Switch(1) -> Output; passes the plate through until rendered.
    switch = group.node(node.SWITCH_NAME)
    assert switch.input(0) is group.node(node.INPUT_NAME) and switch.input(1) is group.node(node.READ_NAME)
    assert group.node(node.OUTPUT_NAME).input(0) is switch and switch["which"].value() == 0
    assert seen(group).panel_shown and fake._context == [fake.root()]
    assert node.create_node().name() == "RVMMatte2"


def test_the_new_node_is_connected_once_its_input_exists(fake, node, tmp_path, studio_config):
    """createNode cannot connect a Group that has no Input yet: the selection is connected afterwards."""
    plate = fake.nodes.Read(name="Plate")
    fake.selected = plate
    group = node.create_node()
    assert group.input(0) is plate and group.maximumInputs() == 2 + len(jobs.MATTES)  # plate, mattes, keyframes
    fake.selected = None
    assert node.create_node().input(0) is None  # nothing selected: nothing to connect, and no error


def test_knob_changed_greys_out_what_does_not_apply(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    assert not group["downsample"].enabled() and group["encoder"].enabled()
    group["downsample_auto"].setValue(False)
    group["checkpoint"].setValue("/models/mine.pth")
    node.knob_changed(group, group["downsample_auto"])
    assert group["downsample"].enabled() and not group["encoder"].enabled()


# ------------------------------------------------------------------------------------------ render


def test_render_with_a_plain_read(fake, node, tmp_path, studio_config, use_fake_engine):
    launched = use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    group["engine_python"].setValue("/venvs/rvm/bin/python")
    group["preroll"].setValue(4)
    result = node.render_matte(group, background=False)

    assert result.ok and fake.messages == [] and launched == ["/venvs/rvm/bin/python"]
    out = tmp_path / "comp" / "rvm" / "RVMMatte1"
    job = json.loads((out / "RVMMatte1.rvm-job.json").read_text())
    assert Job.from_dict(job).to_dict() == job
    assert job["input"] == jobs.slash(str(tmp_path / "plates" / "sh010.####.exr"))
    assert (job["frames"], job["input_colorspace"], job["preroll"]) == ("1001-1003", "ACEScg", 4)
    assert job["ocio_config"] == jobs.slash(str(studio_config)) and job["output"] == jobs.slash(
        str(out / "RVMMatte1.####.exr")
    )
    assert read_knobs(group, node) == {
        "file": job["output"], "first": 1001, "last": 1003, "origfirst": 1001, "origlast": 1003,
        "colorspace": "ACEScg", "premultiplied": True, "on_error": "error",
    }  # fmt: skip
    assert seen(group.node(node.READ_NAME)["reload"]).executed == 1
    assert group.node(node.SWITCH_NAME)["which"].value() == 1
    assert group["status"].value().startswith("rendered 3 frame(s) (1 warning(s): 3 NaN/Inf")
    task = seen(fake.progress_tasks[0])
    assert task.title == "RVM Matte: RVMMatte1" and task.progress == [0, 33, 66, 100, 100]
    assert "frame 1002 (2 of 3), 2.50 fps, about 0 s left" in task.messages
    assert json.loads(group[node.STATE_KNOB].value())["output"] == job["output"]


def test_an_alpha_only_render_is_shown_as_data(fake, node, tmp_path, studio_config, use_fake_engine):
    """The engine tags alpha-only EXRs as data: the node's Read takes them raw, not from the output space."""
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    group["output_mode"].setValue("alpha only")
    assert node.render_matte(group, background=False).ok
    read = group.node(node.READ_NAME)
    assert (read["raw"].value(), read["premultiplied"].value()) == (True, False)
    assert read["colorspace"].value() == "default"  # left alone: raw data is never converted
    group["output_mode"].setValue("premultiplied RGBA")  # rendered again as colour: converted again
    fake.answers.append(True)  # yes, replace the frames
    assert node.render_matte(group, background=False).ok
    assert (read["raw"].value(), read["premultiplied"].value(), read["colorspace"].value()) == (False, True, "ACEScg")


def test_render_in_the_background_finishes_on_the_main_thread(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    thread = node.on_render(group)
    assert node._RUNNING["RVMMatte1"].thread is thread
    thread.join()
    assert fake.main_thread_calls == [node.finish_work] and node._RUNNING == {}
    assert group.node(node.SWITCH_NAME)["which"].value() == 1 and fake.messages == []


def test_a_broken_progress_dialog_still_finishes_the_render(fake, node, tmp_path, studio_config, use_fake_engine,
                                                             monkeypatch):  # fmt: skip
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)

    def no_dialog(title):
        raise RuntimeError("no progress dialog in this session")

    monkeypatch.setattr(fake, "ProgressTask", no_dialog)
    node.on_render(group).join()
    assert node._RUNNING == {}  # the node can render again
    assert fake.messages == [
        "RVM Matte RVMMatte1: the render failed.\n\ncould not follow the engine: no progress dialog in this session"
    ]


def test_a_second_render_of_the_same_node_is_refused(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    node._RUNNING["RVMMatte1"] = object()
    assert node.on_render(group) is None
    assert fake.messages == [
        "RVM Matte RVMMatte1: RVMMatte1 is already rendering; cancel it in the progress dialog first."
    ]


def test_engine_error_is_a_message_not_a_traceback(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("error")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    result = node.render_matte(group, background=False)
    assert result.status == "error"
    assert len(fake.messages) == 1 and "Traceback" not in fake.messages[0]
    assert fake.messages[0].endswith("sh010.####.exr: missing frames 1002-1003")
    assert group.node(node.SWITCH_NAME)["which"].value() == 0 and group.node(node.READ_NAME)["file"].value() == ""
    assert group["status"].value() == "render failed"


def test_engine_crash_shows_its_last_line(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("crash")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    node.render_matte(group, background=False)
    assert fake.messages[0].endswith("exit code 1: ModuleNotFoundError: No module named 'torch'")
    assert "Traceback" not in fake.messages[0]


@pytest.mark.skipif(sys.platform == "win32", reason="graceful stop uses SIGTERM")
def test_cancel_in_the_progress_dialog(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("wait")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    fake.cancel_after_progress = 2  # Cancel pressed once the first frame is reported (after "start")
    result = node.render_matte(group, background=False)
    assert result.status == "cancelled" and not result.killed
    assert fake.messages == [] and group["status"].value() == "cancelled: stopped after 1 of 3 frames"
    assert group.node(node.SWITCH_NAME)["which"].value() == 0  # an incomplete matte is not shown as done
    out = tmp_path / "comp" / "rvm" / "RVMMatte1"
    expected = ["RVMMatte1.1001.exr", "RVMMatte1.rvm-job.json", "fake-engine.pid"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)


def test_existing_frames_are_replaced_only_when_the_artist_says_so(
    fake, node, tmp_path, studio_config, use_fake_engine
):
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    out = tmp_path / "comp" / "rvm" / "RVMMatte1"
    out.mkdir(parents=True)
    (out / "RVMMatte1.1002.exr").write_bytes(b"old")
    fake.answers.append(False)
    assert node.render_matte(group, background=False) is None
    assert "1 frame(s)" in fake.asked[0] and not (out / "RVMMatte1.rvm-job.json").exists()
    fake.answers.append(True)
    assert node.render_matte(group, background=False).ok
    assert json.loads((out / "RVMMatte1.rvm-job.json").read_text())["overwrite"] is True


def test_knob_problems_are_messages(fake, node, tmp_path, studio_config, use_fake_engine, monkeypatch):
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    group["frame_range"].setValue("tomorrow")
    node.on_render(group)
    group["frame_range"].setValue("")
    fake.root()["name"].setValue("")
    node.on_render(group)
    group.setInput(0, None)
    node.on_render(group)
    assert fake.messages == [
        # The engine's own words: the plugin checks the Job with its copy of the engine's contract.
        "RVM Matte RVMMatte1: job field 'frames': bad frame range 'tomorrow': 'tomorrow' is not N, A-B or A-BxSTEP",
        f"RVM Matte RVMMatte1: Save the script first: the default output ({jobs.DEFAULT_OUTPUT}) lives next to it. "
        "Or set the 'output file' knob to a full path.",
        "RVM Matte RVMMatte1: Connect the plate to the input of RVMMatte1.",
    ]


def test_missing_engine_is_reported_before_any_work(fake, node, tmp_path, studio_config, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    read = fake.nodes.Grade(name="Grade1")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    group.setInput(0, read)
    node.on_render(group)
    assert "Set 'engine Python'" in fake.messages[0] and fake.executed == []  # no precomp was rendered


def test_unknown_colour_space_in_nukes_menu_is_reported_in_the_status(fake, node, tmp_path, studio_config,
                                                                        use_fake_engine):  # fmt: skip
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    colorspace = group.node(node.READ_NAME)["colorspace"]
    restrict_values(colorspace, ["default", "linear"])
    node.render_matte(group, background=False)
    assert group["status"].value().startswith("rendered 3 frame(s); set the Read's colorspace by hand")


def test_a_mistyped_engine_python_is_reported_before_any_work(fake, node, tmp_path, studio_config):
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, plate)
    frame_range(grade, 1001, 1003)
    group.setInput(0, grade)  # would need a precomp first
    typo = str(tmp_path / "opt" / "rvm-vfx" / ".venv" / "bin" / "pyhton")
    group["engine_python"].setValue(typo)
    node.on_render(group)
    assert fake.messages == [
        f"RVM Matte RVMMatte1: engine Python {typo} does not exist. Set 'engine Python' (Preferences > RVM, or "
        "the node's knob) to the python of the environment where rvm-vfx is installed, or set $RVM_VFX_PYTHON."
    ]
    assert fake.executed == [] and fake.progress_tasks == []


@pytest.mark.skipif(sys.platform == "win32", reason="the fake engine waits for SIGTERM")
def test_closing_the_script_stops_its_engine(fake, node, tmp_path, studio_config, use_fake_engine, monkeypatch):
    at_exit = []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    use_fake_engine("wait")  # renders one frame, then waits to be stopped
    _, group = make_shot(fake, node, tmp_path, studio_config)
    progressed = seen_progress(fake)
    thread = node.on_render(group)
    assert progressed.wait(30)  # the engine has started and spoken
    pid = int((tmp_path / "comp" / "rvm" / "RVMMatte1" / "fake-engine.pid").read_text())
    try:
        fake.close_script()  # File > Close, or quitting Nuke
        thread.join(timeout=30)
        assert not thread.is_alive()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped
    finally:
        if thread.is_alive():
            os.kill(pid, signal.SIGKILL)
    assert fake.messages == [] and node._RUNNING == {}
    assert engine.stop_all in at_exit  # and when Nuke quits without closing the script first


def test_finishing_after_the_node_was_deleted_is_harmless(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    plan = node.make_plan(group)
    fake.delete(group)
    node.finish_render(group, plan, engine.EngineResult(status="error", message="x"))
    assert fake.messages == []


# ------------------------------------------------------------------------------- sources and colour


def test_non_read_upstream_is_precomped_scene_linear(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, plate)
    frame_range(grade, 1001, 1003)
    dot = fake.nodes.Dot(name="Dot1")
    dot.setInput(0, grade)
    group.setInput(0, dot)
    group["frame_range"].setValue("1002-1003")
    seen = {}

    def render_hook(write, first, last):
        seen.update({k: write[k].value() for k in ("file", "file_type", "datatype", "colorspace", "channels")})
        seen["input"] = write.input(0)

    fake.render_hook = render_hook
    assert node.render_matte(group, background=False).ok
    out = jobs.slash(str(tmp_path / "comp" / "rvm" / "RVMMatte1"))
    precomp = f"{out}/precomp/RVMMatte1.precomp.####.exr"
    assert seen == {"file": precomp, "file_type": "exr", "datatype": "16 bit half", "colorspace": "ACEScg",
                    "channels": "rgb", "input": group.node(node.INPUT_NAME)}  # fmt: skip
    write = fake.executed[0][0]
    assert [(first, last) for _, first, last in fake.executed] == [(1002, 1002), (1003, 1003)]  # frame by frame
    assert write in fake.deleted and group.node(node.PRECOMP_NAME) is None
    job = json.loads(Path(out, "RVMMatte1.rvm-job.json").read_text())
    assert (job["input"], job["input_colorspace"], job["frames"]) == (precomp, "ACEScg", "1002-1003")


def test_a_cancelled_precomp_is_a_message(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, plate)
    group.setInput(0, grade)

    def cancelled(write, first, last):
        raise RuntimeError("Cancelled")

    fake.render_hook = cancelled
    node.on_render(group).join()
    assert fake.messages == [
        "RVM Matte RVMMatte1: the render failed.\n\nThe precomp of the input (the input is a Grade node, not a Read) "
        "did not finish: frame 1: Cancelled"
    ]
    assert len(fake.deleted) == 1 and len(fake.executed) == 1 and node._RUNNING == {}


def test_node_colour_space_knob_overrides_the_read(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config, colorspace="default (scene_linear)")
    assert node.make_plan(group).job["input_colorspace"] == "ACEScg"
    group["input_colorspace"].setValue("srgb_tx")
    assert node.make_plan(group).job["input_colorspace"] == "sRGB Encoded Rec.709 (sRGB)"


def test_builtin_config_uri_reaches_the_engine(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    fake.root()["OCIO_config"].setValue(BUILTIN)
    local = node.make_plan(group)
    # Job.from_json would re-base a URI on the job's folder; locally it travels as $OCIO instead.
    assert local.job["ocio_config"] is None and local.engine_ocio == BUILTIN
    assert local.job["input_colorspace"] == "ACEScg" and local.read_colorspace == "ACEScg"
    farm = node.make_plan(group, farm=True)
    assert farm.job["ocio_config"] == BUILTIN and farm.engine_ocio is None


def test_nuke_colour_management_without_its_config(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config, colorspace="default (linear)")
    fake.root()["colorManagement"].setValue("Nuke")
    plan = node.make_plan(group)
    assert plan.job["ocio_config"] is None and plan.job["input_colorspace"] == "lin_rec709"
    assert plan.read_colorspace == "linear"


def test_ocio_config_is_the_one_the_script_uses(fake, node, tmp_path, studio_config, monkeypatch):
    """A config bundled with Nuke: its path is in the Root's OCIOConfigPath knob (the install folder differs
    by platform, and on macOS nuke.EXE_PATH is not even in it)."""
    _, group = make_shot(fake, node, tmp_path, studio_config)
    root = fake.root()
    root["OCIO_config"].setValue("fn-nuke_cg-config")
    root["customOCIOConfigPath"].setValue("")
    root["OCIOConfigPath"].setValue(str(studio_config))
    assert node.make_plan(group).job["ocio_config"] == jobs.slash(str(studio_config))
    monkeypatch.setenv("STUDIO_OCIO_DIR", str(studio_config.parent))
    root["OCIOConfigPath"].setValue("[getenv STUDIO_OCIO_DIR]/config.ocio")  # evaluated as Nuke does
    assert node.make_plan(group).job["ocio_config"] == jobs.slash(str(studio_config))


def test_file_knobs_are_evaluated_as_nuke_evaluates_them(fake, node, tmp_path, studio_config, monkeypatch):
    """TCL in 'output file' (e.g. a path beside the script) reaches the engine evaluated, frame token kept."""
    _, group = make_shot(fake, node, tmp_path, studio_config)
    fake.frame(1002)  # the current frame: evaluate() puts it where the #### are
    group["output"].setValue("[file dirname [value root.name]]/mattes/sh010_matte.####.exr")
    monkeypatch.setenv("STUDIO_MODELS", "/studio/models")
    group["checkpoint"].setValue("[getenv STUDIO_MODELS]/rvm_sh010.pth")
    job = node.make_plan(group).job
    assert job["output"] == jobs.slash(str(tmp_path / "comp" / "mattes" / "sh010_matte.####.exr"))
    assert job["checkpoint"] == "/studio/models/rvm_sh010.pth"
    group["output"].setValue("[file dirname [value root.name]]/mattes/[frame]/m.####.exr")
    with pytest.raises(jobs.PluginError, match="changes from frame to frame"):
        node.make_plan(group)


def test_movie_read_keeps_its_first_frame_number(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config, file="/plates/sh010.mov", first=1, last=48)
    job = node.make_plan(group).job
    assert (job["input"], job["start_frame"], job["frames"]) == ("/plates/sh010.mov", 1, "1-48")


# --------------------------------------------------------------------------------------------- farm


def test_send_to_farm_writes_a_ticket_and_reload_picks_up_frames(fake, node, tmp_path, studio_config, monkeypatch):
    watch = tmp_path / "farm"
    watch.mkdir()
    monkeypatch.setenv("RVM_VFX_WATCH_FOLDER", str(watch))
    _, group = make_shot(fake, node, tmp_path, studio_config)
    group["farm_priority"].setValue(60)
    group["checkpoint"].setValue("/studio/models/rvm_resnet50_v2.pth")
    job_id = node.on_send_to_farm(group)

    ticket_path = watch / "incoming" / f"{job_id}.json"
    assert os.listdir(watch / "incoming") == [ticket_path.name]
    ticket = json.loads(ticket_path.read_text())
    assert Job.from_dict(ticket).to_dict() == ticket
    assert (ticket["name"], ticket["priority"], ticket["checkpoint"]) == (job_id, 60, "rvm_resnet50_v2.pth")
    assert job_id.startswith("RVMMatte1_") and job_id in fake.messages[0] and str(ticket_path) in fake.messages[0]
    knobs = read_knobs(group, node)
    assert (knobs["file"], knobs["on_error"], knobs["premultiplied"]) == (ticket["output"], "black", True)
    assert group.node(node.SWITCH_NAME)["which"].value() == 1

    # Two of three frames land; Reload re-reads them and says how far the farm is.
    for frame in (1001, 1002):
        Path(contract.format_frame(ticket["output"], frame)).write_bytes(b"exr")
    group.node(node.READ_NAME)["file"].setValue("")  # e.g. the artist fiddled with the internal Read
    assert node.on_reload(group) == 2
    assert group["status"].value() == f"farm job {job_id}: 2 of 3 frame(s) on disk"
    assert group.node(node.READ_NAME)["file"].value() == ticket["output"]
    assert seen(group.node(node.READ_NAME)["reload"]).executed == 2
    assert read_knobs(group, node)["on_error"] == "black"  # frames still to come show black meanwhile

    # The last frame lands: a missing frame is an error again, never a silent black frame in a final render.
    Path(contract.format_frame(ticket["output"], 1003)).write_bytes(b"exr")
    assert node.on_reload(group) == 3
    assert read_knobs(group, node)["on_error"] == "error"
    assert group["status"].value() == f"farm job {job_id}: 3 of 3 frame(s) on disk"


def test_send_to_farm_precomps_in_the_background_then_writes_the_ticket(fake, node, tmp_path, studio_config,
                                                                       monkeypatch):  # fmt: skip
    """The farm cannot run Nuke, so the precomp is rendered here, but frame by frame from a thread: Nuke stays
    usable (with a progress bar and Cancel), and the ticket is written once the precomp is complete."""
    watch = tmp_path / "farm"
    watch.mkdir()
    monkeypatch.setenv("RVM_VFX_WATCH_FOLDER", str(watch))
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, plate)
    frame_range(grade, 1001, 1003)
    group.setInput(0, grade)
    started, release = threading.Event(), threading.Event()

    def slow_render(write, first, last):
        started.set()
        assert release.wait(30)

    fake.render_hook = slow_render
    job_id = node.on_send_to_farm(group)  # returns while the precomp runs
    assert started.wait(30) and job_id.startswith("RVMMatte1_")
    run = node._RUNNING["RVMMatte1"]
    assert not (watch / "incoming").exists() or os.listdir(watch / "incoming") == []  # no ticket yet
    assert group["status"].value() == "precomp: the input is a Grade node, not a Read"
    release.set()
    run.thread.join()

    ticket = json.loads((watch / "incoming" / f"{job_id}.json").read_text())
    out = jobs.slash(str(tmp_path / "comp" / "rvm" / "RVMMatte1"))
    assert ticket["input"] == f"{out}/precomp/RVMMatte1.precomp.####.exr" and ticket["frames"] == "1001-1003"
    assert [(first, last) for _, first, last in fake.executed] == [(1001, 1001), (1002, 1002), (1003, 1003)]
    write = fake.executed[0][0]
    assert write in fake.deleted and group.node(node.PRECOMP_NAME) is None
    task = seen(fake.progress_tasks[0])
    assert task.title == "RVM Matte: RVMMatte1" and task.progress == [0, 33, 66, 100, 100]
    assert "precomp: frame 1002 (2 of 3)" in task.messages
    assert group["status"].value() == f"on the farm as {job_id}" and job_id in fake.messages[0]
    assert node._RUNNING == {}


def test_a_cancelled_farm_precomp_sends_nothing(fake, node, tmp_path, studio_config, monkeypatch):
    watch = tmp_path / "farm"
    watch.mkdir()
    monkeypatch.setenv("RVM_VFX_WATCH_FOLDER", str(watch))
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, plate)
    frame_range(grade, 1001, 1003)
    group.setInput(0, grade)
    fake.cancel_after_progress = 2  # Cancel pressed after the first precomp frame
    node.send_to_farm(group, background=False)
    assert [(first, last) for _, first, last in fake.executed] == [(1001, 1001)]
    assert not (watch / "incoming").exists() or os.listdir(watch / "incoming") == []
    assert group["status"].value() == "cancelled: precomp stopped after 1 of 3 frames" and fake.messages == []
    assert group.node(node.SWITCH_NAME)["which"].value() == 0 and fake.executed[0][0] in fake.deleted


def test_farm_watch_folder_from_the_preference(fake, node, tmp_path, studio_config):
    watch = tmp_path / "watch"
    watch.mkdir()
    node.install_preferences()
    fake.toNode("preferences")[jobs.PREF_WATCH_FOLDER].setValue(str(watch))
    _, group = make_shot(fake, node, tmp_path, studio_config)
    job_id = node.send_to_farm(group)
    assert (watch / "incoming" / f"{job_id}.json").is_file()


def test_farm_without_a_watch_folder_is_a_message(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    assert node.on_send_to_farm(group) is None
    assert "No farm watch folder" in fake.messages[0]


def test_reload_before_anything_was_rendered(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    node.on_reload(group)
    assert fake.messages == [
        "RVM Matte RVMMatte1: Nothing to reload yet: render the matte or send it to the farm first."
    ]


def test_engine_python_from_the_preference(fake, node, tmp_path, studio_config, use_fake_engine):
    launched = use_fake_engine("ok")
    node.install_preferences()
    fake.toNode("preferences")[jobs.PREF_ENGINE_PYTHON].setValue("/opt/rvm/bin/python")
    _, group = make_shot(fake, node, tmp_path, studio_config)
    assert node.render_matte(group, background=False).ok and launched == ["/opt/rvm/bin/python"]


# ------------------------------------------------------------------------------- real engine, end to end


def _write_plate(folder: Path, frames: range) -> str:
    """Three 128x96 sRGB PNG frames made from the project's portraits (people, so the matte has content)."""
    folder.mkdir(parents=True)
    portraits = sorted((DATA / "portraits" / "image").glob("*.jpg"))
    for i, frame in enumerate(frames):
        src = oiio.ImageBuf(str(portraits[i % len(portraits)]))
        small = oiio.ImageBufAlgo.resize(src, roi=oiio.ROI(0, 128, 0, 96, 0, 1, 0, 3))
        assert small.write(str(folder / f"plate.{frame:04d}.png"), "uint8"), small.geterror()
    return jobs.slash(str(folder / "plate.####.png"))


def _read_exr(path: str) -> tuple[tuple[str, ...], np.ndarray]:
    buf = oiio.ImageBuf(path)
    assert not buf.has_error, buf.geterror()
    return tuple(buf.spec().channelnames), buf.get_pixels(oiio.FLOAT)


def test_render_matte_end_to_end_with_the_real_engine(fake, node, tmp_path, studio_config):
    """Real ``python -m rvm_vfx render`` through the glue: from a plain Read, and through a precomp."""
    frames = range(1001, 1004)
    plate = _write_plate(tmp_path / "plates", frames)
    read, direct = make_shot(
        fake, node, tmp_path, studio_config, file=plate, colorspace="default (sRGB Encoded Rec.709 (sRGB))"
    )
    direct["engine_python"].setValue(sys.executable)
    direct["checkpoint"].setValue(str(TFJS_MODEL))
    direct["device"].setValue("cpu")

    result = node.render_matte(direct, background=False)
    assert result.ok, (result.message, fake.messages)
    assert fake.messages == [] and result.done == 3
    out = tmp_path / "comp" / "rvm" / "RVMMatte1"
    job = Job.from_json(out / "RVMMatte1.rvm-job.json")
    assert (job.input, job.input_colorspace, job.ocio_config) == (
        plate,
        "sRGB Encoded Rec.709 (sRGB)",
        str(studio_config),
    )
    assert read_knobs(direct, node) == {
        "file": jobs.slash(str(out / "RVMMatte1.####.exr")), "first": 1001, "last": 1003, "origfirst": 1001,
        "origlast": 1003, "colorspace": "ACEScg", "premultiplied": True, "on_error": "error",
    }  # fmt: skip
    assert direct.node(node.SWITCH_NAME)["which"].value() == 1
    progress = seen(fake.progress_tasks[0])
    assert progress.progress[-1] == 100 and any(m.startswith("frame 1003 (3 of 3)") for m in progress.messages)
    direct_alpha = []
    for frame in frames:
        channels, pixels = _read_exr(str(out / f"RVMMatte1.{frame}.exr"))
        assert channels == ("R", "G", "B", "A") and pixels.shape == (96, 128, 4)
        alpha = pixels[..., 3]
        assert 0.05 < alpha.mean() < 0.95 and alpha.max() > 0.9  # a person, not an empty or full frame
        assert np.all(pixels[..., :3] <= alpha[..., None] * 64 + 1e-3)  # premultiplied: no colour without alpha
        direct_alpha.append(alpha)

    # The same plate through a Grade: precomped by a (stand-in) Write in scene-linear ACEScg, then matted.
    grade = fake.nodes.Grade(name="Grade1")
    grade.setInput(0, read)
    frame_range(grade, 1001, 1003)
    fake.selected = grade
    via_precomp = node.create_node()
    via_precomp["engine_python"].setValue(sys.executable)
    via_precomp["checkpoint"].setValue(str(TFJS_MODEL))
    via_precomp["device"].setValue("cpu")

    def nuke_renders_the_write(write, first, last):
        """What Nuke would do: read the plate, convert it to the Write's colour space, write half EXR."""
        config = ocio.Config.CreateFromFile(str(studio_config))
        to_linear = config.getProcessor("sRGB Encoded Rec.709 (sRGB)", write["colorspace"].value())
        cpu = to_linear.getDefaultCPUProcessor()
        for frame in range(first, last + 1):
            pixels = oiio.ImageBuf(contract.format_frame(plate, frame)).get_pixels(oiio.FLOAT)
            pixels = np.ascontiguousarray(pixels[..., :3])
            cpu.applyRGB(pixels)
            spec = oiio.ImageSpec(128, 96, 3, oiio.HALF)
            buf = oiio.ImageBuf(spec)
            buf.set_pixels(oiio.ROI(0, 128, 0, 96, 0, 1, 0, 3), pixels)
            assert buf.write(contract.format_frame(write["file"].value(), frame)), buf.geterror()

    fake.render_hook = nuke_renders_the_write
    result = node.render_matte(via_precomp, background=False)
    assert result.ok, (result.message, fake.messages)
    out2 = tmp_path / "comp" / "rvm" / "RVMMatte2"
    job2 = Job.from_json(out2 / "RVMMatte2.rvm-job.json")
    assert job2.input == jobs.slash(str(out2 / "precomp" / "RVMMatte2.precomp.####.exr"))
    assert job2.input_colorspace == "ACEScg"
    assert read_knobs(via_precomp, node)["file"] == jobs.slash(str(out2 / "RVMMatte2.####.exr"))
    for frame, alpha in zip(frames, direct_alpha, strict=True):
        channels, pixels = _read_exr(str(out2 / f"RVMMatte2.{frame}.exr"))
        assert channels == ("R", "G", "B", "A")
        # Same pictures through sRGB -> ACEScg half float -> the network's sRGB: the same matte.
        # The precomp's half rounding of the plate moves the matte a little: measured mean 1.6e-5-9.2e-5
        # (0.01 before; a wrong colour space moves it by ~1e-2).
        assert np.abs(pixels[..., 3] - alpha).mean() < 1e-3
