"""Outputs never replace the plate or each other, and are named .exr: refused before a frame is read or a model loads.

Every case runs the real command line (``rvm-vfx matte`` and ``rvm-vfx render JOB.json``) on a tiny
EXR plate and checks the plate's bytes (sha256 of each file) before and after, so a refusal that
came too late, or not at all, shows up as a changed checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from render_worker.config import build_config
from render_worker.ticket import load_ticket
from rvm_vfx import render as render_module
from rvm_vfx import sequence
from rvm_vfx.cli import main
from rvm_vfx.errors import InputError
from rvm_vfx.job import Job

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence
from .test_worker_helpers import make_models_dir

CKPT = str(TFJS_MODEL)
FIELD_FLAGS = {"output": None, "alpha_output": "--alpha-output", "fg_output": "--fg-output"}
STILL_IS_PLATE = "(3 of 3 frames: 1001-1003); the plate is never written to"


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    """The folder of a 3-frame 64x48 half-float EXR plate, ``plate.1001.exr`` - ``plate.1003.exr``."""
    composites, _ = portrait_clip(3, 64, 48)
    write_sequence(tmp_path / "plate", "plate", composites, ext="exr", fmt="half")
    return tmp_path / "plate"


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every model load and plate frame read, recorded (and still done): a refusal must come before both."""
    calls: dict[str, list[str]] = {"model": [], "read": []}
    load, read = render_module.cached_model, sequence.read_image

    def spy_load(checkpoint: str | None) -> Any:
        calls["model"].append(str(checkpoint))
        return load(checkpoint)

    def spy_read(path: str, layer: str | None = None) -> Any:
        calls["read"].append(path)
        return read(path, layer)

    monkeypatch.setattr(render_module, "cached_model", spy_load)
    monkeypatch.setattr(sequence, "read_image", spy_read)
    return calls


def _checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _matte(job: dict[str, Any]) -> int:
    """``rvm-vfx matte`` with the flags for the fields of ``job``."""
    args = ["matte", job["input"], job["output"], "--checkpoint", CKPT, "--progress", "none"]
    for name in ("alpha_output", "fg_output"):
        if name in job:
            args += [FIELD_FLAGS[name], job[name]]
    if job.get("overwrite"):
        args.append("--overwrite")
    return main(args)


def _render_job_file(job: dict[str, Any], folder: Path) -> int:
    """``rvm-vfx render JOB.json`` for the same fields."""
    path = folder / "job.json"
    path.write_text(json.dumps({**job, "checkpoint": CKPT}))
    return main(["render", str(path), "--progress", "none"])


RUNNERS = {"matte": _matte, "render_job": _render_job_file}


def _run(runner: str, job: dict[str, Any], tmp_path: Path) -> int:
    return _matte(job) if runner == "matte" else _render_job_file(job, tmp_path)


# --------------------------------------------------------------------------- 1. the plate is never written to


def _onto_plate(case: str, tmp_path: Path, plate: Path) -> tuple[dict[str, Any], str]:
    """(job fields, the field aimed at the plate) for each way of spelling the plate's own frames."""
    hashes = str(plate / "plate.####.exr")
    elsewhere = str(tmp_path / "out" / "m.####.exr")
    if case == "same_pattern":
        return {"input": hashes, "output": hashes}, "output"
    if case == "printf_vs_hashes":
        return {"input": str(plate / "plate.%04d.exr"), "output": hashes}, "output"
    if case == "houdini":
        return {"input": hashes, "output": str(plate / "plate.$F4.exr")}, "output"
    if case == "at_signs":
        return {"input": hashes, "output": str(plate / "plate.@@@@.exr")}, "output"
    if case == "shorter_padding":  # '#' pads to one digit, so frame 1001 is still plate.1001.exr
        return {"input": hashes, "output": str(plate / "plate.#.exr")}, "output"
    if case == "dotdot":
        (tmp_path / "elsewhere").mkdir()
        return {"input": hashes, "output": str(tmp_path / "elsewhere" / ".." / "plate" / "plate.####.exr")}, "output"
    if case == "symlinked_folder":
        (tmp_path / "link").symlink_to(plate, target_is_directory=True)
        return {"input": hashes, "output": str(tmp_path / "link" / "plate.####.exr")}, "output"
    if case == "folder_input":
        return {"input": str(plate), "output": str(plate / "plate.%04d.exr")}, "output"
    if case == "alpha_output":
        return {"input": hashes, "output": elsewhere, "alpha_output": hashes}, "alpha_output"
    if case == "fg_output":
        return {"input": hashes, "output": elsewhere, "fg_output": str(plate / "plate.$F4.exr")}, "fg_output"
    raise AssertionError(case)


