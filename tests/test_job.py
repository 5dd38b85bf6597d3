"""Job validation: every bad field named."""

from __future__ import annotations

import json
import re

import pytest

from rvm_vfx.errors import InputError
from rvm_vfx.job import MAX_JOB_BYTES, Job


def test_round_trip_through_json(tmp_path) -> None:
    job = Job(
        input="/plates/a.####.exr",
        output="/out/m.####.exr",
        frames="1001-1010",
        downsample=0.25,
        preroll=15,
        metadata={"show": "xyz"},
    )
    path = tmp_path / "job.json"
    path.write_text(job.to_json())
    assert Job.from_json(path) == job


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"input": "a", "output": "b", "bogus": 1}, "unknown field 'bogus'"),
        ({"output": "b"}, "missing required field 'input'"),
        ({"input": "a", "output": "b", "preroll": "5"}, "job field 'preroll': expected integer, got string ('5')"),
        ({"input": "a", "output": "b", "preroll": True}, "job field 'preroll': expected integer, got boolean (True)"),
        ({"input": "a", "output": "b", "preroll": -1}, "job field 'preroll': must be >= 0, got -1"),
        ({"input": "a", "output": "b", "downsample": 2}, "job field 'downsample': must be in (0, 1], got 2"),
        ({"input": "a", "output": "b", "downsample": "half"}, "job field 'downsample': expected 'auto' or a number"),
        ({"input": "a", "output": "b", "device": "tpu"}, "job field 'device': expected one of auto, cpu, cuda, mps"),
        ({"input": "a", "output": "b", "frames": "10-x"}, "job field 'frames':"),
        ({"input": "", "output": "b"}, "job field 'input': must not be empty"),
        ({"input": "a", "output": "b", "metadata": {"k": 1}}, "job field 'metadata': must map strings to strings"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_bad_fields_are_named(data, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        Job.from_dict(data)


def test_file_errors(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=re.escape(f"{bad}: not valid JSON: Expecting property name")):
        Job.from_json(bad)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"input": "a", "output": "b", "name": "x" * MAX_JOB_BYTES}))
    with pytest.raises(InputError, match=f"job file is {big.stat().st_size} bytes; the limit is {MAX_JOB_BYTES}"):
        Job.from_json(big)
    with pytest.raises(InputError, match="job file not found"):
        Job.from_json(tmp_path / "absent.json")


def test_relative_paths_resolve_but_ocio_addresses_stay(tmp_path) -> None:
    job = Job(input="plates/a.####.exr", output="/abs/m.####.exr", ocio_config="ocio://studio-config-v2.1.0")
    resolved = job.resolved(tmp_path)
    assert resolved.input == str(tmp_path / "plates" / "a.####.exr")
    assert resolved.output == "/abs/m.####.exr"
    assert resolved.ocio_config == "ocio://studio-config-v2.1.0"
