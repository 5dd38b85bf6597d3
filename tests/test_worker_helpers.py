"""Helpers for the render worker's tests: small real plates, a models dir, worker processes, polling.

No test lives here; the worker test modules import these. Everything waits on files and status,
never on time: ``wait_for`` polls a condition until a generous deadline (this suite shares a
2-core machine with others, so deadlines are about catching hangs, not measuring speed).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import pytest

from .conftest import ROOT, TFJS_MODEL
from .plates import portrait_clip

BACKGROUND = "rw_02.jpg"
DEADLINE_S = 120.0


# --------------------------------------------------------------------------- plates and models


def plate_frames(count: int, width: int = 96, height: int = 64, step: int = 2) -> list[np.ndarray]:
    """A real portrait sliding ``step`` px a frame over a real background (sRGB floats)."""
    return portrait_clip(count, width, height, step, background=BACKGROUND)[0]


def write_png(path: Path, pixels: np.ndarray) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], 3, "uint8")
    out = oiio.ImageOutput.create(str(path))
    assert out is not None and out.open(str(path), spec), oiio.geterror()
    assert out.write_image(pixels), out.geterror()
    out.close()


def make_plate(folder: Path, count: int, width: int = 96, height: int = 64, first: int = 1001) -> str:
    """Write ``plate.####.png`` frames into ``folder``; returns the pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(plate_frames(count, width, height)):
        write_png(folder / f"plate.{first + i:04d}.png", pixels)
    return str(folder / "plate.####.png")


def make_models_dir(folder: Path) -> Path:
    """A worker models dir holding the TF.js export as the folder ``rvm/``."""
    target = folder / "rvm"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "group1-shard1of1.bin"):
        shutil.copy2(TFJS_MODEL.parent / name, target / name)
    return folder


def read_alpha(path: Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    return buf.get_pixels(oiio.FLOAT)[..., -1]


def files_digest(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """(size, mtime_ns, bytes) of every file: to prove a plate was never touched."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Reference renders use the workers' thread count: convolutions sum in a thread-dependent order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference_render(input_pattern: str, output: Path, **job_fields: Any) -> Path:
    """The uninterrupted single-machine render the worker's results are compared with."""
    from rvm_vfx.job import Job
    from rvm_vfx.render import cached_model, render

    model, sha = cached_model(str(TFJS_MODEL))
    job = Job(
        input=input_pattern,
        output=str(output / "m.####.exr"),
        checkpoint=str(TFJS_MODEL),
        device="cpu",
        overwrite=True,
        **job_fields,
    )
    with torch_threads(1):
        render(job, model=model, checkpoint_sha256=sha)
    return output


# --------------------------------------------------------------------------- watch root


def drop_ticket(root: Path, name: str, ticket: dict[str, Any] | str) -> Path:
    """Write a ticket beside ``incoming/`` and rename it in: how the plugins deliver them."""
    text = ticket if isinstance(ticket, str) else json.dumps(ticket)
    tmp = root / f".{name}.json.tmp"
    tmp.write_text(text)
    dest = root / "incoming" / f"{name}.json"
    os.rename(tmp, dest)
    return dest


def jobs_in(root: Path, area: str, prefix: str = "") -> list[Path]:
    folder = root / area
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S, procs: tuple = (), interval: float = 0.02
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` (and dead workers)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.returncode_now() is not None and not proc.expect_exit:
                raise AssertionError(
                    f"worker {proc.name} exited ({proc.returncode_now()}) waiting for {what}:\n{proc.log_tail()}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(p.log_tail() for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval)


def wait_for_job(root: Path, prefix: str, areas: tuple[str, ...] = ("done", "failed"), procs: tuple = ()) -> Path:
    def find() -> Path | None:
        for area in areas:
            found = jobs_in(root, area, prefix + "-")
            if found:
                return found[0]
        return None

    return wait_for(find, f"job {prefix} in {'/'.join(areas)}", procs=procs)


def status_of(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- worker processes


def farm_args(out: Path, plates: Path, models: Path, *extra: str) -> tuple[str, ...]:
    """The flags every test worker gets: where frames go, where plates may come from, the models dir."""
    return ("--output-root", str(out), "--allow-input-root", str(plates), "--models-dir", str(models), *extra)


class WorkerProcess:
    """``python -m render_worker watch ...`` as a real child process with its own log file."""

    def __init__(self, root: Path, name: str, *args: str, settings: dict[str, Any] | None = None) -> None:
        self.root = root
        self.name = name
        self.expect_exit = False
        options = {
            "--settle": 1.0,
            "--rescan-interval": 0.3,
            "--heartbeat-timeout": 3,
            "--snapshot-every": 4,
            "--torch-threads": 1,
            "--worker-id": name,
            **(settings or {}),
        }
        flat = [str(x) for kv in options.items() for x in kv]
        self.log_path = root.parent / f"{name}.stderr.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "render_worker", "watch", str(root), *args, *flat],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def returncode_now(self) -> int | None:
        return self.proc.poll()

    def wait_ready(self) -> None:
        """Until the worker announced itself idle (its observer is watching)."""

        def ready() -> bool:
            try:
                data = json.loads((self.root / "workers" / f"{self.name}.json").read_text())
            except (OSError, ValueError):
                return False
            return data.get("pid") == self.pid and data.get("state") in ("idle", "busy")

        wait_for(ready, f"worker {self.name} to start", procs=(self,))

    def kill9(self) -> None:
        self.expect_exit = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = DEADLINE_S) -> int:
        self.expect_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} ---\n" + "\n".join(text[-lines:])


# --------------------------------------------------------------------------- real full and read-only file systems


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. ``"2m"``) on ``folder``; skips the test where mounting is impossible.

    Whether mounting works is found by trying it (root in a container may still lack the capability).
    The lazy unmount in ``finally`` also detaches a mount that a failed test left files open on.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the injected-errno tests cover the logic")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True, timeout=30)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True, timeout=30)


def fill_up(mount: Path, leave: int = 0) -> Path:
    """Fill a file system with ``mount/filler.bin`` until the kernel says ENOSPC, then give ``leave`` bytes back."""
    filler = mount / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = b"\0" * (1 << 16)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
