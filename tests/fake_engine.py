"""A stand-in for ``python -m rvm_vfx render JOB --progress json`` with scripted behaviours, for the plugins' tests.

Run as ``python fake_engine.py MODE render JOB.json --progress json``; whatever stands between the mode
and ``render`` is ignored, so a wrapper named like an engine Python (``exec python fake_engine.py MODE "$@"``)
can be started as ``<python> -m rvm_vfx render JOB.json --progress json``. It speaks the engine's protocol
through the contract itself (``rvm_vfx.spec``: its events are built with ``event()`` and written by
``EventWriter``, its exit codes are ``exits``'), so a change to the protocol breaks the fake as it would
break the engine, and the plugins' tests see it. It reads the job's frame range and names its frames and
their temporary files with the contract's functions too, the way the engine does (hidden temporary name,
then rename), so a plugin's handling of success, errors, crashes and cancels can be tested without torch.
Modes:

* ``ok``: every frame, with a stray print and a warning mixed in; exit 0.
* ``error``: an InputError event; exit 2.
* ``crash``: a Python traceback on stderr, no event; exit 1.
* ``wait``: the first frame, then waits for SIGTERM, reports ``cancelled`` and exits 1 (the real
  engine's behaviour: finish the frame in flight, stop).
* ``stubborn``: ignores SIGTERM; leaves a half-written temporary frame and never ends (must be killed).

``python fake_engine.py MODE finetune PLATE KEYFRAMES OUT.pth [flags] --progress json`` stands in for the training:
``ok`` reports ``--iterations`` steps (3 by default) with a falling loss and a leave-one-out figure, writes
OUT.pth and OUT.json and reports ``done`` with both; ``wait`` reports one step, waits for SIGTERM, writes the
checkpoint (as the engine keeps its best weights) and reports ``cancelled``; ``error`` and ``crash`` as for a
render. Its arguments are kept in ``fake-finetune.json`` beside OUT.pth, for a test to check the command.

``python fake_engine.py MODE --version`` answers like the engine (``rvm-vfx 0.1.0``), as the plugins'
check that an engine is usable expects. Each run writes its pid to ``fake-engine.pid`` beside the output,
so a test can make sure that no fake outlives it (``kill_fake_engines``). ``engine_python`` makes the
wrapper named like an engine's Python that the Blender add-on starts.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import sys
from pathlib import Path

from rvm_vfx.spec import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EventWriter, InputError, format_frame, parse_frames
from rvm_vfx.spec.names import temporary_frame_path
from rvm_vfx.spec.progress import (
    CANCELLED,
    DONE,
    PROGRESS,
    START,
    TRAIN,
    VALIDATION,
    WARNING,
    error_event,
    event,
)

#: The temporary name's random part, fixed so that a test can name the file a killed fake leaves behind.
TOKEN = "0123abcd"
PID_FILE = "fake-engine.pid"

send = EventWriter(sys.stdout)


# ------------------------------------------------------------------------------------ for the tests


def engine_python(folder: Path, mode: str) -> Path:
    """``<folder>/bin/python``: an executable that stands where an engine's Python would and runs this fake.

    The Blender add-on starts ``<engine python> -m rvm_vfx render JOB --progress json``; the wrapper passes
    those arguments on after ``mode``, which the fake ignores up to ``render``.
    """
    path = folder / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {shlex.quote(mode)} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def kill_fake_engines(folder: Path) -> list[int]:
    """After a test: kill any fake engine it started under ``folder`` and left running (a failed test)."""
    killed = []
    for pid_file in folder.rglob(PID_FILE):
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


# ------------------------------------------------------------------------------------ the fake


def temporary(path: str) -> str:
    return temporary_frame_path(path, token=TOKEN)


def write_frame(path: str) -> None:
    tmp = temporary(path)
    with open(tmp, "wb") as fh:
        fh.write(b"frame")
    os.replace(tmp, path)


def stop_requested() -> bool:
    """Whether a SIGTERM is waiting (it is blocked, so it waits until asked for: no handler, no race)."""
    return signal.SIGTERM in signal.sigpending()


FINETUNE_RECORD = "fake-finetune.json"


def finetune(mode: str, arguments: list[str]) -> int:
    """The training stand-in: steps and a loss, then OUT.pth and OUT.json, as ``rvm-vfx finetune`` reports them."""
    plate, keyframes, out = arguments[1:4]
    flags = arguments[4:]
    iterations = int(flags[flags.index("--iterations") + 1]) if "--iterations" in flags else 3
    folder = os.path.dirname(out)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, PID_FILE), "w") as fh:
        fh.write(str(os.getpid()))
    with open(os.path.join(folder, FINETUNE_RECORD), "w") as fh:
        json.dump({"arguments": arguments, "plate": plate, "keyframes": keyframes, "out": out}, fh)
    sidecar = os.path.splitext(out)[0] + ".json"
    if mode == "error":
        send(error_event(InputError(f"{keyframes}: keyframe 1002 is 64x48; the plate is 96x64")))
        return EXIT_BAD_INPUT
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
        return EXIT_FAILED
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    send(event(START, total=iterations, output=out))
    done = 0
    for step in range(1, iterations + 1):
        if stop_requested():
            break
        done = step
        send(event(TRAIN, iteration=step, total=iterations, loss=round(0.5 / step, 6), eta_s=float(iterations - step),
                   elapsed_s=0.1 * step, phase="train"))  # fmt: skip
        if mode == "wait" and step == 1:
            signal.sigwait({signal.SIGTERM})
            break
    with open(out, "wb") as fh:
        fh.write(b"trained weights")
    with open(sidecar, "w") as fh:
        json.dump({"iterations": {"done": done, "planned": iterations}}, fh)
    report = {"checkpoint": out, "sidecar": sidecar, "loss": round(0.5 / max(done, 1), 6)}
    if done < iterations:
        send(event(CANCELLED, done=done, total=iterations, stopped="stop", **report))
        return EXIT_FAILED
    send(event(VALIDATION, keyframe=1001, mad_before=12.5, mad_after=6.25))
    send(event(DONE, done=done, total=iterations, stopped=None, **report))
    return EXIT_OK


def main() -> int:
    mode, arguments = sys.argv[1], sys.argv[2:]
    if arguments[-1:] == ["--version"]:
        print("rvm-vfx 0.1.0")
        return EXIT_OK
    command = next(a for a in arguments if a in ("render", "finetune"))  # the subcommand: what precedes it is ignored
    if command == "finetune":
        return finetune(mode, arguments[arguments.index(command) :])
    job_path = arguments[arguments.index("render") + 1]
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    frames = parse_frames(job["frames"])
    output = job["output"]
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(os.path.join(os.path.dirname(output), PID_FILE), "w") as fh:
        fh.write(str(os.getpid()))

    if mode == "error":
        send(error_event(InputError(f"{job['input']}: missing frames 1002-1003")))
        return EXIT_BAD_INPUT
    if mode == "crash":
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "<string>", line 1, in <module>\n'
            "ModuleNotFoundError: No module named 'torch'\n"
        )
        return EXIT_FAILED

    # SIGTERM is held back and looked at between frames, as the engine finishes the frame in flight; the
    # stubborn fake ignores it (not blocked: Linux keeps a blocked signal pending even when it is ignored).
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    stopped = False
    total = len(frames)
    send(event(START, total=total, output=output, first=frames[0], last=frames[-1]))
    print("a stray print from a library", flush=True)
    done = 0
    for frame in frames:
        if stopped or stop_requested():
            send(event(CANCELLED, done=done, total=total, stopped=True))
            return EXIT_FAILED
        path = format_frame(output, frame)
        if mode == "stubborn" and done == 1:
            with open(temporary(path), "wb") as fh:
                fh.write(b"half a fr")
            while True:
                signal.pause()
        write_frame(path)
        done += 1
        send(event(PROGRESS, frame=frame, done=done, total=total, fps=2.5, eta_s=(total - done) / 2.5))
        if mode == "ok" and done == 1:
            send(event(WARNING, message="3 NaN/Inf plate values were replaced with 0"))
        if mode == "wait" and done == 1:
            signal.sigwait({signal.SIGTERM})
            stopped = True
    outputs = [format_frame(output, f) for f in frames]
    send(event(DONE, done=done, total=total, outputs=outputs, elapsed_s=0.1))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
