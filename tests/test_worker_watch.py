"""A real worker process with a real watchdog observer: tickets, slowly copied folders, bad tickets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from .conftest import ROOT
from .test_spec_job import version_1_ticket
from .test_worker_helpers import (
    WorkerProcess,
    drop_ticket,
    farm_args,
    files_digest,
    jobs_in,
    make_models_dir,
    make_plate,
    read_alpha,
    reference_render,
    status_of,
    wait_for_job,
)

FRAMES = 8


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("watch")
    plates, out, root = base / "plates", base / "out", base / "root"
    pattern = make_plate(plates / "shot010", FRAMES)
    models = make_models_dir(base / "models")
    worker = WorkerProcess(
        root,
        "w-watch",
        *farm_args(out, plates, models, "--default-checkpoint", "rvm"),
        settings={"--max-frames": 5000, "--settle": 1.5},
    )
    try:
        worker.wait_ready()
        yield {"base": base, "plates": plates, "out": out, "root": root, "worker": worker, "pattern": pattern}
    finally:
        worker.stop()


def test_dropped_ticket_renders(farm: dict) -> None:
    root, worker = farm["root"], farm["worker"]
    before = files_digest(farm["plates"] / "shot010")
    drop_ticket(
        root,
        "shot010",
        {"input": "shot010/plate.####.png", "output": "shot010/matte.####.exr", "device": "cpu", "name": "shot010"},
    )
    job = wait_for_job(root, "shot010", procs=(worker,))
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert report["state"] == "done" and report["frames_total"] == FRAMES
    assert report["outputs"]["frames"] == "1001-1008"
    assert {"total_s", "render_s", "fps"} <= set(report["timings"])
    assert report["runs"][0]["worker"] == "w-watch" and len(report["runs"]) == 1
    status = status_of(job)
    assert status["state"] == "done" and status["frames_done"] == FRAMES == status["frames_total"]
    assert (job / "ticket.json").is_file() and (job / "job.log").stat().st_size > 0
    assert "claimed shot010.json" in (root / "logs" / "worker-w-watch.log").read_text()
    assert not list((job / "state").rglob("snapshot.*.pt"))  # resume points are dropped once the job is done
    # The plate is never touched, and the mattes are the engine's own.
    assert files_digest(farm["plates"] / "shot010") == before
    reference = reference_render(farm["pattern"], farm["base"] / "reference")
    for frame in range(1001, 1001 + FRAMES):
        ours = read_alpha(farm["out"] / "shot010" / f"matte.{frame}.exr")
        np.testing.assert_array_equal(ours, read_alpha(reference / f"m.{frame}.exr"))


def test_a_version_1_ticket_renders_upgraded(farm: dict) -> None:
    root, worker = farm["root"], farm["worker"]
    # Exactly what a plugin wrote before schema versions: every field of the time, no schema_version.
    old = {
        **version_1_ticket(),
        "input": "shot010/plate.####.png",
        "output": "v1/matte.####.exr",
        "frames": "1001-1002",
        "device": "cpu",
        "ocio_config": None,
        "input_colorspace": None,
        "name": "v1",
    }
    drop_ticket(root, "v1", old)
    job = wait_for_job(root, "v1", procs=(worker,))
    report = json.loads((job / "report.json").read_text())
    assert job.parent.name == "done", report
    assert report["job"]["schema_version"] == 2 and report["outputs"]["frames"] == "1001-1002"
    assert sorted(p.name for p in (farm["out"] / "v1").iterdir()) == ["matte.1001.exr", "matte.1002.exr"]
    assert json.loads((job / "ticket.json").read_text()) == old  # the ticket itself is kept as it came


def test_slowly_copied_folder_is_taken_only_when_complete(farm: dict) -> None:
    root, worker = farm["root"], farm["worker"]
    source = sorted((farm["plates"] / "shot010").glob("plate.*.png"))
    target = root / "incoming" / "shot020"
    target.mkdir()
    (target / "job.json").write_text(json.dumps({"frames": "1001-1008", "device": "cpu"}))
    for frame in source:
        assert target.is_dir(), "the folder was claimed before its copy finished"
        shutil.copy2(frame, target / frame.name)  # copy2 keeps the source's mtime: only the file set changes
        time.sleep(0.3)  # the scenario: an artist's copy trickling in, a frame every 0.3 s
    assert target.is_dir() and jobs_in(root, "active", "shot020-") == []
    job = wait_for_job(root, "shot020", procs=(worker,))
    assert job.parent.name == "done", (job / "report.json").read_text()
    assert sorted(p.name for p in (job / "drop").iterdir()) == sorted(["job.json", *(p.name for p in source)])
    out = farm["out"] / "shot020"
    assert sorted(p.name for p in out.iterdir()) == [f"shot020.{f}.exr" for f in range(1001, 1001 + FRAMES)]


def _escape_link(farm: dict) -> None:
    outside = farm["base"] / "outside"
    if not outside.exists():
        make_plate(outside, 2)
        (farm["plates"] / "via_link").symlink_to(outside)


def test_bad_tickets_fail_with_their_reason_and_the_worker_goes_on(farm: dict) -> None:
    root, worker = farm["root"], farm["worker"]
    _escape_link(farm)
    good = {"input": "shot010/plate.####.png", "output": "bad/m.####.exr", "device": "cpu"}
    bad = {
        "bad_malformed": ('{"input": "shot010/plate.####.png", "output": "x', "malformed JSON"),
        "bad_types": ({**good, "preroll": "15"}, "job field 'preroll': expected integer"),
        "bad_unknown": ({**good, "exec": "rm -rf /"}, "unknown field 'exec'"),
        "bad_dotdot_in": ({**good, "input": "../outside/plate.####.png"}, "outside the allowed input roots"),
        "bad_dotdot_out": ({**good, "output": "../../../etc/m.####.exr"}, "outside the output root"),
        "bad_symlink": ({**good, "input": "via_link/plate.####.png"}, "outside the allowed input roots"),
        "bad_missing": ({**good, "input": "nothing_here/plate.####.png"}, "no frames on disk"),
        "bad_checkpoint": ({**good, "checkpoint": "/work/shared/models/x.pth"}, "not inside the models dir"),
        "bad_frames": ({**good, "frames": "1-500000"}, "500000 frames; this worker's limit is 5000"),
        "bad_same_file": ({**good, "alpha_output": "bad/m.%04d.exr"}, "'output' and 'alpha_output' name the same"),
        "bad_png": ({**good, "fg_output": "bad/fg.####.png"}, "job field 'fg_output': outputs are written as OpenEXR"),
    }
    for name, (ticket, _) in bad.items():
        drop_ticket(root, name, ticket)
    for name, (_, reason) in bad.items():
        job = wait_for_job(root, name, procs=(worker,))
        assert job.parent.name == "failed", name
        report = json.loads((job / "report.json").read_text())
        assert reason in report["reason"], (name, report["reason"])
        assert report["cause"] == "input" and status_of(job)["state"] == "failed"
    assert not (farm["out"] / "bad").exists() and not (farm["base"] / "etc").exists()
    # Still alive, and still rendering.
    drop_ticket(root, "after_bad", {**good, "output": "after_bad/m.####.exr", "frames": "1001-1002"})
    job = wait_for_job(root, "after_bad", procs=(worker,))
    assert job.parent.name == "done" and worker.returncode_now() is None


def test_status_command_prints_the_jobs(farm: dict) -> None:
    wait_for_job(farm["root"], "shot010", procs=(farm["worker"],))
    run = subprocess.run(
        [sys.executable, "-m", "render_worker", "status", str(farm["root"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "shot010-" in run.stdout and "done" in run.stdout and "w-watch" in run.stdout
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "render_worker", "status", str(farm["root"]), "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert any(j["job_id"].startswith("shot010-") and j["state"] == "done" for j in data["jobs"])