PLATE_CASES = [
    "same_pattern",
    "printf_vs_hashes",
    "houdini",
    "at_signs",
    "shorter_padding",
    "dotdot",
    "symlinked_folder",
    "folder_input",
    "alpha_output",
    "fg_output",
]


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "no_overwrite"])
@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("case", PLATE_CASES)
def test_an_output_onto_the_plate_is_refused_and_the_plate_keeps_its_bytes(
    case: str, runner: str, overwrite: bool, tmp_path: Path, plate: Path, spies: dict[str, list[str]], capsys
) -> None:
    job, field = _onto_plate(case, tmp_path, plate)
    job["overwrite"] = overwrite
    before = _checksums(plate)
    assert len(before) == 3

    assert _run(runner, job, tmp_path) == 2

    target = sequence.format_frame(job[field], 1001)
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: job field '{field}': {target} would overwrite the plate's own frame "
        f"{plate / 'plate.1001.exr'} {STILL_IS_PLATE}\n"
    )
    assert _checksums(plate) == before
    assert spies == {"model": [], "read": []}
    assert not (tmp_path / "out").exists()


def test_a_relative_job_file_output_onto_the_plate_is_refused(
    tmp_path: Path, plate: Path, spies: dict[str, list[str]], capsys
) -> None:
    before = _checksums(plate)
    job = {"input": "plate/plate.####.exr", "output": "renders/../plate/plate.%04d.exr", "overwrite": True}
    assert _render_job_file(job, tmp_path) == 2
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: job field 'output': {tmp_path / 'renders' / '..' / 'plate' / 'plate.1001.exr'} would "
        f"overwrite the plate's own frame {plate / 'plate.1001.exr'} {STILL_IS_PLATE}\n"
    )
    assert _checksums(plate) == before and spies == {"model": [], "read": []}


def test_only_the_frames_that_land_on_the_plate_are_counted(tmp_path: Path, plate: Path, capsys) -> None:
    """The count is of the frames that land on plate files: held frame 1002 would be a new file."""
    (plate / "plate.1002.exr").rename(plate / "keep.1002.exr")
    before = _checksums(plate)
    job = {"input": str(plate / "plate.####.exr"), "output": str(plate / "plate.####.exr"), "overwrite": True}
    job["frames"] = "1001-1003"
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**job, "checkpoint": CKPT, "missing": "hold"}))
    assert main(["render", str(path), "--progress", "none"]) == 2
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: job field 'output': {plate / 'plate.1001.exr'} would overwrite the plate's own frame "
        f"{plate / 'plate.1001.exr'} (2 of 3 frames: 1001, 1003); the plate is never written to\n"
    )
    assert _checksums(plate) == before


# --------------------------------------------------------------------------- 2. outputs never replace each other


def _colliding(case: str, tmp_path: Path, plate: Path) -> tuple[dict[str, Any], str, str, str, str]:
    """(job fields, first field, second field, its path, the other's path) for two outputs naming one file."""
    out = tmp_path / "out"
    main_pattern = str(out / "m.####.exr")
    job: dict[str, Any] = {"input": str(plate / "plate.####.exr"), "output": main_pattern}
    if case == "alpha_same_text":
        job["alpha_output"] = main_pattern
        return job, "output", "alpha_output", main_pattern, main_pattern
    if case == "alpha_printf":
        job["alpha_output"] = str(out / "m.%04d.exr")
        return job, "output", "alpha_output", main_pattern, job["alpha_output"]
    if case == "fg_dotdot_houdini":
        job["fg_output"] = str(out / ".." / "out" / "m.$F4.exr")
        return job, "output", "fg_output", main_pattern, job["fg_output"]
    if case == "alpha_and_fg":
        job["alpha_output"] = str(tmp_path / "passes" / "p.####.exr")
        job["fg_output"] = str(tmp_path / "passes" / "p.#.exr")
        return job, "alpha_output", "fg_output", job["alpha_output"], job["fg_output"]
    if case == "symlinked_folder":
        out.mkdir()
        (tmp_path / "link").symlink_to(out, target_is_directory=True)
        job["alpha_output"] = str(tmp_path / "link" / "m.####.exr")
        return job, "output", "alpha_output", main_pattern, job["alpha_output"]
    raise AssertionError(case)


COLLISION_CASES = ["alpha_same_text", "alpha_printf", "fg_dotdot_houdini", "alpha_and_fg", "symlinked_folder"]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("case", COLLISION_CASES)
def test_two_outputs_naming_one_file_are_refused(
    case: str, runner: str, tmp_path: Path, plate: Path, spies: dict[str, list[str]], capsys
) -> None:
    job, first, second, first_pattern, second_pattern = _colliding(case, tmp_path, plate)
    job["overwrite"] = True
    before = _checksums(plate)

    assert _run(runner, job, tmp_path) == 2

    path, other = (sequence.format_frame(p, 1001) for p in (first_pattern, second_pattern))
    spelled = f" (as {other})" if other != path else ""
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: job fields '{first}' and '{second}' name the same file {path}{spelled} "
        "(3 of 3 frames: 1001-1003): one would replace the other\n"
    )
    assert spies == {"model": [], "read": []}
    assert _checksums(plate) == before
    for folder in (tmp_path / "out", tmp_path / "passes"):
        assert not folder.exists() or os.listdir(folder) == []


