"""A worker ticket with ``"finetune"``: train on the shot's roto keyframes, render with the trained weights,
file the checkpoint and its sidecar with the job and in the models dir.

Real watch roots, real PNG plates and keyframes, real (short) trainings. The in-process tests run the
worker one ``step`` at a time, so they wait on nothing; the crash tests run real worker processes and
a Dask LocalCluster on 127.0.0.1, and wait on files (progress, snapshots), never on the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from render_worker.config import build_config
from render_worker.executor_dask import DaskExecutor
from render_worker.ticket import load_ticket
from render_worker.worker import Worker
from rvm_vfx.errors import InputError

from .dask_cluster import local_cluster
from .plates import write_image
from .test_worker_helpers import (
    WorkerProcess,
    drop_ticket,
    farm_args,
    jobs_in,
    make_models_dir,
    make_plate,
    read_alpha,
    status_of,
    torch_threads,
    wait_for,
    wait_for_job,
)

FRAMES, WIDTH, HEIGHT = 8, 64, 48
KEYFRAMES = (1001, 1004, 1008)
ITERATIONS = 3


def _write_keyframes(
    folder: Path, frames: tuple[int, ...] = KEYFRAMES, width: int = WIDTH, height: int = HEIGHT
) -> str:
    """Single-channel roto mattes numbered like the plate: a plain box, far from the network's matte, so that
    even a few steps change the weights visibly."""
    folder.mkdir(parents=True, exist_ok=True)
    matte = np.zeros((height, width), np.float32)
    matte[height // 6 : height * 5 // 6, width // 4 : width * 3 // 4] = 1.0
    for frame in KEYFRAMES:
        write_image(folder / f"roto.{frame}.png", matte)
    return str(folder / "roto.####.png")


@pytest.fixture
def farm(tmp_path: Path) -> dict[str, Path]:
    plates = tmp_path / "plates"
    make_plate(plates / "shot", FRAMES, WIDTH, HEIGHT)
    _write_keyframes(plates / "shot")
    outside = tmp_path / "outside"
    _write_keyframes(outside)
    return {
        "base": tmp_path,
        "plates": plates,
        "outside": outside,
        "models": make_models_dir(tmp_path / "models"),
        "root": tmp_path / "root",
        "out": tmp_path / "out",
    }


def _config(farm: dict[str, Path], **extra: Any):
    return build_config(
        {
            "root": farm["root"],
            "output_root": farm["out"],
            "allow_input_roots": [farm["plates"]],
            "models_dir": farm["models"],
            "default_checkpoint": "rvm",
            **extra,
        }
    )


def _ticket(name: str, **finetune: Any) -> dict[str, Any]:
    return {
        "input": "shot/plate.####.png",
        "output": f"{name}/m.####.exr",
        "device": "cpu",
        "finetune": {"keyframes": "shot/roto.####.png", "iterations": ITERATIONS, **finetune},
    }


def _run_one(farm: dict[str, Path], name: str, ticket: dict[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    worker = Worker(_config(farm))
    worker.layout.ensure()
    drop_ticket(farm["root"], name, ticket)
    with torch_threads(1):
        assert worker.step()
    [(area, job)] = [(a, j) for a in ("done", "failed") for j in jobs_in(farm["root"], a, f"{name}-")]
    return area, job, json.loads((job / "report.json").read_text())


def _render_with(checkpoint: Path, pattern: str, output: Path) -> Path:
    """The plain single-machine render with ``checkpoint``: what the farm's matte must equal."""
    from rvm_vfx.job import Job
    from rvm_vfx.render import cached_model, render

    model, sha = cached_model(str(checkpoint))
    job = Job(input=pattern, output=str(output / "m.####.exr"), checkpoint=str(checkpoint), device="cpu")
    with torch_threads(1):
        render(job, model=model, checkpoint_sha256=sha)
    return output


