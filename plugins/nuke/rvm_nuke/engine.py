"""Running the rvm-vfx engine as a subprocess and following its JSON progress lines, without Nuke.

torch cannot live inside Nuke's Python, so the engine runs in its own environment and talks back
through one JSON object per line on stdout (``rvm-vfx render JOB.json --progress json``); the protocol,
the command's arguments and the temporary frame names are the vendored contract's (``vendor.rvm_spec``). This module
starts it, turns its lines into events, stops it when the artist cancels (SIGTERM: the engine finishes
the frame in flight, which it writes atomically; a kill after a timeout, then its hidden temporary
files are removed) and reduces the outcome to one message an artist can act on.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .vendor.rvm_spec.names import parse_temporary_frame_name
from .vendor.rvm_spec.progress import (
    CANCELLED,
    CUT,
    DONE,
    ERROR,
    PROGRESS,
    START,
    TRAIN,
    VALIDATION,
    WARNING,
    Event,
    parse_line,
    render_arguments,
)
from .vendor.rvm_spec.progress import event as protocol_event

__all__ = [
    "EngineResult",
    "check_engine",
    "engine_command",
    "engine_launcher",
    "render_command",
    "engine_environment",
    "progress_text",
    "run_engine",
    "run_frames",
    "stop_all",
]

# Variables Nuke sets for its own interpreter; inherited, they would make the engine's (different)
# Python load Nuke's standard library and site-packages.
_NUKE_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE")

#: How long a cancelled engine may take to finish its frame in flight before it is killed.
STOP_TIMEOUT_S = 60.0

#: How long the check that an engine answers may take (a cold interpreter on a network share is slow).
CHECK_TIMEOUT_S = 60.0

_HOW_TO_SET = (
    "Set 'engine Python' (Preferences > RVM, or the node's knob) to the python of the environment where rvm-vfx "
    "is installed, or set $RVM_VFX_PYTHON."
)


class EngineNotFound(Exception):
    """The engine cannot be started as configured; the message says what to fix and where."""


def engine_launcher(python: str | None, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """How to start the engine: ``<python> -m rvm_vfx``, else the ``rvm-vfx`` console script on PATH.

    The PATH fallback is how a studio that installs the engine centrally would expose it. Resolved
    before any work starts, so a missing engine is reported before a long precomp, not after.
    """
    if python:
        return [python, "-m", "rvm_vfx"]
    script = which("rvm-vfx")
    if script:
        return [script]
    raise EngineNotFound(f"Cannot find the rvm-vfx engine. {_HOW_TO_SET}")


# Launchers that answered as the engine, with its version: checked once per Nuke session.
_CHECKED: dict[tuple[str, ...], str] = {}
_VERSION = re.compile(r"^rvm-vfx (?P<version>\S+)\s*$")


def check_engine(
    launcher: list[str],
    env: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> str:
    """The engine's version, after making sure the launcher exists, runs and is rvm-vfx.

    A typo in 'engine Python' would otherwise surface only when the render starts, after a precomp that
    may have taken an hour. A working engine is remembered; a broken one is asked again next time.
    """
    key = tuple(launcher)
    if key in _CHECKED:
        return _CHECKED[key]
    program = launcher[0]
    what = f"engine Python {program}" if launcher[1:3] == ["-m", "rvm_vfx"] else f"engine {program}"
    if not os.path.isfile(program):
        raise EngineNotFound(f"{what} does not exist. {_HOW_TO_SET}")
    if not os.access(program, os.X_OK):
        raise EngineNotFound(f"{what} is not executable. {_HOW_TO_SET}")
    try:
        answer = run(
            [*launcher, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=dict(env) if env is not None else None,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise EngineNotFound(f"{what} did not answer within {timeout_s:.0f} s. {_HOW_TO_SET}") from None
    except OSError as exc:
        raise EngineNotFound(f"{what} cannot be started ({exc.strerror or exc}). {_HOW_TO_SET}") from None
    detail = last_error_line(answer.stderr.splitlines())
    if answer.returncode != 0 and "No module named rvm_vfx" in answer.stderr:
        raise EngineNotFound(
            f"{what} has no rvm-vfx installed ({detail}). Install it there (pip install rvm-vfx), or point "
            "'engine Python' at the environment that has it."
        )
    m = _VERSION.match(answer.stdout.strip())
    if answer.returncode != 0 or m is None:
        said = detail or answer.stdout.strip() or f"exit code {answer.returncode}"
        raise EngineNotFound(f"{what} did not answer as rvm-vfx ({said!r}). {_HOW_TO_SET}")
    _CHECKED[key] = m.group("version")
    return _CHECKED[key]


def render_command(launcher: list[str], job_path: str) -> list[str]:
    return [*launcher, *render_arguments(job_path)]


def engine_command(python: str | None, job_path: str, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The command line of a render: ``<python> -m rvm_vfx render JOB --progress json``."""
    return render_command(engine_launcher(python, which), job_path)