# --------------------------------------------------------------------------- 3. outputs are OpenEXR by name too


@pytest.mark.parametrize("field", sorted(FIELD_FLAGS))
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("m.####.png", "'.png'"),
        ("m.####.PNG", "'.PNG'"),
        ("m.%04d.tif", "'.tif'"),
        ("m.exr.####", "'.####'"),
        ("matte", "no extension"),
    ],
)
def test_an_output_not_named_exr_is_refused(field: str, name: str, shown: str) -> None:
    fields = {"output": "/out/m.####.exr", field: f"/out/{field}/{name}"}
    with pytest.raises(InputError) as caught:
        Job(input="/plates/p.####.exr", **fields)
    assert str(caught.value) == (
        f"job field '{field}': outputs are written as OpenEXR, so the name must end in .exr; "
        f"'/out/{field}/{name}' has {shown}"
    )


def test_exr_in_any_case_is_accepted() -> None:
    job = Job(input="/p.####.exr", output="/o/m.####.EXR", alpha_output="/o/a.$F4.Exr", fg_output="/o/f.%04d.exr")
    assert job.output == "/o/m.####.EXR"


@pytest.mark.parametrize("field", sorted(FIELD_FLAGS))
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_the_command_line_refuses_a_png_output(field: str, runner: str, tmp_path: Path, plate: Path, capsys) -> None:
    out = tmp_path / "out"
    job = {"input": str(plate / "plate.####.exr"), "output": str(out / "m.####.exr")}
    job[field] = str(out / f"{field}.####.png")
    assert _run(runner, job, tmp_path) == 2
    err = capsys.readouterr().err
    prefix = f"rvm-vfx: error: {tmp_path / 'job.json'}: " if runner == "render_job" else "rvm-vfx: error: "
    assert err == (
        f"{prefix}job field '{field}': outputs are written as OpenEXR, so the name must end in .exr; "
        f"'{job[field]}' has '.png'\n"
    )
    assert not out.exists()


# --------------------------------------------------------------------------- the farm worker: the same rules


@pytest.fixture
def farm(tmp_path: Path, plate: Path) -> dict[str, Any]:
    """A worker whose output root also holds the EXR plate, so only the plate rule can stop a ticket."""
    config = build_config(
        {
            "root": tmp_path / "root",
            "output_root": tmp_path,
            "allow_input_roots": [tmp_path],
            "models_dir": make_models_dir(tmp_path / "models"),
        }
    )
    return {"config": config, "root": tmp_path / "root", "plate": plate}


def _load(farm: dict[str, Any], ticket: dict[str, Any]):
    job_dir = farm["root"] / "active" / "t-1"
    job_dir.mkdir(parents=True)
    (job_dir / "ticket.json").write_text(json.dumps({"checkpoint": "rvm", "input": "plate/plate.####.exr", **ticket}))
    return load_ticket(job_dir, farm["config"])


def test_the_worker_refuses_a_ticket_writing_onto_the_plate(farm: dict[str, Any]) -> None:
    before = _checksums(farm["plate"])
    with pytest.raises(InputError) as caught:
        _load(farm, {"output": "plate/plate.%04d.exr", "overwrite": True})
    plate = farm["plate"].resolve()
    assert str(caught.value) == (
        f"ticket: job field 'output': {plate / 'plate.1001.exr'} would overwrite the plate's own frame "
        f"{plate / 'plate.1001.exr'} {STILL_IS_PLATE}"
    )
    assert _checksums(farm["plate"]) == before


def test_the_worker_refuses_two_outputs_naming_one_file(farm: dict[str, Any]) -> None:
    with pytest.raises(InputError) as caught:
        _load(farm, {"output": "m/m.####.exr", "alpha_output": "m/m.$F4.exr"})
    path = farm["config"].output_root.resolve() / "m" / "m.1001.exr"
    assert str(caught.value) == (
        f"ticket: job fields 'output' and 'alpha_output' name the same file {path} "
        "(3 of 3 frames: 1001-1003): one would replace the other"
    )


def test_the_worker_refuses_a_png_output(farm: dict[str, Any]) -> None:
    with pytest.raises(InputError) as caught:
        _load(farm, {"output": "m/m.####.exr", "fg_output": "m/fg.####.png"})
    assert str(caught.value) == (
        "ticket: job field 'fg_output': outputs are written as OpenEXR, so the name must end in .exr; "
        "'m/fg.####.png' has '.png'"
    )
