"""The Nuke plugin's engine runner: command line, environment, JSON progress lines, outcomes, cancel.

Subprocess tests use ``tests/fake_engine.py``, which speaks the engine's protocol through the contract
without torch; each waits on the fake's own output or exit, never on a clock. Events are the vendored
contract's (``rvm_nuke.vendor.rvm_spec.progress.Event``), as the plugin receives them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from .nuke_stub import FAKE_ENGINE, kill_fake_engines, plugin_module

engine = plugin_module("rvm_nuke.engine")
jobs = plugin_module("rvm_nuke.jobs")
progress = plugin_module("rvm_nuke.vendor.rvm_spec.progress")


def ev(kind: str, **fields: object) -> object:
    """An event as the plugin receives it: a line of the engine's stdout, read by the contract."""
    return progress.parse_line(json.dumps({"event": kind, **fields}))


@pytest.fixture(autouse=True)
def no_engine_outlives_its_test(tmp_path):
    yield
    assert kill_fake_engines(tmp_path) == [], "a fake engine was still running after the test"


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="graceful stop uses SIGTERM")


# ------------------------------------------------------------------------------------- command line


def test_engine_command_with_a_python():
    assert engine.engine_command("/venvs/rvm/bin/python", "/o/job.json") == [
        "/venvs/rvm/bin/python", "-m", "rvm_vfx", "render", "/o/job.json", "--progress", "json",
    ]  # fmt: skip


def test_engine_command_falls_back_to_the_console_script():
    which = {"rvm-vfx": "/usr/local/bin/rvm-vfx"}.get
    assert engine.engine_command(None, "/o/job.json", which=which) == [
        "/usr/local/bin/rvm-vfx", "render", "/o/job.json", "--progress", "json",
    ]  # fmt: skip
    with pytest.raises(engine.EngineNotFound, match="engine Python"):
        engine.engine_launcher(None, which=lambda name: None)


def test_engine_environment_drops_nukes_python_variables():
    nuke_env = {"PYTHONHOME": "/nuke/lib/python3.9", "PYTHONPATH": "/nuke/plugins", "HOME": "/home/a", "OCIO": "/a"}
    env = engine.engine_environment(nuke_env)
    assert env == {"HOME": "/home/a", "OCIO": "/a", "PYTHONUNBUFFERED": "1"}
    assert (
        engine.engine_environment(nuke_env, ocio="ocio://studio-config-latest")["OCIO"] == "ocio://studio-config-latest"
    )
    assert nuke_env["PYTHONPATH"] == "/nuke/plugins"  # Nuke's own environment untouched


# ------------------------------------------------------------------------------------- progress lines


def test_progress_text_and_percent():
    event = ev("progress", frame=1003, done=3, total=10, fps=2.5, eta_s=2.8)
    assert engine.progress_text(event) == "frame 1003 (3 of 10), 2.50 fps, about 3 s left"
    assert engine.progress_percent(event) == 30
    slow = {"frame": 7, "done": 1, "total": 500, "fps": 0.25}
    assert engine.progress_text(ev("progress", **slow, eta_s=1996.0)) == (
        "frame 7 (1 of 500), 0.25 fps, about 33 min 16 s left"
    )
    assert engine.progress_text(ev("progress", **slow, eta_s=7300)).endswith("about 2 h 01 min left")
    assert engine.progress_text(ev("progress", frame=1, done=1, total=1, eta_s=None)) == "frame 1 (1 of 1)"
    assert engine.progress_percent(ev("start", total=0)) is None
    assert engine.progress_percent(ev("warning", message="x")) is None
    assert engine.progress_text(ev("start", total=12)) == "starting: 12 frames"
    assert engine.progress_text(ev("warning", message="NaN")) == "warning: NaN"
    assert engine.progress_text(ev("cut", frame=1012, shot=1)) == "cut at frame 1012: shot 1 starts (memory reset)"
    assert engine.progress_text(ev("error", error={"type": "InputError", "message": "bad"})) == "bad"
    # A field of the wrong type degrades the text, never the host.
    assert engine.progress_text(ev("progress", frame="x", done=None, total=3, fps="fast")) == "frame ? (? of 3)"


