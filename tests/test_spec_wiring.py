"""The engine, the CLI and the worker take their rules from ``rvm_vfx.spec``: one copy of each, and light modules.

A rule written twice drifts (the Nuke plugin's frame ranges already had); these tests hold each engine and
worker module to the contract's own object rather than to a value that happens to be equal today, and keep
the modules a ticket or a plugin needs (the Job, the worker's intake, chunk planning) free of torch, numpy
and OpenImageIO, which cost a second to import and do not exist in a host's Python.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from rvm_vfx.spec import exits, frames, job, names

from .test_spec_package import modules_loaded_by

HEAVY = ("torch", "numpy", "OpenImageIO")

# What a ticket or a plugin needs without the engine: the Job, its errors, and the worker's parts that read a
# ticket's size and names before anything renders (intake and its file-name rules, the folder layout, chunking).
LIGHT_MODULES = (
    "rvm_vfx.job",
    "rvm_vfx.errors",
    "render_worker.intake",
    "render_worker.fsutil",
    "render_worker.layout",
    "render_worker.chunks",
)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_load_no_torch_numpy_or_openimageio(module: str) -> None:
    loaded = modules_loaded_by(f"import {module}")
    assert module in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []


def test_the_job_and_its_errors_are_the_contracts() -> None:
    import rvm_vfx.errors
    import rvm_vfx.job
    from rvm_vfx.spec import errors as spec_errors

    assert rvm_vfx.job.Job is job.Job
    assert rvm_vfx.errors.InputError is spec_errors.InputError
    assert rvm_vfx.errors.RvmError is spec_errors.RvmError
    for name in ("DEVICES", "PRECISIONS", "MISSING_MODES", "OUTPUT_MODES", "COMPRESSIONS", "OUTPUT_FIELDS"):
        assert getattr(rvm_vfx.job, name) is getattr(job, name), name
    assert rvm_vfx.job.MAX_JOB_BYTES == job.MAX_JOB_BYTES


def test_sequence_reads_frames_and_extensions_through_the_contract() -> None:
    from rvm_vfx import sequence

    assert sequence.parse_frames is frames.parse_frames
    assert sequence.format_frames is frames.format_frames
    assert sequence.format_frame is frames.format_frame
    assert sequence.VIDEO_EXTENSIONS is names.VIDEO_EXTENSIONS
    assert sequence.IMAGE_EXTENSIONS is names.IMAGE_EXTENSIONS
    assert sequence.MISSING_MODES is job.MISSING_MODES


def test_write_exr_takes_the_jobs_compressions() -> None:
    from rvm_vfx import frame_io

    assert frame_io.EXR_COMPRESSIONS is job.COMPRESSIONS
    # write_exr's temporary name is tested in test_frame_io: it is written, renamed, and parsed back as the spec's.


def test_the_weights_cache_and_official_names_are_the_contracts(tmp_path: Path, monkeypatch) -> None:
    from rvm_vfx import weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(names.CHECKPOINT_ENV, raising=False)
    assert weights.cache_dir() == Path(names.cache_dir()) == tmp_path / "cache" / "rvm-vfx"
    assert weights.default_checkpoint() == Path(names.default_checkpoint())
    assert weights.OFFICIAL_URL == names.OFFICIAL_URLS[names.DEFAULT_ENCODER]
    assert weights.OFFICIAL_FILENAME == names.OFFICIAL_CHECKPOINTS[names.DEFAULT_ENCODER]
    assert weights.CHECKPOINT_ENV is names.CHECKPOINT_ENV


def test_session_names_the_contracts_devices_and_precisions() -> None:
    from rvm_vfx import session
    from rvm_vfx.errors import InputError

    assert tuple(session.PRECISIONS) == job.PRECISIONS  # the dtype of each precision the Job accepts
    with pytest.raises(InputError) as caught:
        session.pick_device("tpu")
    assert str(caught.value) == "unknown device 'tpu'; expected auto, cpu, cuda or mps"
    listed = re.findall(r"\w+", str(caught.value).split("expected ", 1)[1])
    assert tuple(w for w in listed if w != "or") == job.DEVICES


def test_the_cli_exits_with_the_contracts_codes() -> None:
    from rvm_vfx import cli

    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_BAD_INPUT) == (0, 1, 2)
    assert (exits.EXIT_OK, exits.EXIT_FAILED, exits.EXIT_BAD_INPUT) == (0, 1, 2)
    assert cli.exit_code is exits.exit_code


def test_the_worker_reads_temporary_frame_names_through_the_contract() -> None:
    from render_worker import runner

    assert runner.parse_temporary_frame_name is names.parse_temporary_frame_name
    assert not hasattr(runner, "_TEMP_TAIL")


def test_disk_full_helpers_stay_in_the_engines_errors(tmp_path: Path) -> None:
    # Not part of the contract (the plugins never write frames), so they stay beside the re-exported classes.
    from rvm_vfx.errors import OutputError, write_error

    error = write_error(tmp_path / "m.exr", "cannot write", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, OutputError)
    assert str(error).startswith(f"{tmp_path / 'm.exr'}: cannot write: No space left on device: ")
