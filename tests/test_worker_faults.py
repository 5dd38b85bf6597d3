"""Faults of the farm's storage and of what is dropped: read-only outputs, a full watch root, symlinked drops.

Each storage fault is met twice: on a real tmpfs (filled up, or remounted read-only) where this machine can
mount one, and with the errno injected, so that the logic is checked everywhere. The worker runs in this
process, one ``step`` (claim, render, file) at a time: nothing waits on a clock. A job "older than the
heartbeat timeout" is made by moving its files' mtimes back, not by waiting.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rvm_vfx.resume_state
from render_worker.config import build_config
from render_worker.layout import HEARTBEAT
from render_worker.worker import Worker
from rvm_vfx.render import frame_is_whole

from .test_snapshot_faults import TORCH_FULL_DISK, torch_save_on_a_full_disk
from .test_worker_helpers import (
    drop_ticket,
    files_digest,
    fill_up,
    jobs_in,
    make_models_dir,
    make_plate,
    mounted_tmpfs,
    remount_read_only,
    torch_threads,
)

FRAMES = 6
GOOD = {"input": "shot/plate.####.png", "device": "cpu"}
FREE_SPACE = re.compile(r"No space left on device: \d+ KiB free of \d+ KiB on the file system of /")


@pytest.fixture
def farm(tmp_path: Path) -> dict[str, Path]:
    plates = tmp_path / "plates"
    make_plate(plates / "shot", FRAMES, 64, 48)
    return {
        "plates": plates,
        "models": make_models_dir(tmp_path / "models"),
        "root": tmp_path / "root",
        "out": tmp_path / "out",
    }


def _worker(farm: dict[str, Path]) -> Worker:
    config = build_config(
        {
            "root": farm["root"],
            "output_root": farm["out"],
            "allow_input_roots": [farm["plates"]],
            "models_dir": farm["models"],
            "default_checkpoint": "rvm",
            "settle": 0.5,
            "heartbeat_timeout": 60.0,
        }
    )
    worker = Worker(config)
    worker.layout.ensure()
    farm["out"].mkdir(parents=True, exist_ok=True)
    return worker


def _step(worker: Worker) -> bool:
    """One pass of the watch loop: take over or claim one job, run it, file it."""
    with torch_threads(1):
        return worker.step()


def _age_out(job_dir: Path, worker: Worker) -> None:
    """Make a job look abandoned an hour ago, and let the worker's next step look for abandoned jobs."""
    old = time.time() - 3600
    for path in job_dir.iterdir():
        if path.name == HEARTBEAT or path.name.startswith("claim."):
            os.utime(path, (old, old))
    worker._next_takeover_scan = 0.0  # the scan is otherwise throttled to the rescan interval


def _report(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "report.json").read_text())


def _claims(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.iterdir() if p.name.startswith("claim."))


