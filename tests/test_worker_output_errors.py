"""Outputs that cannot be written: the job fails naming the cause, and no half-written frame remains."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import rvm_vfx.frame_io
from render_worker.config import build_config
from render_worker.worker import Worker
from rvm_vfx.render import frame_is_whole

from .test_worker_helpers import (
    WorkerProcess,
    drop_ticket,
    farm_args,
    jobs_in,
    make_models_dir,
    make_plate,
    torch_threads,
    wait_for_job,
)


@pytest.fixture
def farm(tmp_path: Path) -> dict[str, Path]:
    plates = tmp_path / "plates"
    make_plate(plates / "shot", 6, 64, 48)
    return {
        "base": tmp_path,
        "plates": plates,
        "models": make_models_dir(tmp_path / "models"),
        "root": tmp_path / "root",
        "out": tmp_path / "out",
    }


def _in_process_worker(farm: dict[str, Path]) -> Worker:
    config = build_config(
        {
            "root": farm["root"],
            "output_root": farm["out"],
            "allow_input_roots": [farm["plates"]],
            "models_dir": farm["models"],
            "default_checkpoint": "rvm",
            "settle": 0.5,
        }
    )
    worker = Worker(config)
    worker.layout.ensure()
    return worker


def _assert_no_half_frames(folder: Path) -> list[str]:
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    assert [n for n in names if n.startswith(".")] == [], f"temporary files left: {names}"
    for name in names:
        assert frame_is_whole(str(folder / name)), f"{name} does not read back whole"
    return names


def test_injected_disk_full_fails_the_job_and_leaves_whole_frames_only(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = rvm_vfx.frame_io._write_exr_file
    calls = {"n": 0}

    def filling_disk(path: str, spec: object, pixels: object) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            return real_write(path, spec, pixels)
        with open(path, "wb") as handle:  # what a full disk leaves: the start of a file
            handle.write(b"v/1\x01" + b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(rvm_vfx.frame_io, "_write_exr_file", filling_disk)
    worker = _in_process_worker(farm)
    drop_ticket(farm["root"], "full", {"input": "shot/plate.####.png", "output": "full/m.####.exr", "device": "cpu"})
    with torch_threads(1):
        assert worker.step()
    [job] = jobs_in(farm["root"], "failed", "full-")
    report = json.loads((job / "report.json").read_text())
    assert "No space left on device" in report["reason"] and report["cause"] == "disk full"
    assert json.loads((job / "status.json").read_text())["state"] == "failed"
    assert _assert_no_half_frames(farm["out"] / "full") == ["m.1001.exr", "m.1002.exr"]


def test_output_folder_that_cannot_be_made_fails_the_job(farm: dict[str, Path]) -> None:
    farm["out"].mkdir(parents=True)
    (farm["out"] / "blocked").write_text("a file where the output folder should be")
    worker = _in_process_worker(farm)
    drop_ticket(farm["root"], "blocked", {"input": "shot/plate.####.png", "output": "blocked/m.####.exr"})
    assert worker.step()
    [job] = jobs_in(farm["root"], "failed", "blocked-")
    report = json.loads((job / "report.json").read_text())
    assert "cannot create output folder" in report["reason"] and report["cause"] == "output"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real file system that fills up after two frames."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC test covers the logic")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=30)


def test_real_full_file_system(farm: dict[str, Path], tiny_fs: Path) -> None:
    make_plate(farm["plates"] / "big", 8, 128, 96)  # ~100 KB a frame, uncompressed
    worker = WorkerProcess(
        farm["root"], "w-tiny", *farm_args(tiny_fs, farm["plates"], farm["models"], "--default-checkpoint", "rvm")
    )
    try:
        worker.wait_ready()
        drop_ticket(
            farm["root"],
            "tiny",
            {"input": "big/plate.####.png", "output": "tiny/m.####.exr", "device": "cpu", "compression": "none"},
        )
        job = wait_for_job(farm["root"], "tiny", procs=(worker,))
        assert worker.returncode_now() is None
    finally:
        worker.stop()
    assert job.parent.name == "failed"
    report = json.loads((job / "report.json").read_text())
    print("full file system:", report["reason"])
    assert report["cause"] == "disk full", report["reason"]
    assert "No space left on device" in report["reason"]
    written = _assert_no_half_frames(tiny_fs / "tiny")
    assert 0 < len(written) < 8 and written == [f"m.{1001 + i}.exr" for i in range(len(written))]
