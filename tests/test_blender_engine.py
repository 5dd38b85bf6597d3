"""The add-on's engine subprocess handling, against the plugins' fake engine and the real CLI (no Blender needed).

The fake (``tests/fake_engine.py``) stands where the engine's Python would, ignores ``-m rvm_vfx`` and
speaks the engine's protocol through the contract itself; it lets every ending (success, an error event, a
crash, SIGTERM) be produced on purpose, and each test waits on the fake's own output or exit, never on a
clock. Jobs are built by the add-on's own ``jobspec.build_job``. One test runs the real CLI to hold the
add-on to what the engine prints.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from rvm_vfx.cli import build_parser
from rvm_vfx.spec import format_frame
from rvm_vfx.spec.progress import DONE, PROGRESS, START, WARNING, error_event, event

from .blender_driver.addon_package import addon_module
from .conftest import TFJS_MODEL
from .fake_engine import engine_python, kill_fake_engines

engine = addon_module("engine")
jobspec = addon_module("jobspec")
progress = addon_module("vendor.rvm_spec.progress")

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the fake stands in a shell script; stop is SIGTERM")


@pytest.fixture(autouse=True)
def no_engine_outlives_its_test(tmp_path: Path):
    yield
    assert kill_fake_engines(tmp_path) == [], "a fake engine was still running after the test"


def job_file(folder: Path, output: str | None = None, frames: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A job as the add-on writes it (``build_job(...).to_dict()``), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    job = jobspec.build_job(
        input=str(folder / "plate.####.png"),
        output=output or str(folder / "rvm" / "plate_rvm.####.exr"),
        frames=frames,
        input_colorspace="sRGB - Texture",
        checkpoint=str(TFJS_MODEL),
    )
    path = folder / "job.json"
    path.write_text(json.dumps(job.to_dict()))
    return path


def line(kind: str, **fields: object) -> object:
    """An event as the add-on receives it: sent by the engine's contract, read by the add-on's copy."""
    return progress.parse_line(json.dumps(event(kind, **fields)))


# ------------------------------------------------------------------------------------------ checks


def test_missing_engine_python_says_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(engine.EngineError, match=r"no engine Python set; set it in Edit > Preferences > Add-ons"):
        engine.check_engine_python("  ")
    with pytest.raises(engine.EngineError, match=r"nope/bin/python does not exist"):
        engine.check_engine_python(str(tmp_path / "nope" / "bin" / "python"))
    not_exec = tmp_path / "python"
    not_exec.write_text("")
    with pytest.raises(engine.EngineError, match="is not executable"):
        engine.check_engine_python(str(not_exec))
    with pytest.raises(engine.EngineError, match="folder with no bin/python"):
        engine.check_engine_python(str(tmp_path))


def test_a_venv_folder_is_accepted_for_its_python(tmp_path: Path) -> None:
    python = engine_python(tmp_path / "venv", "ok")
    assert engine.check_engine_python(str(tmp_path / "venv")) == str(python)


def test_command_is_the_engines_render_verb_with_json_progress() -> None:
    command = engine.engine_command("/e/bin/python", "/s/job.json")
    assert command == ["/e/bin/python", "-m", "rvm_vfx", "render", "/s/job.json", "--progress", "json"]
    args = build_parser().parse_args(command[3:])  # what the engine's own CLI makes of it
    assert (args.command, args.job, args.progress) == ("render", "/s/job.json", "json")


def test_run_state_follows_the_protocol() -> None:
    state = engine.RunState()
    assert state.status_line().startswith("RVM Matte: starting the engine")
    state.apply(line(START, total=100))
    assert state.status_line() == "RVM Matte: 0/100 frames  Esc to cancel"
    state.apply(line(PROGRESS, frame=1005, done=5, total=100, fps=2.5, eta_s=3725.2))
    assert state.fraction == 0.05
    assert state.status_line() == "RVM Matte: 5/100 frames · frame 1005 · 2.50 fps · ETA 1:02:05  Esc to cancel"
    state.apply(line(WARNING, message="3 NaN pixels replaced"))
    state.apply(line(DONE, done=100, total=100, outputs=["/o/m.1001.exr"], elapsed_s=40))
    assert state.finished and not state.stopped
    assert state.warnings == ["3 NaN pixels replaced"] and state.outputs == ["/o/m.1001.exr"]


def test_a_progress_event_without_numbers_keeps_what_was_known() -> None:
    """A newer or older engine may leave a field out: the status line degrades, the add-on never raises."""
    state = engine.RunState()
    state.apply(line(START, total=10))
    state.apply(line(PROGRESS, frame=3, done=3, total=10))
    state.apply(progress.parse_line('{"event": "progress", "done": "four", "total": null}'))
    assert (state.done, state.total, state.frame, state.fps, state.eta_s) == (3, 10, 3, 0.0, None)


# ------------------------------------------------------------------------------------------ endings


def run_to_end(python: str | Path, job: Path) -> tuple[object, int]:
    process = engine.EngineProcess(str(python), str(job))
    process.start()
    return process, process.wait()


@posix_only
def test_success(tmp_path: Path) -> None:
    job = job_file(tmp_path)
    output = json.loads(job.read_text())["output"]
    process, code = run_to_end(engine_python(tmp_path, "ok"), job)
    assert code == 0 and process.failure(code) is None
    assert process.state.finished and (process.state.done, process.state.total) == (3, 3)
    assert process.state.warnings == ["3 NaN/Inf plate values were replaced with 0"]  # the stray print is ignored
    frames = [format_frame(output, f) for f in (1, 2, 3)]
    assert process.state.outputs == frames
    assert all(Path(f).read_bytes() == b"frame" for f in frames)


@posix_only
def test_engine_error_event_becomes_one_message(tmp_path: Path) -> None:
    job = job_file(tmp_path)
    process, code = run_to_end(engine_python(tmp_path, "error"), job)
    assert code == 2
    assert process.failure(code) == f"InputError: {tmp_path / 'plate.####.png'}: missing frames 1002-1003"


@posix_only
def test_crash_reports_the_exception_line_not_the_traceback(tmp_path: Path) -> None:
    process, code = run_to_end(engine_python(tmp_path, "crash"), job_file(tmp_path))
    assert code == 1
    assert process.failure(code) == "the engine failed (exit code 1): ModuleNotFoundError: No module named 'torch'"
    assert any(text.startswith("Traceback") for text in process.stderr_tail)  # kept for the console only


@posix_only
def test_python_without_rvm_vfx_is_explained(tmp_path: Path) -> None:
    """A real Python that cannot import rvm_vfx (``-S``: no site-packages) says so; the add-on explains it."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    process, code = run_to_end(python, job_file(tmp_path))
    assert code == 1
    assert process.failure(code) == (
        f"the engine Python {python} has no rvm-vfx installed; install it into that environment (pip install "
        "rvm-vfx) or point Preferences > Add-ons > RVM Matte > Engine Python at one that has it"
    )


