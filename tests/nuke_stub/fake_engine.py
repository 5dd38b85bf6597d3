"""A stand-in for ``python -m rvm_vfx render JOB --progress json`` with scripted behaviours.

Run as ``python fake_engine.py MODE render JOB.json --progress json``. It speaks the engine's protocol
(one JSON object a line, exit 0/1/2) and writes its "frames" the way the engine does (hidden temporary
name, then rename), so the plugin's handling of success, errors, crashes and cancels can be tested
without torch. Modes:

* ``ok``: every frame, with a stray print and a warning mixed in; exit 0.
* ``error``: an InputError event; exit 2.
* ``crash``: a Python traceback on stderr, no event; exit 1.
* ``wait``: the first frame, then waits for SIGTERM, reports ``cancelled`` and exits 1 (the real
  engine's behaviour: finish the frame in flight, stop).
* ``stubborn``: ignores SIGTERM; leaves a half-written temporary frame and never ends (must be killed).

``python fake_engine.py MODE --version`` answers like the engine (``rvm-vfx 0.1.0``), as the plugin's
check that an engine is usable expects.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

stop = False


def on_term(signum, frame):
    global stop
    stop = True


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def frame_path(pattern, frame):
    return pattern.replace("####", f"{frame:04d}")


def temporary(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.0123abcd.tmp.exr")


def write_frame(path):
    tmp = temporary(path)
    with open(tmp, "wb") as fh:
        fh.write(b"frame")
    os.replace(tmp, path)


def main():
    if sys.argv[2:] == ["--version"]:
        print("rvm-vfx 0.1.0")
        return 0
    mode, _render, job_path = sys.argv[1:4]
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    first, last = (int(x) for x in job["frames"].split("-"))
    frames = list(range(first, last + 1))
    os.makedirs(os.path.dirname(job["output"]), exist_ok=True)
    with open(os.path.join(os.path.dirname(job["output"]), "fake-engine.pid"), "w") as fh:
        fh.write(str(os.getpid()))

    if mode == "error":
        emit(event="error", error={"type": "InputError", "message": f"{job['input']}: missing frames 1002-1003"})
        return 2
    if mode == "crash":
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "<string>", line 1, in <module>\n'
            "ModuleNotFoundError: No module named 'torch'\n"
        )
        return 1

    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else on_term)
    emit(event="start", total=len(frames), output=job["output"], first=first, last=last)
    print("a stray print from a library")
    sys.stdout.flush()
    done = 0
    for frame in frames:
        if stop:
            emit(event="cancelled", done=done, total=len(frames))
            return 1
        if mode == "stubborn" and done == 1:
            with open(temporary(frame_path(job["output"], frame)), "wb") as fh:
                fh.write(b"half a fr")
            while True:
                time.sleep(0.05)
        write_frame(frame_path(job["output"], frame))
        done += 1
        emit(event="progress", frame=frame, done=done, total=len(frames), fps=2.5, eta_s=(len(frames) - done) / 2.5)
        if mode == "ok" and done == 1:
            emit(event="warning", message="3 NaN/Inf plate values were replaced with 0")
        if mode in ("wait", "stubborn") and done == 1:
            while not stop and mode == "wait":
                time.sleep(0.05)
    outputs = [frame_path(job["output"], f) for f in frames]
    emit(event="done", done=done, total=len(frames), outputs=outputs, elapsed_s=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