def test_finetune_ticket_trains_renders_with_the_trained_weights_and_files_both(farm: dict[str, Path]) -> None:
    area, job, report = _run_one(farm, "tuned", _ticket("tuned"))
    assert area == "done", report.get("reason")
    trained = farm["models"].resolve() / "trained" / f"{job.name}.pth"
    sidecar = trained.with_suffix(".json")
    entry = report["finetune"]
    assert entry["checkpoint"] == str(trained) and entry["sidecar"] == str(sidecar)
    assert entry["keyframes"] == "1001, 1004, 1008"
    assert entry["base_checkpoint"] == str(farm["models"].resolve() / "rvm" / "model.json")
    assert entry["files"] == [f"finetune/{job.name}.pth", f"finetune/{job.name}.json"]
    assert entry["training"]["done"] == ITERATIONS and entry["training"]["stopped"] is None
    assert report["job"]["checkpoint"] == str(trained)  # the render ran with the trained weights
    assert report["runs"][0]["finetune"] == "trained" and report["runs"][0]["train_s"] > 0
    # Kept with the job in done/, and the same bytes in the models dir.
    for kept, filed in ((job / entry["files"][0], trained), (job / entry["files"][1], sidecar)):
        assert kept.read_bytes() == filed.read_bytes()
    assert not [p.name for p in trained.parent.iterdir() if p.name.startswith(".")], "a temporary was left"
    meta = json.loads(sidecar.read_text())
    assert meta["plate"] == str(farm["plates"].resolve() / "shot" / "plate.####.png")
    assert meta["keyframes"]["frames"] == list(KEYFRAMES) and meta["iterations"]["done"] == ITERATIONS
    assert meta["sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    assert meta["base_checkpoint"]["path"] == entry["base_checkpoint"]

    # The farm's matte is the plain render's with the trained checkpoint, and not the base network's.
    pattern = str(farm["plates"] / "shot" / "plate.####.png")
    ours = {f: read_alpha(farm["out"] / "tuned" / f"m.{f}.exr") for f in range(1001, 1001 + FRAMES)}
    with_trained = _render_with(trained, pattern, farm["base"] / "with_trained")
    base = _render_with(farm["models"] / "rvm" / "model.json", pattern, farm["base"] / "with_base")
    for frame, alpha in ours.items():
        np.testing.assert_array_equal(alpha, read_alpha(with_trained / f"m.{frame}.exr"))
    assert max(float(np.abs(a - read_alpha(base / f"m.{f}.exr")).max()) for f, a in ours.items()) > 1e-3

    # A later ticket names the trained weights as its checkpoint.
    later = load_later_ticket(farm, f"trained/{job.name}.pth")
    assert later.checkpoint == trained


def load_later_ticket(farm: dict[str, Path], checkpoint: str):
    job_dir = farm["base"] / "later"
    job_dir.mkdir()
    ticket = {"input": "shot/plate.####.png", "output": "later/m.####.exr", "checkpoint": checkpoint}
    (job_dir / "ticket.json").write_text(json.dumps(ticket))
    return load_ticket(job_dir, _config(farm))


BAD_FIELDS = [
    (
        {"time_limit": 0},
        "ticket field 'finetune': finetune field 'time_limit': must be a number of minutes > 0, got 0",
    ),
    (
        {"iterations": "many"},
        "ticket field 'finetune': finetune field 'iterations': expected integer, got string ('many')",
    ),
    ({"iterations": 0}, "ticket field 'finetune': finetune field 'iterations': "),
    ({"keyframes": None}, "ticket field 'finetune': finetune field 'keyframes': expected string, got null (None)"),
    ({"precision": "fp8"}, "ticket field 'finetune': finetune field 'precision': "),
    ({"learning_rate": 1}, "ticket field 'finetune': unknown field 'learning_rate' (known fields: checkpoint, "),
]


def test_bad_finetune_fields_go_to_failed_naming_the_field(farm: dict[str, Path]) -> None:
    worker = Worker(_config(farm))
    worker.layout.ensure()
    tickets = {f"bad{i}": _ticket(f"bad{i}", **fields) for i, (fields, _) in enumerate(BAD_FIELDS)}
    tickets["nokeys"] = {**_ticket("nokeys"), "finetune": {"iterations": 2}}
    tickets["notobject"] = {**_ticket("notobject"), "finetune": ["shot/roto.####.png"]}
    expected = {f"bad{i}": message for i, (_, message) in enumerate(BAD_FIELDS)}
    expected["nokeys"] = "ticket field 'finetune': missing required field 'keyframes'"
    expected["notobject"] = "ticket field 'finetune': expected a JSON object, got list"
    for name, ticket in tickets.items():
        drop_ticket(farm["root"], name, ticket)
    for _ in tickets:
        assert worker.step()
    for name, message in expected.items():
        [job] = jobs_in(farm["root"], "failed", f"{name}-")
        report = json.loads((job / "report.json").read_text())
        assert report["cause"] == "input", report
        assert report["reason"].startswith(message), (name, report["reason"])
        assert not (job / "finetune").exists()  # refused before any training
    assert not (farm["models"] / "trained").exists()
    assert not farm["out"].exists() or not any(farm["out"].iterdir())


def _load(farm: dict[str, Path], ticket: dict[str, Any]):
    job_dir = farm["base"] / "job"
    job_dir.mkdir(exist_ok=True)
    (job_dir / "ticket.json").write_text(json.dumps(ticket))
    return load_ticket(job_dir, _config(farm))


def test_keyframes_outside_the_input_roots_are_refused(farm: dict[str, Path]) -> None:
    outside = str(farm["outside"] / "roto.####.png")
    with pytest.raises(InputError) as caught:
        _load(farm, _ticket("x", keyframes=outside))
    assert (
        str(caught.value) == f"ticket field 'finetune.keyframes': {outside!r} resolves outside the allowed input roots"
    )
    with pytest.raises(InputError) as caught:
        _load(farm, _ticket("x", keyframes="../outside/roto.####.png"))
    assert str(caught.value).startswith(
        "ticket field 'finetune.keyframes': '../outside/roto.####.png' resolves outside"
    )
    # One keyframe of the pattern is a symlink to a matte outside: refused, naming that file.
    linked = farm["plates"] / "shot" / "roto.1006.png"
    linked.symlink_to(farm["outside"] / "roto.1004.png")
    with pytest.raises(InputError) as caught:
        _load(farm, _ticket("x"))
    assert str(caught.value) == (
        f"ticket field 'finetune.keyframes': keyframe {linked} resolves outside the allowed input roots"
    )
    linked.unlink()
    with pytest.raises(InputError) as caught:
        _load(farm, _ticket("x", keyframes="shot/none.####.png"))
    assert str(caught.value).startswith("ticket field 'finetune.keyframes': ")
    assert "no keyframe on disk" in str(caught.value)


def test_base_weights_come_from_the_models_dir_and_are_named_once(farm: dict[str, Path]) -> None:
    ticket = _load(farm, _ticket("x"))
    stage = ticket.finetune
    assert stage is not None and stage.keyframes == KEYFRAMES
    assert stage.settings.checkpoint == str(farm["models"].resolve() / "rvm" / "model.json")  # the worker's default
    assert stage.settings.keyframes == str(farm["plates"].resolve() / "shot" / "roto.####.png")
    assert (stage.settings.device, stage.settings.iterations) == ("cpu", ITERATIONS)  # the Job's device, inherited
    with pytest.raises(InputError) as caught:
        _load(farm, _ticket("x", checkpoint="../elsewhere.pth"))
    assert str(caught.value) == "ticket field 'finetune.checkpoint': '../elsewhere.pth' is not inside the models dir"
    with pytest.raises(InputError) as caught:
        _load(farm, {**_ticket("x", checkpoint="other"), "checkpoint": "rvm"})
    assert str(caught.value).startswith("ticket field 'finetune.checkpoint': 'other' differs from the ticket's")
    with pytest.raises(InputError) as caught:  # a timeline ticket has no training stage
        _load(farm, {"timeline": "edit.otio", "output": "o", "finetune": {"keyframes": "k.####.png"}})
    assert str(caught.value) == "ticket: unknown field 'finetune' in a timeline ticket"


def test_a_dropped_folder_carries_its_keyframes_beside_its_frames(farm: dict[str, Path]) -> None:
    job_dir = farm["base"] / "dropped-20261201-120000-abcdef"
    drop = job_dir / "drop"
    make_plate(drop, FRAMES, WIDTH, HEIGHT)
    _write_keyframes(drop / "roto")  # in a folder of their own: the dropped folder's frames are the plate
    (drop / "job.json").write_text(json.dumps({"finetune": {"keyframes": "roto/roto.####.png", "iterations": 2}}))
    ticket = load_ticket(job_dir, _config(farm))
    assert ticket.finetune is not None and ticket.finetune.keyframes == KEYFRAMES
    assert ticket.finetune.settings.keyframes == str(drop.resolve() / "roto" / "roto.####.png")
    assert ticket.finetune.plate == ticket.job.input == str(drop.resolve())


class _FakeFuture:
    status = "finished"

    def __init__(self, result: dict[str, Any]) -> None:
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return self._result


class _RecordingClient:
    """Stands in for a Dask client to see what the training task is submitted with."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, function: Any, spec: dict[str, Any], **options: Any) -> _FakeFuture:
        self.submitted.append({"function": function.__name__, "spec": spec, **options})
        return _FakeFuture({"checkpoint": spec["out"], "stopped": False})


@pytest.mark.parametrize(("device", "resources"), [("cuda", {"GPU": 1}), ("cpu", None)])
def test_training_is_one_dask_task_with_the_gpu_resource_for_cuda(
    farm: dict[str, Path], device: str, resources: dict[str, float] | None
) -> None:
    from render_worker.chunks import device_resources
    from render_worker.train_task import training_spec

    ticket = _load(farm, {**_ticket("x"), "device": device})
    assert ticket.finetune is not None and ticket.finetune.settings.device == device
    executor = DaskExecutor("tcp://127.0.0.1:1", chunk_size=10, preroll=0, retries=2)
    client = executor._client = _RecordingClient()
    spec = training_spec(ticket.finetune.plate, ticket.finetune.settings.to_dict(), farm["base"] / "job", "j.pth", 3)
    result = executor.train(spec, device_resources(ticket.finetune.settings.device), threading.Event(), lambda e: None)
    assert result["checkpoint"] == str(farm["base"] / "job" / "finetune" / "j.pth")
    [submitted] = client.submitted
    assert submitted["function"] == "train_task"
    assert submitted["resources"] == resources and submitted["retries"] == 2
    assert submitted["key"] == "rvm-job-g3-finetune"


# --------------------------------------------------------------------------- crashes: real processes


def _training_step(job_dir: Path, at_least: int = 1) -> int | None:
    """The training step status.json shows, once it is ``at_least``; fails if the job already left active/."""
    if not job_dir.is_dir():
        raise AssertionError("the job finished before training could be caught")
    status = status_of(job_dir)
    step = status.get("train_iteration")
    return step if status.get("state") == "training" and isinstance(step, int) and step >= at_least else None


def _trained(job_dir: Path) -> bool:
    if not job_dir.is_dir():
        raise AssertionError("the job finished before its render could be caught")
    return (job_dir / "finetune" / "done.json").exists()


def test_killed_in_training_trains_again_and_killed_in_render_keeps_the_training(farm: dict[str, Path]) -> None:
    # Training looks at the first 8 frames only; the render of all 24 takes long enough to be caught.
    make_plate(farm["plates"] / "long", 24, 96, 64)
    _write_keyframes(farm["plates"] / "long", width=96, height=64)
    root, args = farm["root"], farm_args(farm["out"], farm["plates"], farm["models"], "--default-checkpoint", "rvm")
    ticket = {**_ticket("crash", iterations=12, frames="1001-1008"), "input": "long/plate.####.png"}
    ticket["finetune"]["keyframes"] = "long/roto.####.png"
    first = WorkerProcess(root, "w-first", *args)
    first.wait_ready()
    drop_ticket(root, "crash", ticket)
    job_dir = wait_for(lambda: jobs_in(root, "active", "crash-"), "the claim", procs=(first,))[0]
    wait_for(lambda: _training_step(job_dir), "a training step", procs=(first,))
    first.kill9()
    assert not (job_dir / "finetune" / "done.json").exists()

    # Taken over at once (the owner's pid is gone): trains again from the base weights, and is killed once
    # that training is finished (in the render, or just before it).
    second = WorkerProcess(root, "w-second", *args)
    wait_for(lambda: _trained(job_dir), "the training to finish", procs=(second,))
    second.kill9()
    trained = job_dir / "finetune" / f"{job_dir.name}.pth"
    trained_at = (trained.stat().st_ino, trained.stat().st_mtime_ns)

    third = WorkerProcess(root, "w-third", *args)
    job = wait_for_job(root, "crash", procs=(third,))
    third.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert [r["outcome"] for r in report["runs"]] == ["done"]  # the killed runs never wrote their lines
    assert report["runs"][0]["finetune"] == "kept"  # the finished training was not redone
    kept = job / "finetune" / f"{job.name}.pth"
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == trained_at
    assert report["finetune"]["training"]["done"] == 12
    assert report["job"]["checkpoint"] == report["finetune"]["checkpoint"]
    assert Path(report["finetune"]["checkpoint"]).read_bytes() == kept.read_bytes()
    assert sorted(p.name for p in (farm["out"] / "crash").iterdir()) == [f"m.{f}.exr" for f in range(1001, 1025)]


def test_sigterm_in_training_leaves_the_job_to_train_again(farm: dict[str, Path]) -> None:
    root, args = farm["root"], farm_args(farm["out"], farm["plates"], farm["models"], "--default-checkpoint", "rvm")
    first = WorkerProcess(root, "w-term", *args)
    first.wait_ready()
    drop_ticket(root, "term", _ticket("term", iterations=200))
    job_dir = wait_for(lambda: jobs_in(root, "active", "term-"), "the claim", procs=(first,))[0]
    wait_for(lambda: _training_step(job_dir), "a training step", procs=(first,))
    assert first.terminate() == 0  # training stops at its next step; the worker exits cleanly
    assert job_dir.is_dir() and status_of(job_dir)["state"] == "stopped"
    runs = [json.loads(line) for line in (job_dir / "runs.jsonl").read_text().splitlines()]
    assert [(r["outcome"], r["finetune"]) for r in runs] == [("stopped", "stopped")]
    assert not (job_dir / "finetune" / "done.json").exists()  # not finished: the next attempt trains again
    assert not (farm["models"] / "trained").exists() and not (farm["out"] / "term").exists()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with local_cluster() as address:
        yield address


def _training_pid(job_dir: Path, at_least: int = 1) -> int | None:
    """The Dask worker process training, once its progress file shows a step."""
    if not job_dir.is_dir():
        raise AssertionError("the job finished before training could be caught")
    try:
        data = json.loads((job_dir / "finetune" / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    return data["pid"] if data.get("iteration", 0) >= at_least else None


def test_finetune_on_a_local_cluster_with_the_training_worker_killed(farm: dict[str, Path], cluster: str) -> None:
    root = farm["root"]
    args = farm_args(farm["out"], farm["plates"], farm["models"], "--default-checkpoint", "rvm",
                     "--dask-scheduler", cluster, "--chunk-size", "4", "--preroll", "2")  # fmt: skip
    watcher = WorkerProcess(root, "w-dask", *args)
    try:
        watcher.wait_ready()
        drop_ticket(root, "daskft", _ticket("daskft", iterations=12))
        job_dir = wait_for(lambda: jobs_in(root, "active", "daskft-"), "the claim", procs=(watcher,))[0]
        pid = wait_for(lambda: _training_pid(job_dir), "a training step on a Dask worker", procs=(watcher,))
        assert pid != watcher.pid
        os.kill(pid, signal.SIGKILL)  # the Dask worker process training: Dask runs the task again elsewhere
        job = wait_for_job(root, "daskft", procs=(watcher,))
    finally:
        watcher.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert report["mode"] == "dask" and len(report["chunks"]) == 2
    assert report["runs"][0]["finetune"] == "trained" and report["finetune"]["training"]["done"] == 12
    trained = Path(report["finetune"]["checkpoint"])
    assert trained.read_bytes() == (job / "finetune" / f"{job.name}.pth").read_bytes()
    log = (job / "finetune" / "train.log").read_text()
    assert log.count("training on ") == 2  # started, killed, started again
    assert sorted(p.name for p in (farm["out"] / "daskft").iterdir()) == [f"m.{f}.exr" for f in range(1001, 1009)]