# ----------------------------------------------------------------------------------------- outcomes


def test_classify_done():
    events = [
        ev("start", total=2),
        ev("progress", frame=1, done=1, total=2),
        ev("warning", message="clipped"),
        ev("done", done=2, total=2, outputs=["/o/m.0001.exr", "/o/m.0002.exr"]),
    ]
    result = engine.classify(0, events, cancel_requested=False)
    assert (result.status, result.done, result.total, result.warnings) == ("done", 2, 2, ["clipped"])
    assert result.outputs == ["/o/m.0001.exr", "/o/m.0002.exr"] and result.ok


def test_classify_error_event_wins():
    events = [ev("error", error={"type": "MissingFramesError", "message": "missing frames 1003-1005"})]
    result = engine.classify(2, events, cancel_requested=True, stderr_lines=["Traceback (most recent call last):"])
    assert (result.status, result.error_type, result.message) == (
        "error",
        "MissingFramesError",
        "missing frames 1003-1005",
    )


def test_classify_cancel():
    events = [ev("progress", done=4, total=10), ev("cancelled", done=5, total=10)]
    assert engine.classify(1, events, cancel_requested=True).message == "stopped after 5 of 10 frames"
    assert engine.classify(1, events, cancel_requested=False).status == "cancelled"  # stopped by someone else
    assert engine.classify(-9, events[:1], cancel_requested=True).status == "cancelled"


def test_classify_crash_shows_the_last_line_not_the_traceback():
    stderr = [
        "Traceback (most recent call last):\n",
        '  File "/venv/lib/python3.11/site-packages/rvm_vfx/__main__.py", line 3, in <module>\n',
        "    import torch\n",
        "ModuleNotFoundError: No module named 'torch'\n",
        "\n",
    ]
    result = engine.classify(1, [], cancel_requested=False, stderr_lines=stderr)
    assert result.message == "the engine stopped with exit code 1: ModuleNotFoundError: No module named 'torch'"
    assert "Traceback" not in result.message
    assert engine.classify(-11, [], cancel_requested=False).message == "the engine stopped with exit code -11"


def test_classify_exit_zero_without_done():
    result = engine.classify(0, [ev("start", total=1)], cancel_requested=False)
    assert result.ok and result.warnings == ["the engine exited without reporting 'done'"]


def test_remove_temporaries_only_touches_that_engines_files(tmp_path):
    mine = tmp_path / ".m.1001.exr.4242.0123abcd.tmp.exr"
    other = tmp_path / ".m.1002.exr.777.0123abcd.tmp.exr"
    frame = tmp_path / "m.1000.exr"
    for path in (mine, other, frame):
        path.write_bytes(b"x")
    assert engine.remove_temporaries([str(tmp_path), str(tmp_path / "absent")], 4242) == [str(mine)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, frame.name])


# ------------------------------------------------------------------------------------- subprocesses


def fake_job(tmp_path: Path, frames: str = "1001-1003") -> tuple[Path, Path]:
    out = tmp_path / "out"
    job = {"input": str(tmp_path / "plate.####.exr"), "output": str(out / "m.####.exr"), "frames": frames}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path, out


def fake_command(mode: str, job_path: Path) -> list[str]:
    return engine.render_command([sys.executable, str(FAKE_ENGINE), mode], str(job_path))


def test_run_engine_success_follows_progress_and_ignores_stray_output(tmp_path):
    job_path, out = fake_job(tmp_path)
    seen = []
    result = engine.run_engine(fake_command("ok", job_path), on_event=seen.append, output_dirs=[str(out)])
    assert result.status == "done" and result.returncode == 0 and (result.done, result.total) == (3, 3)
    assert [e.kind for e in seen] == ["start", "progress", "warning", "progress", "progress", "done"]
    assert [e.frame for e in seen if e.kind == "progress"] == [1001, 1002, 1003]
    assert result.warnings == ["3 NaN/Inf plate values were replaced with 0"]
    assert result.outputs == [str(out / f"m.{f}.exr") for f in (1001, 1002, 1003)]