def engine_environment(base: Mapping[str, str], ocio: str | None = None) -> dict[str, str]:
    """The engine's environment: Nuke's, minus the variables that point Python at Nuke's own libraries."""
    env = {k: v for k, v in base.items() if k not in _NUKE_PYTHON_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    if ocio:
        env["OCIO"] = ocio
    return env


# ----------------------------------------------------------------------------------------- progress


def progress_percent(event: Event) -> int | None:
    fraction = event.fraction
    return None if fraction is None else int(fraction * 100)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(event: Event) -> str:
    """A progress line as an artist reads it: ``frame 1003 (3 of 10), 2.5 fps, about 3 s left``.

    Events of another stage than the engine's own render (the precomp) say which: ``precomp: frame 3 (...)``.
    """
    stage = event.fields.get("stage")
    text = _event_text(event)
    return f"{stage}: {text}" if stage else text


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def _event_text(event: Event) -> str:
    kind, done, total = event.kind, _shown(event.done), _shown(event.total)
    if kind == START:
        return f"starting: {total} frames"
    if kind == PROGRESS:
        text = f"frame {_shown(event.frame)} ({done} of {total})"
        fps = event.fps
        if fps is not None and fps > 0:
            text += f", {fps:.2f} fps" if fps < 10 else f", {fps:.1f} fps"
        eta = event.eta_s
        if eta is not None and eta >= 0:
            text += f", about {_duration(eta)} left"
        return text
    if kind == TRAIN:  # a fine-tuning step: rvm-vfx finetune
        loss = event.loss
        text = f"step {_shown(event.iteration)} of {total}" + (f", loss {loss:.4f}" if loss is not None else "")
        eta = event.eta_s
        return text + (f", about {_duration(eta)} left" if eta is not None and eta >= 0 else "")
    if kind == VALIDATION:
        fields = event.fields
        return (
            f"held-out keyframe {_shown(fields.get('keyframe'))}: MAD {_shown(fields.get('mad_before'))} "
            f"before, {_shown(fields.get('mad_after'))} after"
        )
    if kind == WARNING:
        return f"warning: {event.message}"
    if kind == CUT:
        return f"cut at frame {_shown(event.frame)}: shot {_shown(event.shot)} starts (memory reset)"
    if kind == DONE:
        return f"done: {done} frames"
    if kind == CANCELLED:
        return f"stopped after {done} of {total} frames"
    if kind == ERROR:
        return event.error_message
    return kind


# ------------------------------------------------------------------------------------------ outcome


@dataclass
class EngineResult:
    """How a render ended: ``done``, ``cancelled`` or ``error`` (with the message to show)."""

    status: str
    returncode: int | None = None
    message: str = ""
    error_type: str = ""
    done: int = 0
    total: int = 0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    killed: bool = False
    removed_temporaries: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "done"


def last_error_line(stderr_lines: Iterable[str]) -> str:
    """The line of a crash worth showing: a traceback's last line names the exception and its message."""
    lines = [line.rstrip() for line in stderr_lines if line.strip()]
    for line in reversed(lines):
        if not line.startswith((" ", "\t", "Traceback", "During handling", "The above exception")):
            return line.strip()
    return lines[-1].strip() if lines else ""


def classify(
    returncode: int | None,
    events: Iterable[Event],
    cancel_requested: bool,
    stderr_lines: Iterable[str] = (),
) -> EngineResult:
    """Reduce an engine run to one outcome; an error message never contains a traceback."""
    result = EngineResult(status="error", returncode=returncode)
    failure = None
    finished = False
    stopped = False
    for item in events:
        if item.kind in (START, PROGRESS, DONE, CANCELLED):
            result.total = item.total or result.total
            result.done = item.done or result.done
        if item.kind == WARNING:
            result.warnings.append(item.message)
        elif item.kind == DONE:
            finished = True
            result.outputs = item.outputs
        elif item.kind == CANCELLED:
            stopped = True
        elif item.kind == ERROR:
            failure = item
    if failure is not None:
        result.error_type = failure.error_type
        result.message = failure.error_message
        return result
    if cancel_requested or stopped:
        result.status = "cancelled"
        result.message = f"stopped after {result.done} of {result.total} frames"
        return result
    if returncode == 0:
        result.status = "done"
        if not finished:
            result.warnings.append("the engine exited without reporting 'done'")
        return result
    detail = last_error_line(stderr_lines)
    result.message = f"the engine stopped with exit code {returncode}" + (f": {detail}" if detail else "")
    return result


# -------------------------------------------------------------------------------------------- running


def remove_temporaries(folders: Iterable[str], pid: int) -> list[str]:
    """Delete the hidden half-written frames a killed engine (process ``pid``) left behind."""
    removed = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            temporary = parse_temporary_frame_name(name)
            if temporary is not None and temporary[1] == pid:
                path = os.path.join(folder, name)
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError:
                    pass
    return removed


def request_stop(proc: subprocess.Popen) -> None:
    """Ask the engine to stop after its frame in flight (SIGTERM); Windows has no such signal: terminate."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            proc.terminate()
        else:
            proc.send_signal(signal.SIGTERM)
    except OSError:
        pass


_EOF = object()

# Engines running now (pid -> process and output folders), so that closing the script or quitting Nuke can
# stop them: a subprocess outlives its parent otherwise, and would go on filling the disk and the GPU.
_LIVE: dict[int, tuple[subprocess.Popen, list[str]]] = {}
_STOPPED: set[int] = set()
_LIVE_LOCK = threading.Lock()
_HOST_STOP_MESSAGE = "stopped: Nuke closed the script"


def stop_all() -> list[int]:
    """Kill every running engine now and remove the frames it was writing; returns their pids.

    Called when the script closes or Nuke quits, when there is no time to let a frame finish: frames are
    written under temporary names and renamed, so a kill leaves finished frames and no partial one.
    """
    with _LIVE_LOCK:
        running = list(_LIVE.items())
        _STOPPED.update(pid for pid, _ in running)
    for pid, (proc, output_dirs) in running:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        remove_temporaries(output_dirs, pid)
    return [pid for pid, _ in running]


def _pump(stream: Any, sink: Callable[[str], None], done: Callable[[], None] | None = None) -> None:
    try:
        for line in iter(stream.readline, ""):
            sink(line)
    finally:
        stream.close()
        if done is not None:
            done()


def run_engine(
    command: list[str],
    *,
    on_event: Callable[[Event], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    env: Mapping[str, str] | None = None,
    output_dirs: Iterable[str] = (),
    poll_s: float = 0.1,
    stop_timeout_s: float = STOP_TIMEOUT_S,
) -> EngineResult:
    """Run the engine to the end, calling ``on_event`` for each progress event as it arrives.

    ``is_cancelled`` is polled at least every ``poll_s`` seconds (even while a frame takes long), so
    Cancel in Nuke's progress dialog answers promptly. Raises nothing for engine failures: they come
    back as an ``EngineResult`` with ``status == "error"``.
    """
    output_dirs = list(output_dirs)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        return EngineResult(status="error", message=f"cannot start the engine ({command[0]}): {exc.strerror or exc}")
    with _LIVE_LOCK:
        _LIVE[proc.pid] = (proc, output_dirs)
    try:
        result = _follow(proc, on_event, is_cancelled, poll_s, stop_timeout_s)
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)
            stopped_by_host = proc.pid in _STOPPED
            _STOPPED.discard(proc.pid)
    if stopped_by_host:
        result.status, result.message, result.killed = "cancelled", _HOST_STOP_MESSAGE, True
    if not result.ok:
        result.removed_temporaries = remove_temporaries(output_dirs, proc.pid)
    return result


def _follow(
    proc: subprocess.Popen,
    on_event: Callable[[Event], None] | None,
    is_cancelled: Callable[[], bool] | None,
    poll_s: float,
    stop_timeout_s: float,
) -> EngineResult:
    """Read the engine's lines until it ends, asking it to stop when the artist cancels."""

    lines: queue.Queue = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=200)
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, lines.put, lambda: lines.put(_EOF)), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, stderr_tail.append), daemon=True),
    ]
    for reader in readers:
        reader.start()

    events: list[Event] = []
    cancel_requested = False
    killed = False
    deadline: float | None = None
    try:
        while True:
            if not cancel_requested and is_cancelled is not None and is_cancelled():
                cancel_requested = True
                request_stop(proc)
                deadline = time.monotonic() + stop_timeout_s
            if deadline is not None and not killed and time.monotonic() > deadline and proc.poll() is None:
                proc.kill()
                killed = True
            try:
                item = lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is _EOF:
                break
            received = parse_line(item)
            if received is None:
                continue
            events.append(received)
            if on_event is not None:
                on_event(received)
    except BaseException:
        # The caller is going away (an exception in on_event, Nuke shutting down): never leave an orphan.
        proc.kill()
        proc.wait()
        raise
    try:
        returncode = proc.wait(timeout=stop_timeout_s)
    except subprocess.TimeoutExpired:
        # stdout closed but the process lingers (a hung interpreter shutdown): it has nothing left to say.
        proc.kill()
        killed = True
        returncode = proc.wait()
    for reader in readers:
        reader.join()

    result = classify(returncode, events, cancel_requested, stderr_tail)
    result.killed = killed
    return result


