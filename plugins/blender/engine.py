"""The engine as a subprocess: start it, follow its JSON progress, stop it, explain how it ended.

torch never enters Blender's Python: the add-on runs ``<engine python> -m rvm_vfx render JOB.json
--progress json`` from an environment the artist points it at. The command's arguments and the progress
protocol (event names and fields, how a line is read) are the vendored contract's (``vendor.rvm_spec.progress``).
Reader threads turn the engine's stdout lines into events on a queue so that Blender's main thread only
ever drains that queue and never blocks on a pipe. Nothing here imports ``bpy``, so it is tested with
the plugins' fake engine in the engine's own test suite.
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .vendor.rvm_spec.progress import (
    CANCELLED,
    DONE,
    ERROR,
    PROGRESS,
    START,
    WARNING,
    Event,
    parse_line,
    render_arguments,
)

__all__ = ["EngineError", "EngineProcess", "RunState", "check_engine_python", "engine_command"]

# A cancelled engine finishes its current frame first; past this it is killed so Blender never hangs.
CANCEL_GRACE_S = 30.0
_STDERR_LINES = 40

T = TypeVar("T")


class EngineError(RuntimeError):
    """Why the engine could not be run or did not finish; the message is shown to the artist as it is."""


def check_engine_python(path: str) -> str:
    """The engine's interpreter as an absolute path, or an EngineError that says how to set it up."""
    how = (
        "set it in Edit > Preferences > Add-ons > RVM Matte > Engine Python: the python of an environment "
        "with rvm-vfx and torch installed (for example /opt/rvm-vfx/.venv/bin/python)"
    )
    if not path or not path.strip():
        raise EngineError(f"no engine Python set; {how}")
    path = os.path.abspath(os.path.expanduser(path.strip()))
    if os.path.isdir(path):
        for candidate in ("bin/python", "bin/python3", "Scripts/python.exe"):
            if os.path.isfile(os.path.join(path, candidate)):
                return os.path.join(path, candidate)
        raise EngineError(f"engine Python {path} is a folder with no bin/python in it; {how}")
    if not os.path.isfile(path):
        raise EngineError(f"engine Python {path} does not exist; {how}")
    if not os.access(path, os.X_OK):
        raise EngineError(f"engine Python {path} is not executable; {how}")
    return path


def engine_command(python: str, job_path: str) -> list[str]:
    return [python, "-m", "rvm_vfx", *render_arguments(job_path)]


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _known(value: T | None, before: T) -> T:
    """An event's value, or what was known before when the event does not say."""
    return before if value is None else value


@dataclass
class RunState:
    """What the engine has said so far; the operator's progress bar and reports read it."""

    total: int = 0
    done: int = 0
    frame: int | None = None
    fps: float = 0.0
    eta_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error_type: str | None = None
    error_message: str | None = None
    finished: bool = False
    stopped: bool = False

    def apply(self, event: Event) -> None:
        kind = event.kind
        if kind == START:
            self.total = event.total or 0
        elif kind == PROGRESS:
            self.done = _known(event.done, self.done)
            self.total = event.total or self.total
            self.frame = _known(event.frame, self.frame)
            self.fps = event.fps or 0.0
            self.eta_s = event.eta_s
        elif kind == WARNING:
            self.warnings.append(event.message)
        elif kind in (DONE, CANCELLED):
            # "cancelled": the engine was asked to stop (SIGTERM) and did so after a whole frame.
            self.finished = kind == DONE
            self.stopped = kind == CANCELLED or event.fields.get("stopped") is True
            self.done = _known(event.done, self.done)
            self.total = event.total or self.total
            self.outputs = event.outputs
        elif kind == ERROR:
            self.error_type = event.error_type or "Error"
            self.error_message = event.error_message

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def status_line(self) -> str:
        if not self.total:
            return "RVM Matte: starting the engine (loading the model)…  Esc to cancel"
        parts = [f"RVM Matte: {self.done}/{self.total} frames"]
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.fps:
            parts.append(f"{self.fps:.2f} fps")
        if self.eta_s is not None and self.done < self.total:
            parts.append(f"ETA {_format_eta(self.eta_s)}")
        return " · ".join(parts) + "  Esc to cancel"