def test_run_engine_reports_an_engine_error(tmp_path):
    job_path, out = fake_job(tmp_path)
    result = engine.run_engine(fake_command("error", job_path), output_dirs=[str(out)])
    assert (result.status, result.returncode, result.error_type) == ("error", 2, "InputError")
    assert result.message.endswith("missing frames 1002-1003")


def test_run_engine_reports_a_crash_by_its_last_line(tmp_path):
    job_path, _ = fake_job(tmp_path)
    result = engine.run_engine(fake_command("crash", job_path))
    assert result.status == "error" and result.returncode == 1
    assert result.message == "the engine stopped with exit code 1: ModuleNotFoundError: No module named 'torch'"


def test_run_engine_cannot_start(tmp_path):
    result = engine.run_engine([str(tmp_path / "no-such-python"), "-m", "rvm_vfx"])
    assert result.status == "error" and result.message.startswith("cannot start the engine")
    assert "no-such-python" in result.message


@posix_only
def test_cancel_stops_after_the_frame_in_flight(tmp_path):
    job_path, out = fake_job(tmp_path, "1001-1005")
    seen = []
    result = engine.run_engine(
        fake_command("wait", job_path),
        on_event=seen.append,
        is_cancelled=lambda: any(e.kind == "progress" for e in seen),
        output_dirs=[str(out)],
    )
    assert result.status == "cancelled" and not result.killed and result.returncode == 1
    assert result.message == "stopped after 1 of 5 frames"
    assert seen[-1].kind == "cancelled"
    # The finished frame stays; nothing half-written, nothing after it.
    assert sorted(p.name for p in out.iterdir()) == ["fake-engine.pid", "m.1001.exr"]


@posix_only
def test_cancel_kills_an_engine_that_does_not_stop_and_removes_its_partial_frame(tmp_path):
    job_path, out = fake_job(tmp_path, "1001-1005")
    seen = []
    result = engine.run_engine(
        fake_command("stubborn", job_path),
        on_event=seen.append,
        is_cancelled=lambda: any(e.kind == "progress" for e in seen),
        output_dirs=[str(out)],
        stop_timeout_s=0.5,
    )
    assert result.status == "cancelled" and result.killed and result.returncode < 0
    pid = int((out / "fake-engine.pid").read_text())
    assert result.removed_temporaries == [str(out / f".m.1002.exr.{pid}.0123abcd.tmp.exr")]
    assert sorted(p.name for p in out.iterdir()) == ["fake-engine.pid", "m.1001.exr"]