def test_missing_dependency_is_explained(tmp_path: Path) -> None:
    """The engine reports a package it cannot import as an error event (its CLI turns every failure into one)."""
    process = engine.EngineProcess(str(engine_python(tmp_path, "ok")), str(tmp_path / "job.json"))
    process.state.apply(progress.parse_line(json.dumps(error_event(ModuleNotFoundError("No module named 'torch'")))))
    assert process.failure(1) == (
        f"the engine Python {process.python} lacks a package rvm-vfx needs (No module named 'torch'); "
        "reinstall rvm-vfx with its dependencies into that environment"
    )


def test_exit_zero_without_done_is_a_failure(tmp_path: Path) -> None:
    process = engine.EngineProcess(str(engine_python(tmp_path, "ok")), str(tmp_path / "job.json"))
    process.state.apply(line(START, total=2))
    assert process.failure(0) == "the engine exited without reporting that it finished"


@posix_only
def test_cancel_sends_sigterm_and_the_engine_stops_after_a_whole_frame(tmp_path: Path) -> None:
    job = job_file(tmp_path)
    output = json.loads(job.read_text())["output"]
    process = engine.EngineProcess(str(engine_python(tmp_path, "wait")), str(job))
    process.start()
    while process.state.done < 1:
        assert process.events(timeout=10.0), "the fake engine went quiet"
    assert process.poll() is None  # still running: it waits for the signal
    process.cancel()
    code = process.wait()
    assert code == 1 and process.cancel_requested
    assert process.state.stopped and not process.state.finished
    assert (process.state.done, process.state.total) == (1, 3)
    folder = Path(output).parent
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".exr") == ["plate_rvm.0001.exr"]  # no temporary


@posix_only
def test_engine_runs_outside_blenders_working_folder(tmp_path: Path) -> None:
    """``-m`` puts the cwd on sys.path: a checkout in Blender's cwd must not shadow the installed engine.

    The job's output is relative, and the fake writes it relative to its working folder, so where the
    frames land says where the engine ran: beside the job file.
    """
    job = job_file(tmp_path / "jobs", output="rvm/m.####.exr", frames=(1,))
    process, code = run_to_end(engine_python(tmp_path, "ok"), job)
    assert code == 0, process.stderr_tail
    assert (tmp_path / "jobs" / "rvm" / "m.0001.exr").read_bytes() == b"frame"


# ------------------------------------------------------------------------------------------ the real CLI


def test_protocol_matches_the_real_engine(tmp_path: Path) -> None:
    """The real ``rvm-vfx render --progress json`` on a job the add-on built: an error as an event, exit 2."""
    process, code = run_to_end(sys.executable, job_file(tmp_path))
    assert code == 2  # bad input
    plate = tmp_path / "plate.####.png"
    assert process.failure(code) == f"MissingFramesError: {plate}: missing frames 1-3 (of 1-3)"