# ------------------------------------------------------------------------------------------ precomp


def _staged(kind: str, stage: str, **fields: Any) -> Event:
    """An event of the engine's protocol (checked as the engine's are), marked with the stage it is from."""
    sent = protocol_event(kind, **fields)
    return Event(sent.pop("event"), {**sent, "stage": stage})


def run_frames(
    frames: list[int],
    render_frame: Callable[[int], str | None],
    *,
    on_event: Callable[[Event], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    stage: str = "precomp",
) -> EngineResult:
    """Render ``frames`` one at a time with ``render_frame`` (None: done; a string: why it failed).

    This is how the precomp runs off Nuke's main thread: each frame is one short call that Nuke runs on
    its main thread, and between frames Nuke stays responsive, shows progress and can cancel. Progress is
    reported with the engine's own events (marked with ``stage``), so one dialog follows both.
    """
    total = len(frames)
    emit = on_event or (lambda event: None)
    emit(_staged(START, stage, total=total))
    done = 0
    for frame in frames:
        if is_cancelled is not None and is_cancelled():
            return EngineResult(
                status="cancelled", message=f"{stage} stopped after {done} of {total} frames", done=done, total=total
            )
        problem = render_frame(frame)
        if problem:
            return EngineResult(status="error", message=f"frame {frame}: {problem}", done=done, total=total)
        done += 1
        emit(_staged(PROGRESS, stage, frame=frame, done=done, total=total))
    emit(_staged(DONE, stage, done=done, total=total))
    return EngineResult(status="done", done=done, total=total)