class EngineProcess:
    """One engine run. ``events()`` is non-blocking by default and safe to call from Blender's timer."""

    def __init__(self, python: str, job_path: str, *, env: dict[str, str] | None = None) -> None:
        self.python = check_engine_python(python)
        self.job_path = os.path.abspath(job_path)
        self.command = engine_command(self.python, self.job_path)
        self.state = RunState()
        self.cancel_requested = False
        self._env = env
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._stdout_open = False

    def start(self) -> None:
        # A new session on POSIX so that Blender's own Ctrl-C and the engine's do not reach each other.
        kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        env = dict(os.environ if self._env is None else self._env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PYTHONIOENCODING"] = "utf-8"
        # Blender's own Python settings must not leak into the engine's interpreter.
        for key in ("PYTHONHOME", "PYTHONPATH"):
            env.pop(key, None)
        try:
            self._proc = subprocess.Popen(
                self.command,
                # Not Blender's working folder: `-m` puts the cwd on sys.path, and a stray rvm_vfx
                # checkout there would shadow the engine's installed one.
                cwd=os.path.dirname(self.job_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=env,
                **kwargs,
            )
        except OSError as exc:
            raise EngineError(f"could not start the engine Python {self.python}: {exc.strerror or exc}") from exc
        self._stdout_open = True
        for target, stream in ((self._read_stdout, self._proc.stdout), (self._read_stderr, self._proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True, name="rvm-engine-reader")
            thread.start()
            self._threads.append(thread)

    def _read_stdout(self, stream: Any) -> None:
        for line in stream:
            event = parse_line(line)
            if event is not None:
                self._events.put(event)
        stream.close()
        self._events.put(None)  # end of output: the process is exiting

    def _read_stderr(self, stream: Any) -> None:
        for line in stream:
            if line.strip():
                self._stderr.append(line.rstrip())
        stream.close()

    # ------------------------------------------------------------------ driving

    def events(self, timeout: float = 0.0) -> list[Event]:
        """Drain pending events into ``state``; with a timeout, wait that long for the first one."""
        drained: list[Event] = []
        block = timeout > 0
        while self._stdout_open:
            try:
                item = self._events.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                break
            block = False
            if item is None:
                self._stdout_open = False
                break
            self.state.apply(item)
            drained.append(item)
        return drained

    def poll(self) -> int | None:
        """The exit code once the process has exited and all its output has been read, else None."""
        if self._proc is None:
            raise EngineError("the engine was never started")
        if self._stdout_open:
            return None
        code = self._proc.poll()
        if code is not None:
            self._join_readers()
        return code

    def wait(self) -> int:
        """Block until the engine exits (execute()'s synchronous path), applying its events as they come."""
        if self._proc is None:
            raise EngineError("the engine was never started")
        while self._stdout_open:
            self.events(timeout=0.5)
        code = self._proc.wait()
        self._join_readers()
        return code

    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join()

    def cancel(self) -> None:
        """Ask the engine to stop after its current frame (SIGTERM; frames already written stay whole)."""
        self.cancel_requested = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    # ------------------------------------------------------------------ the outcome

    def failure(self, code: int) -> str | None:
        """None when the run succeeded, else one message for the artist (never a traceback)."""
        if code == 0 and self.state.finished and self.state.error_message is None:
            return None
        if self.state.error_type in ("ModuleNotFoundError", "ImportError"):
            return (
                f"the engine Python {self.python} lacks a package rvm-vfx needs ({self.state.error_message}); "
                "reinstall rvm-vfx with its dependencies into that environment"
            )
        if self.state.error_message:
            return f"{self.state.error_type}: {self.state.error_message}"
        tail = self.stderr_tail
        text = "\n".join(tail)
        if "No module named rvm_vfx" in text:
            return (
                f"the engine Python {self.python} has no rvm-vfx installed; install it into that environment "
                "(pip install rvm-vfx) or point Preferences > Add-ons > RVM Matte > Engine Python at one that has it"
            )
        if code == 0:
            return "the engine exited without reporting that it finished"
        # The last line of a traceback is the exception itself: the part an artist can act on.
        last = next((line.strip() for line in reversed(tail) if line.strip()), "")
        detail = f": {last}" if last else ""
        return f"the engine failed (exit code {code}){detail}"
