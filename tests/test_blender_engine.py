"""The add-on's engine subprocess handling, against fake engines and the real CLI (no Blender needed).

A fake engine is an executable named like a Python that ignores ``-m rvm_vfx render`` and speaks the
engine's JSON-lines protocol; it lets every ending (success, error event, crash, SIGTERM) be produced on
purpose, without timing. One test runs the real CLI to hold the protocol to what the engine prints.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from .conftest import TFJS_MODEL
from .test_blender_jobspec import load_plugin_module

engine = load_plugin_module("engine")


def fake_python(folder: Path, body: str) -> str:
    """An executable that stands in for the engine's python; ``sys.argv[4]`` is the job file."""
    path = folder / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport json, signal, sys\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def job_file(folder: Path) -> str:
    path = folder / "job.json"
    path.write_text("{}")
    return str(path)


def say(**event: object) -> str:
    return f"print({json.dumps(json.dumps(event))}, flush=True)\n"


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
    python = fake_python(tmp_path / "venv", "")
    assert engine.check_engine_python(str(tmp_path / "venv")) == python


def test_command_runs_the_render_verb_with_json_progress() -> None:
    assert engine.engine_command("/e/bin/python", "/s/job.json") == [
        "/e/bin/python", "-m", "rvm_vfx", "render", "/s/job.json", "--progress", "json"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ('{"event": "start", "total": 3}', {"event": "start", "total": 3}),
        ('  {"event": "warning", "message": "m"}\n', {"event": "warning", "message": "m"}),
        ("Loading model...", None),
        ('{"no_event": 1}', None),
        ('{"event": "start", "tot', None),
        ("[1, 2]", None),
    ],
)
def test_parse_event_keeps_only_protocol_lines(line: str, event: dict | None) -> None:
    assert engine.parse_event(line) == event


def test_run_state_follows_the_protocol() -> None:
    state = engine.RunState()
    assert state.status_line().startswith("RVM Matte: starting the engine")
    state.apply({"event": "start", "total": 100})
    state.apply({"event": "progress", "frame": 1005, "done": 5, "total": 100, "fps": 2.5, "eta_s": 3725.2})
    assert state.fraction == 0.05
    assert state.status_line() == "RVM Matte: 5/100 frames · frame 1005 · 2.50 fps · ETA 1:02:05  Esc to cancel"
    state.apply({"event": "warning", "message": "3 NaN pixels replaced"})
    state.apply({"event": "done", "done": 100, "total": 100, "outputs": ["/o/m.1001.exr"], "elapsed_s": 40})
    assert state.finished and not state.stopped
    assert state.warnings == ["3 NaN pixels replaced"] and state.outputs == ["/o/m.1001.exr"]


# ------------------------------------------------------------------------------------------ endings


def run_to_end(python: str, job: str) -> tuple[object, int]:
    process = engine.EngineProcess(python, job)
    process.start()
    return process, process.wait()


def test_success(tmp_path: Path) -> None:
    body = say(event="start", total=2) + 'print("chatter from a library")\n'
    body += say(event="progress", frame=1, done=1, total=2, fps=1.0, eta_s=1.0)
    body += say(event="warning", message="plate has no colour space tag")
    body += say(event="progress", frame=2, done=2, total=2, fps=1.0, eta_s=0.0)
    body += say(event="done", done=2, total=2, outputs=["a.0001.exr", "a.0002.exr"])
    process, code = run_to_end(fake_python(tmp_path, body), job_file(tmp_path))
    assert code == 0 and process.failure(code) is None
    assert process.state.done == 2 and process.state.warnings == ["plate has no colour space tag"]


def test_engine_error_event_becomes_one_message(tmp_path: Path) -> None:
    body = say(event="error", error={"type": "InputError", "message": "missing frames 1003-1005"})
    body += 'print("rvm-vfx: error", file=sys.stderr)\nsys.exit(2)\n'
    process, code = run_to_end(fake_python(tmp_path, body), job_file(tmp_path))
    assert code == 2
    assert process.failure(code) == "InputError: missing frames 1003-1005"