@posix_only
def test_a_failing_callback_leaves_no_orphan_engine(tmp_path):
    job_path, out = fake_job(tmp_path, "1001-1005")

    def explode(event):
        if event.kind == "progress":
            raise RuntimeError("the progress dialog went away")

    with pytest.raises(RuntimeError, match="went away"):
        engine.run_engine(fake_command("wait", job_path), on_event=explode)
    pid = int((out / "fake-engine.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


@posix_only
def test_stop_all_kills_every_running_engine_and_removes_its_partial_frame(tmp_path):
    """What the plugin calls when the script closes or Nuke quits: no engine may outlive Nuke."""
    job_path, out = fake_job(tmp_path, "1001-1005")
    started = threading.Event()
    results = []

    def follow():
        results.append(
            engine.run_engine(
                fake_command("stubborn", job_path),  # ignores SIGTERM, leaves a half-written frame
                on_event=lambda e: e.kind == "progress" and started.set(),
                output_dirs=[str(out)],
            )
        )

    thread = threading.Thread(target=follow)
    thread.start()
    assert started.wait(30)
    pid = int((out / "fake-engine.pid").read_text())
    assert engine.stop_all() == [pid]
    thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    (result,) = results
    assert (result.status, result.message, result.killed) == ("cancelled", "stopped: Nuke closed the script", True)
    assert sorted(p.name for p in out.iterdir()) == ["fake-engine.pid", "m.1001.exr"]
    assert engine.stop_all() == []  # nothing left to stop


# ------------------------------------------------------------------------------------------ precomp


def test_run_frames_reports_like_the_engine():
    rendered, events = [], []
    result = engine.run_frames([1001, 1002, 1003], lambda f: rendered.append(f), on_event=events.append)
    assert result.ok and (result.done, result.total) == (3, 3) and rendered == [1001, 1002, 1003]
    assert [engine.progress_text(e) for e in events] == [
        "precomp: starting: 3 frames", "precomp: frame 1001 (1 of 3)", "precomp: frame 1002 (2 of 3)",
        "precomp: frame 1003 (3 of 3)", "precomp: done: 3 frames",
    ]  # fmt: skip
    assert [engine.progress_percent(e) for e in events] == [0, 33, 66, 100, 100]


def test_run_frames_stops_at_an_error_or_a_cancel():
    failed = engine.run_frames([1, 2, 3], lambda f: "Write1: disk full" if f == 2 else None)
    assert (failed.status, failed.done, failed.message) == ("error", 1, "frame 2: Write1: disk full")
    rendered = []
    cancelled = engine.run_frames([1, 2, 3], rendered.append, is_cancelled=lambda: len(rendered) == 1)
    assert (cancelled.status, cancelled.message, rendered) == ("cancelled", "precomp stopped after 1 of 3 frames", [1])


# --------------------------------------------------------------------------------------- the engine


def test_check_engine_accepts_a_working_engine_and_remembers_it():
    launcher = [sys.executable, "-m", "rvm_vfx"]  # this environment has rvm-vfx installed
    assert engine.check_engine(launcher) == "0.1.0"

    def must_not_run(*args, **kwargs):
        raise AssertionError("checked once per session")

    assert engine.check_engine(launcher, run=must_not_run) == "0.1.0"


def test_check_engine_names_what_is_wrong(tmp_path):
    how = (
        "Set 'engine Python' (Preferences > RVM, or the node's knob) to the python of the environment where "
        "rvm-vfx is installed, or set $RVM_VFX_PYTHON."
    )
    missing = str(tmp_path / "venv" / "bin" / "pyhton")
    with pytest.raises(engine.EngineNotFound) as error:
        engine.check_engine([missing, "-m", "rvm_vfx"])
    assert str(error.value) == f"engine Python {missing} does not exist. {how}"

    plain = tmp_path / "python"
    plain.write_text("")
    with pytest.raises(engine.EngineNotFound) as error:
        engine.check_engine([str(plain), "-m", "rvm_vfx"])
    assert str(error.value) == f"engine Python {plain} is not executable. {how}"

    bare = tmp_path / "bare-python"  # an interpreter that runs, without rvm-vfx
    bare.write_text('#!/bin/sh\necho "$0: No module named rvm_vfx" >&2\nexit 1\n')
    bare.chmod(0o755)
    with pytest.raises(engine.EngineNotFound) as error:
        engine.check_engine([str(bare), "-m", "rvm_vfx"])
    assert str(error.value) == (
        f"engine Python {bare} has no rvm-vfx installed ({bare}: No module named rvm_vfx). "
        f"Install it there (pip install rvm-vfx), or point 'engine Python' at the environment that has it."
    )

    talker = tmp_path / "other-python"  # runs, but is not the engine
    talker.write_text("#!/bin/sh\necho 'Python 3.11.4'\n")
    talker.chmod(0o755)
    with pytest.raises(engine.EngineNotFound, match=r"did not answer as rvm-vfx \('Python 3.11.4'\)"):
        engine.check_engine([str(talker), "-m", "rvm_vfx"])