def _temporary_files(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*") if ".tmp" in p.name)


def _assert_good_ticket_renders(worker: Worker, farm: dict[str, Path], name: str) -> None:
    """The watcher is still alive and well: a good ticket dropped after the fault renders every frame."""
    drop_ticket(farm["root"], name, {**GOOD, "output": f"{name}/m.####.exr"})
    assert _step(worker)
    [job] = jobs_in(farm["root"], "done", f"{name}-")
    assert _report(job)["state"] == "done"
    written = sorted(os.listdir(farm["out"] / name))
    assert written == [f"m.{1001 + i}.exr" for i in range(FRAMES)]
    assert all(frame_is_whole(str(farm["out"] / name / n)) for n in written)


# --------------------------------------------------------------------------- read-only output (EROFS)


def _assert_failed_once_for_output(farm: dict[str, Path], worker: Worker, name: str) -> dict[str, Any]:
    [job] = jobs_in(farm["root"], "failed", f"{name}-")
    assert jobs_in(farm["root"], "active") == []
    assert _claims(job) == ["claim.0"]  # claimed once, never retaken
    report = _report(job)
    assert report["cause"] == "output", report["reason"]
    assert "Read-only file system" in report["reason"]
    worker._next_takeover_scan = 0.0
    assert not _step(worker)  # nothing left to retake
    return report


def test_real_read_only_output_mount_files_the_job_once(farm: dict[str, Path], tmp_path: Path) -> None:
    worker = _worker(farm)
    with mounted_tmpfs(farm["out"] / "ro", "1m") as mount:
        remount_read_only(mount)
        drop_ticket(farm["root"], "ro", {**GOOD, "output": "ro/shot/m.####.exr"})
        assert _step(worker)
        report = _assert_failed_once_for_output(farm, worker, "ro")
        assert report["reason"] == (
            f"cannot create output folder {mount / 'shot'}: {mount} is not writable "
            "[output folder not writable: Read-only file system]"
        )
        assert os.listdir(mount) == []
    _assert_good_ticket_renders(worker, farm, "after_ro")


def _read_only_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` behave as a read-only mount: every change under it raises EROFS, even removing nothing."""
    prefix = str(folder) + os.sep

    def under(path: Any) -> bool:
        return isinstance(path, (str, os.PathLike)) and (os.fspath(path) + os.sep).startswith(prefix)

    def refuse(path: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def guard(real: Callable[..., Any], writes: Callable[..., bool]) -> Callable[..., Any]:
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            if under(path) and writes(*args, **kwargs):
                refuse(path)
            return real(path, *args, **kwargs)

        return guarded

    def write_mode(mode: str = "r", *_: Any, **__: Any) -> bool:
        return any(c in mode for c in "wax+")

    def write_flags(flags: int, *_: Any, **__: Any) -> bool:
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    real_access = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        return not (under(path) and mode & os.W_OK) and real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", guard(builtins.open, write_mode))
    monkeypatch.setattr(os, "open", guard(os.open, write_flags))
    for name in ("unlink", "remove", "mkdir", "rmdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), lambda *a, **k: True))


def test_injected_read_only_output_files_the_job_once(farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _worker(farm)
    (farm["out"] / "ro").mkdir()
    _read_only_under(farm["out"] / "ro", monkeypatch)
    drop_ticket(farm["root"], "ro", {**GOOD, "output": "ro/shot/m.####.exr"})
    assert _step(worker)
    _assert_failed_once_for_output(farm, worker, "ro")
    monkeypatch.undo()
    _assert_good_ticket_renders(worker, farm, "after_ro")


# --------------------------------------------------------------------------- full watch root (ENOSPC)


def _fill_at_snapshot(monkeypatch: pytest.MonkeyPatch, mount: Path, call: int) -> None:
    """Fill the watch root just before the engine writes its ``call``-th snapshot (the write itself is real)."""
    real_save = rvm_vfx.resume_state.save_snapshot
    calls = {"n": 0}

    def save(path: Any, snap: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == call:
            fill_up(mount)
        real_save(path, snap)

    monkeypatch.setattr(rvm_vfx.resume_state, "save_snapshot", save)


def test_full_watch_root_leaves_the_job_resumable_and_the_watcher_alive(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with mounted_tmpfs(farm["root"], "2m") as root:
        worker = _worker(farm)
        drop_ticket(root, "full", {**GOOD, "output": "full/m.####.exr", "snapshot_every": 2})

        # Full before the claim: the ticket stays where it was dropped, nothing is left behind.
        filler = fill_up(root)
        assert not _step(worker)
        assert sorted(os.listdir(root / "incoming")) == ["full.json"]
        assert jobs_in(root, "active") == []
        assert FREE_SPACE.search(caplog.text), caplog.text
        filler.unlink()

        # Full at the first snapshot: no report fits, so the job stays in active/, resumable.
        _fill_at_snapshot(monkeypatch, root, call=1)
        caplog.clear()
        assert _step(worker)
        [job] = jobs_in(root, "active", "full-")
        assert _claims(job) == ["claim.0"] and not (job / "report.json").exists()
        assert _temporary_files(root, farm["out"]) == []
        assert "cannot write snapshot" in caplog.text and FREE_SPACE.search(caplog.text), caplog.text

        # Still full when its heartbeat has gone stale: no takeover, no empty claim file, no crash.
        _age_out(job, worker)
        caplog.clear()
        assert not _step(worker)
        assert _claims(job) == ["claim.0"]
        assert FREE_SPACE.search(caplog.text), caplog.text

        # Space again: the job is taken over and finishes.
        monkeypatch.undo()
        filler.unlink()
        _age_out(job, worker)
        assert _step(worker)
        [done] = jobs_in(root, "done", "full-")
        assert _claims(done) == ["claim.0", "claim.1"] and _report(done)["state"] == "done"
        assert sorted(os.listdir(farm["out"] / "full")) == [f"m.{1001 + i}.exr" for i in range(FRAMES)]
        assert _temporary_files(root, farm["out"]) == []
        _assert_good_ticket_renders(worker, farm, "after_full")


def test_full_watch_root_files_the_job_as_disk_full_when_its_snapshots_make_room(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with mounted_tmpfs(farm["root"], "2m") as root:
        worker = _worker(farm)
        drop_ticket(root, "full", {**GOOD, "output": "full/m.####.exr", "snapshot_every": 2})
        _fill_at_snapshot(monkeypatch, root, call=2)
        assert _step(worker)
        [job] = jobs_in(root, "failed", "full-")
        report = _report(job)
        assert report["cause"] == "disk full"
        state = job / "state"
        snapshot = re.escape(str(root / "active" / job.name / "state" / "snapshot.3.pt"))
        assert re.match(snapshot + ": cannot write snapshot: " + FREE_SPACE.pattern, report["reason"]), report
        assert sorted(os.listdir(state)) == ["render.json"]  # its snapshots were removed to make room
        assert _temporary_files(root, farm["out"]) == []
        monkeypatch.undo()
        (root / "filler.bin").unlink()
        _assert_good_ticket_renders(worker, farm, "after_full")


@pytest.mark.parametrize("failure", sorted(TORCH_FULL_DISK))
def test_injected_snapshot_disk_full_files_the_job(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr("torch.save", torch_save_on_a_full_disk(TORCH_FULL_DISK[failure]))
    worker = _worker(farm)
    drop_ticket(farm["root"], "snap", {**GOOD, "output": "snap/m.####.exr", "snapshot_every": 2})
    assert _step(worker)
    [job] = jobs_in(farm["root"], "failed", "snap-")
    report = _report(job)
    assert report["cause"] == "disk full"
    snapshot = re.escape(str(farm["root"] / "active" / job.name / "state" / "snapshot.1.pt"))
    assert re.match(snapshot + ": cannot write snapshot: " + FREE_SPACE.pattern, report["reason"]), report
    assert _temporary_files(farm["root"], farm["out"]) == []
    monkeypatch.undo()
    _assert_good_ticket_renders(worker, farm, "after_snap")


def _claims_on_a_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim files are created (an inode is free) but their contents cannot be written, as on a full tmpfs."""
    real_open = os.open

    def open_claim(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.basename(os.fspath(path)).startswith("claim.") and flags & os.O_CREAT:
            os.close(real_open(path, flags, *args, **kwargs))
            return real_open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_claim)


def test_injected_full_disk_at_claim_and_takeover_never_crashes_the_watcher(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(farm)
    drop_ticket(farm["root"], "new", {**GOOD, "output": "new/m.####.exr"})
    _claims_on_a_full_disk(monkeypatch)
    assert not _step(worker)
    assert sorted(os.listdir(farm["root"] / "incoming")) == ["new.json"]
    assert jobs_in(farm["root"], "active") == []
    assert "No space left on device" in caplog.text

    # An abandoned job (its owner died after claiming it) cannot be taken over while the disk is full.
    monkeypatch.undo()
    job = farm["root"] / "active" / "old-20260101-000000-abcdef"
    job.mkdir()
    (job / "ticket.json").write_text(json.dumps({**GOOD, "output": "old/m.####.exr"}))
    (job / "claim.0").write_text(json.dumps({"worker": "gone", "host": "elsewhere", "pid": 1, "generation": 0}))
    _age_out(job, worker)
    _claims_on_a_full_disk(monkeypatch)
    caplog.clear()
    assert not _step(worker)
    assert _claims(job) == ["claim.0"]
    assert "No space left on device" in caplog.text

    monkeypatch.undo()
    _age_out(job, worker)
    assert _step(worker)  # space again: the abandoned job first
    assert _claims(jobs_in(farm["root"], "done", "old-")[0]) == ["claim.0", "claim.1"]
    assert _step(worker)
    assert jobs_in(farm["root"], "done", "new-")


# --------------------------------------------------------------------------- symlinked drops


def test_symlinked_folder_is_filed_as_refused_and_its_target_untouched(farm: dict[str, Path], tmp_path: Path) -> None:
    target = farm["plates"] / "shot"
    before = files_digest(target)
    worker = _worker(farm)
    (farm["root"] / "incoming" / "linked").symlink_to(target, target_is_directory=True)
    assert _step(worker)
    [job] = jobs_in(farm["root"], "failed", "linked-")
    report = _report(job)
    assert report["cause"] == "input"
    assert report["reason"] == (
        f"dropped folder 'linked' is a symlink (to {target}); symlinks are refused: copy the frames in instead"
    )
    assert (job / "drop").is_symlink() and os.readlink(job / "drop") == str(target)
    assert files_digest(target) == before and sorted(os.listdir(target)) == sorted(before)
    assert not (farm["out"] / "linked").exists()
    assert os.listdir(farm["root"] / "incoming") == []