def test_crash_reports_the_exception_line_not_the_traceback(tmp_path: Path) -> None:
    body = say(event="start", total=2) + "raise MemoryError('CUDA out of memory. Tried to allocate 2 GiB')\n"
    process, code = run_to_end(fake_python(tmp_path, body), job_file(tmp_path))
    assert code == 1
    assert process.failure(code) == (
        "the engine failed (exit code 1): MemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    )
    assert any(line.startswith("Traceback") for line in process.stderr_tail)  # kept for the console only


def test_python_without_rvm_vfx_is_explained(tmp_path: Path) -> None:
    body = 'print("/x/python: No module named rvm_vfx", file=sys.stderr)\nsys.exit(1)\n'
    python = fake_python(tmp_path, body)
    process, code = run_to_end(python, job_file(tmp_path))
    assert process.failure(code) == (
        f"the engine Python {python} has no rvm-vfx installed; install it into that environment (pip install "
        "rvm-vfx) or point Preferences > Add-ons > RVM Matte > Engine Python at one that has it"
    )


def test_missing_dependency_is_explained(tmp_path: Path) -> None:
    body = say(event="error", error={"type": "ModuleNotFoundError", "message": "No module named 'torch'"})
    process, code = run_to_end(fake_python(tmp_path, body + "sys.exit(1)\n"), job_file(tmp_path))
    assert "lacks a package rvm-vfx needs (No module named 'torch')" in process.failure(code)


def test_exit_zero_without_done_is_a_failure(tmp_path: Path) -> None:
    process, code = run_to_end(fake_python(tmp_path, say(event="start", total=2)), job_file(tmp_path))
    assert process.failure(code) == "the engine exited without reporting that it finished"


def test_cancel_sends_sigterm_and_the_engine_stops_cleanly(tmp_path: Path) -> None:
    body = "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    body += say(event="start", total=3) + say(event="progress", frame=1, done=1, total=3, fps=1.0, eta_s=2.0)
    body += "signal.sigwait({signal.SIGTERM})\n"
    body += say(event="cancelled", done=1, total=3, outputs=["a.0001.exr"], stopped=True) + "sys.exit(1)\n"
    process = engine.EngineProcess(fake_python(tmp_path, body), job_file(tmp_path))
    process.start()
    while process.state.done < 1:
        assert process.events(timeout=10.0), "the fake engine went quiet"
    assert process.poll() is None  # still running: it waits for the signal
    process.cancel()
    code = process.wait()
    assert code == 1 and process.cancel_requested
    assert process.state.stopped and not process.state.finished and process.state.done == 1


def test_engine_runs_outside_blenders_working_folder(tmp_path: Path) -> None:
    """``-m`` puts the cwd on sys.path: a checkout in Blender's cwd must not shadow the installed engine."""
    (tmp_path / "jobs").mkdir()
    body = "import os\n" + 'print(json.dumps({"event": "done", "cwd": os.getcwd()}), flush=True)\n'
    process = engine.EngineProcess(fake_python(tmp_path, body), job_file(tmp_path / "jobs"))
    process.start()
    events = []
    while process.poll() is None:
        events += process.events(timeout=10.0)
    assert events[0]["cwd"] == str(tmp_path / "jobs")


# ------------------------------------------------------------------------------------------ the real CLI


def test_protocol_matches_the_real_engine(tmp_path: Path) -> None:
    """The real ``rvm-vfx render --progress json``: an error as an event, with its exit code."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": str(tmp_path / "plate.####.png"), "output": str(tmp_path / "o.####.exr"),
                               "checkpoint": str(TFJS_MODEL)}))  # fmt: skip
    process, code = run_to_end(sys.executable, str(job))
    assert code == 2
    assert process.state.error_type is not None and process.state.error_type.endswith("Error")
    assert process.failure(code).startswith(f"{process.state.error_type}: ")
    assert "plate.####.png" in process.failure(code)
