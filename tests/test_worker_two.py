"""Two real worker processes on one watch root: every job is claimed and rendered exactly once."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .test_worker_helpers import WorkerProcess, drop_ticket, farm_args, jobs_in, make_models_dir, make_plate, wait_for

JOBS = 6


def test_two_workers_six_jobs_each_rendered_once(tmp_path: Path) -> None:
    plates, out, root = tmp_path / "plates", tmp_path / "out", tmp_path / "root"
    make_plate(plates / "shot", 4, 64, 48)
    models = make_models_dir(tmp_path / "models")
    args = farm_args(out, plates, models)
    workers = [WorkerProcess(root, name, *args) for name in ("w-left", "w-right")]
    try:
        for worker in workers:
            worker.wait_ready()
        for i in range(JOBS):  # all at once, so both workers race for every ticket
            drop_ticket(
                root,
                f"job{i}",
                {"input": "shot/plate.####.png", "output": f"job{i}/m.####.exr", "checkpoint": "rvm", "device": "cpu"},
            )
        wait_for(
            lambda: len(jobs_in(root, "done")) + len(jobs_in(root, "failed")) == JOBS,
            "six jobs filed",
            procs=tuple(workers),
        )
    finally:
        for worker in workers:
            worker.stop()
    assert jobs_in(root, "failed") == [] and jobs_in(root, "active") == []
    assert list((root / "incoming").iterdir()) == []
    done = jobs_in(root, "done")
    names = sorted(re.sub(r"-\d{8}-\d{6}-[0-9a-f]{6}$", "", d.name) for d in done)
    assert names == [f"job{i}" for i in range(JOBS)]  # each exactly once
    by_worker: dict[str, int] = {}
    for job in done:
        report = json.loads((job / "report.json").read_text())
        assert len(report["runs"]) == 1 and report["runs"][0]["resumed_from"] is None
        assert report["runs"][0]["frames_written"] == "1001-1004"
        by_worker[report["worker"]] = by_worker.get(report["worker"], 0) + 1
    claims = sum(
        len(re.findall(r"claimed job\d\.json", (root / "logs" / f"worker-{w.name}.log").read_text())) for w in workers
    )
    assert claims == JOBS
    for i in range(JOBS):
        assert sorted(p.name for p in (out / f"job{i}").iterdir()) == [f"m.{f}.exr" for f in range(1001, 1005)]
    print("jobs per worker:", by_worker)
