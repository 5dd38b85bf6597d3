"""The contract's Job: every check with its exact message, schema upgrades, paths, outputs, the fingerprint."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from rvm_vfx.spec import fields, schema
from rvm_vfx.spec.errors import InputError
from rvm_vfx.spec.job import (
    FIELDS,
    FIELDS_BY_NAME,
    MAX_JOB_BYTES,
    OUTPUT_FIELDS,
    PATH_FIELDS,
    PIXEL_FIELDS,
    Job,
    fields_of_kind,
    fingerprint,
)

BASE = {"input": "a.####.exr", "output": "out/m.####.exr"}
EXR_RULE = "outputs are written as OpenEXR, so the name must end in .exr"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input": ""}, "job field 'input': must not be empty"),
        ({"input": "  "}, "job field 'input': must not be empty"),
        ({"output": ""}, "job field 'output': must not be empty"),
        ({"input": 3}, "job field 'input': expected string, got integer (3)"),
        ({"output": None}, "job field 'output': expected string, got null (None)"),
        ({"frames": "10-x"}, "job field 'frames': bad frame range '10-x': '10-x' is not N, A-B or A-BxSTEP"),
        ({"frames": ""}, "job field 'frames': bad frame range '': empty"),
        ({"frames": 5}, "job field 'frames': expected string or null, got integer (5)"),
        ({"start_frame": "1"}, "job field 'start_frame': expected integer, got string ('1')"),
        ({"start_frame": 1.0}, "job field 'start_frame': expected integer, got number (1.0)"),
        ({"missing": "skip"}, "job field 'missing': expected one of error, hold, got 'skip'"),
        ({"downsample": 2}, "job field 'downsample': must be in (0, 1], got 2"),
        ({"downsample": 0}, "job field 'downsample': must be in (0, 1], got 0"),
        ({"downsample": float("nan")}, "job field 'downsample': must be in (0, 1], got nan"),
        ({"downsample": "half"}, "job field 'downsample': expected 'auto' or a number in (0, 1], got 'half'"),
        ({"downsample": True}, "job field 'downsample': expected string or number or integer, got boolean (True)"),
        ({"downsample": None}, "job field 'downsample': expected string or number or integer, got null (None)"),
        ({"device": "tpu"}, "job field 'device': expected one of auto, cpu, cuda, mps, got 'tpu'"),
        ({"precision": "fp8"}, "job field 'precision': expected one of fp32, fp16, bf16, got 'fp8'"),
        (
            {"compression": "ZIP"},
            "job field 'compression': expected one of zip, zips, piz, dwaa, dwab, none, rle, pxr24, b44, b44a, "
            "got 'ZIP'",
        ),
        ({"output_mode": "straight"}, "job field 'output_mode': expected one of premultiplied, alpha, got 'straight'"),
        ({"preroll": -1}, "job field 'preroll': must be >= 0, got -1"),
        ({"preroll": "5"}, "job field 'preroll': expected integer, got string ('5')"),
        ({"preroll": True}, "job field 'preroll': expected integer, got boolean (True)"),
        ({"snapshot_every": -3}, "job field 'snapshot_every': must be >= 0, got -3"),
        ({"overwrite": 1}, "job field 'overwrite': expected boolean, got integer (1)"),
        ({"priority": 1.5}, "job field 'priority': expected integer, got number (1.5)"),
        ({"name": 5}, "job field 'name': expected string or null, got integer (5)"),
        ({"metadata": {"k": 1}}, "job field 'metadata': must map strings to strings"),
        ({"metadata": []}, "job field 'metadata': expected object, got list ([])"),
        ({"output": "m.####.png"}, f"job field 'output': {EXR_RULE}; 'm.####.png' has '.png'"),
        ({"output": "m.####"}, f"job field 'output': {EXR_RULE}; 'm.####' has '.####'"),
        ({"alpha_output": "a.####.tif"}, f"job field 'alpha_output': {EXR_RULE}; 'a.####.tif' has '.tif'"),
        ({"fg_output": "out.exr/fg_"}, f"job field 'fg_output': {EXR_RULE}; 'out.exr/fg_' has no extension"),
        ({"schema_version": "2"}, "job field 'schema_version': expected integer, got string ('2')"),
        ({"schema_version": 0}, "job field 'schema_version': must be >= 1, got 0"),
        (
            {"schema_version": 3},
            "job field 'schema_version': version 3 is newer than this rvm-vfx reads (up to 2); update rvm-vfx",
        ),
    ],
)
def test_every_bad_value_is_named_with_its_field(changes: dict, message: str) -> None:
    with pytest.raises(InputError) as caught:
        Job.from_dict({**BASE, **changes}, source="ticket")
    assert str(caught.value) == f"ticket: {message}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "job: expected a JSON object, got list"),
        ("text", "job: expected a JSON object, got str"),
        ({"output": "b.exr"}, "job: missing required field 'input'"),
        ({"input": "a"}, "job: missing required field 'output'"),
        (
            {**BASE, "bogus": 1},
            "job: unknown field 'bogus' (known fields: alpha_output, checkpoint, compression, core_channel, "
            "core_matte, cuts, device, downsample, fg_output, frames, garbage_channel, garbage_matte, "
            "holdout_channel, holdout_matte, input, input_colorspace, invert_core, invert_garbage, invert_holdout, "
            "layer, metadata, missing, name, ocio_config, output, output_colorspace, output_mode, overwrite, passes, "
            "postroll, precision, preroll, priority, schema_version, snapshot_every, start_frame, warmup)",
        ),
    ],
)
def test_malformed_tickets(data, message: str) -> None:
    with pytest.raises(InputError) as caught:
        Job.from_dict(data)
    assert str(caught.value) == message


def test_values_that_are_allowed() -> None:
    job = Job.from_dict(
        {**BASE, "downsample": 1, "frames": "1-3", "alpha_output": "", "output": "M.####.EXR", "metadata": {"a": "b"}}
    )
    assert (job.downsample, job.alpha_output, job.output, job.metadata) == (1, "", "M.####.EXR", {"a": "b"})
    assert Job("a", "b.exr").downsample == "auto"  # positional order is the declaration order


def test_direct_construction_is_validated_and_takes_only_the_current_version() -> None:
    with pytest.raises(InputError, match=re.escape("job field 'preroll': must be >= 0, got -2")):
        Job(input="a", output="b.exr", preroll=-2)
    with pytest.raises(InputError) as caught:
        Job(input="a", output="b.exr", schema_version=1)
    assert str(caught.value) == "job field 'schema_version': expected 2, got 1; Job.from_dict upgrades older jobs"


def test_the_first_bad_field_in_declaration_order_is_reported() -> None:
    # Types are checked for every field before any value, then values in the order the fields are declared.
    with pytest.raises(InputError, match="job field 'preroll': expected integer"):
        Job.from_dict({**BASE, "frames": "x", "preroll": "5"})
    with pytest.raises(InputError, match="job field 'frames': bad frame range"):
        Job.from_dict({**BASE, "frames": "x", "device": "tpu"})
    # An output's .exr rule comes after every value rule, whatever the declaration order.
    with pytest.raises(InputError, match="job field 'preroll': must be >= 0"):
        Job.from_dict({"input": "a", "output": "b", "preroll": -1})
    with pytest.raises(InputError, match="job field 'output': outputs are written as OpenEXR"):
        Job.from_dict({"input": "a", "output": "b", "fg_output": "f.exr"})


# ------------------------------------------------------------------------------------------ schema versions


#: Optional fields added since, without a new schema version (``schema``'s rule): older tickets get their defaults.
ADDED_WITH_DEFAULTS = {
    "cuts": "auto",
    "warmup": 8,
    "passes": "forward",
    "postroll": 0,
    **{f"{kind}_matte": None for kind in ("garbage", "core", "holdout")},
    **{f"{kind}_channel": None for kind in ("garbage", "core", "holdout")},
    **{f"invert_{kind}": False for kind in ("garbage", "core", "holdout")},
}


def version_1_ticket() -> dict:
    """A ticket exactly as plugins wrote them before schema versions: every field, no ``schema_version``."""
    return {
        "input": "/plates/sh010/plate.####.exr",
        "output": "/renders/sh010/rvm/matte.####.exr",
        "frames": "1001-1010",
        "layer": None,
        "start_frame": 1,
        "missing": "error",
        "checkpoint": None,
        "downsample": 0.25,
        "device": "auto",
        "precision": "fp32",
        "ocio_config": "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6",
        "input_colorspace": "ACEScg",
        "output_colorspace": None,
        "compression": "zip",
        "output_mode": "premultiplied",
        "alpha_output": None,
        "fg_output": None,
        "preroll": 8,
        "overwrite": False,
        "snapshot_every": 0,
        "name": "RVM_Matte1",
        "priority": 3,
        "metadata": {"host": "nuke"},
    }


def test_a_version_1_ticket_is_upgraded_and_keeps_every_value() -> None:
    ticket = version_1_ticket()
    original = json.loads(json.dumps(ticket))
    job = Job.from_dict(ticket, source="ticket")
    assert job.schema_version == schema.SCHEMA_VERSION == 2
    assert {k: v for k, v in job.to_dict().items() if k != "schema_version"} == {**original, **ADDED_WITH_DEFAULTS}
    assert ticket == original  # the caller's dict is not changed
    assert schema.version_of(ticket) == 1
    assert schema.upgrade(ticket) == {**original, "schema_version": 2}


def test_the_upgrade_chain_covers_every_older_version() -> None:
    assert sorted(schema.UPGRADES) == list(range(1, schema.SCHEMA_VERSION))
    current = Job.from_dict({**BASE, "schema_version": 2}).to_dict()
    assert schema.upgrade(current) == current


def test_a_job_written_now_reads_back_as_the_same_job(tmp_path) -> None:
    job = Job(input="/p/a.####.exr", output="/o/m.####.exr", frames="1001-1010", downsample=0.25, metadata={"s": "x"})
    path = tmp_path / "job.json"
    path.write_text(job.to_json())
    assert json.loads(path.read_text())["schema_version"] == 2
    assert Job.from_json(path) == job


# ------------------------------------------------------------------------------------------ files


def test_job_file_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError) as caught:
        Job.from_json(bad)
    assert (
        str(caught.value)
        == f"{bad}: not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"
    )
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**BASE, "name": "x" * MAX_JOB_BYTES}))
    with pytest.raises(InputError) as caught:
        Job.from_json(big)
    assert str(caught.value) == f"{big}: job file is {big.stat().st_size} bytes; the limit is {MAX_JOB_BYTES}"
    with pytest.raises(InputError) as caught:
        Job.from_json(tmp_path / "absent.json")
    assert str(caught.value) == f"{tmp_path / 'absent.json'}: job file not found"
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"input": "caf\xe9"}')
    with pytest.raises(InputError) as caught:
        Job.from_json(latin)
    assert str(caught.value) == f"{latin}: job file is not UTF-8 text"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**BASE, "device": "tpu"}))
    with pytest.raises(InputError) as caught:
        Job.from_json(wrong)
    assert str(caught.value) == f"{wrong}: job field 'device': expected one of auto, cpu, cuda, mps, got 'tpu'"


def test_relative_paths_resolve_against_the_job_file_but_ocio_addresses_stay(tmp_path) -> None:
    path = tmp_path / "job.json"
    data = {
        "input": "plates/a.####.exr",
        "output": "/abs/m.####.exr",
        "alpha_output": "mattes/a.####.exr",
        "fg_output": "fg/f.####.exr",
        "checkpoint": "w/rvm.pth",
        "ocio_config": "ocio://studio-config-v2.1.0",
        "layer": "relative/looking",
    }
    path.write_text(json.dumps(data))
    job = Job.from_json(path)
    assert job.input == str(tmp_path / "plates" / "a.####.exr")
    assert job.output == "/abs/m.####.exr"
    assert job.alpha_output == str(tmp_path / "mattes" / "a.####.exr")
    assert job.fg_output == str(tmp_path / "fg" / "f.####.exr")
    assert job.checkpoint == str(tmp_path / "w" / "rvm.pth")
    assert job.ocio_config == "ocio://studio-config-v2.1.0"
    assert job.layer == "relative/looking"  # not a path
    assert (
        Job.from_dict({**BASE, "ocio_config": "conf/config.ocio"}).resolved("/s").ocio_config == "/s/conf/config.ocio"
    )


# ------------------------------------------------------------------------------------------ declarations


def test_the_path_fields_and_their_kinds() -> None:
    assert PATH_FIELDS == {
        "input": fields.PLATE,
        "output": fields.OUTPUT,
        "checkpoint": fields.CHECKPOINT,
        "ocio_config": fields.OCIO_CONFIG,
        "alpha_output": fields.OUTPUT,
        "fg_output": fields.OUTPUT,
        "garbage_matte": fields.PLATE,
        "core_matte": fields.PLATE,
        "holdout_matte": fields.PLATE,
    }
    assert OUTPUT_FIELDS == fields_of_kind(fields.OUTPUT) == ("output", "alpha_output", "fg_output")
    assert fields_of_kind(fields.PLATE) == ("input", "garbage_matte", "core_matte", "holdout_matte")


def test_outputs_lists_the_patterns_a_job_writes() -> None:
    assert Job(**BASE).outputs() == {"output": "out/m.####.exr"}
    job = Job(**BASE, fg_output="f.####.exr", alpha_output="a.####.exr")
    assert job.outputs() == {"output": "out/m.####.exr", "alpha_output": "a.####.exr", "fg_output": "f.####.exr"}


def test_every_field_is_declared_with_help_and_a_parsed_type() -> None:
    assert [f.name for f in FIELDS] == [f.name for f in dataclasses.fields(Job)]
    assert [f.name for f in FIELDS if f.required] == ["input", "output"]
    for f in FIELDS:
        assert f.help and "\n" not in f.help, f.name
        assert f.types, f.name
    assert FIELDS_BY_NAME["downsample"].types == (str, float, int)
    assert FIELDS_BY_NAME["frames"].types == (str, type(None))
    assert FIELDS_BY_NAME["metadata"].default_value() == {}
    assert FIELDS_BY_NAME["metadata"].default_value() is not FIELDS_BY_NAME["metadata"].default_value()
    flags = [f.flag for f in FIELDS if f.flag]
    assert len(flags) == len(set(flags))
    assert [f.name for f in FIELDS if not f.flag] == ["name", "priority", "metadata", "schema_version"]
    assert fields.types_of("str | None") == (str, type(None))
    with pytest.raises(TypeError, match="not 'list'"):
        fields.types_of("list")


def test_a_field_without_a_declaration_is_refused() -> None:
    @dataclasses.dataclass
    class Loose:
        plain: int = 0

    with pytest.raises(TypeError, match=re.escape("Loose.plain is not declared with declare()")):
        fields.job_fields(Loose)


# ------------------------------------------------------------------------------------------ fingerprint

#: A second value for every field that changes what the output frames hold.
OTHER_PIXEL_VALUES = {
    "cuts": "1012",
    "input": "b.####.exr",
    "output": "out/n.####.exr",
    "frames": "1-5",
    "layer": "diffuse",
    "start_frame": 1001,
    "missing": "hold",
    "checkpoint": "rvm_resnet50.pth",
    "downsample": 0.5,
    "device": "cpu",
    "precision": "bf16",
    "ocio_config": "ocio://other",
    "input_colorspace": "ACEScg",
    "output_colorspace": "lin_rec709",
    "compression": "dwaa",
    "output_mode": "alpha",
    "alpha_output": "out/a.####.exr",
    "fg_output": "out/f.####.exr",
    "preroll": 10,
    "warmup": 0,
    "passes": "bidirectional",
    "postroll": 10,
    "garbage_matte": "g.####.png",
    "garbage_channel": "R",
    "invert_garbage": True,
    "core_matte": "c.####.exr",
    "core_channel": "A",
    "invert_core": True,
    "holdout_matte": "h.####.tif",
    "holdout_channel": "Y",
    "invert_holdout": True,
}
OTHER_VALUES = {"overwrite": True, "snapshot_every": 5, "name": "shot", "priority": 9, "metadata": {"host": "nuke"}}


def test_the_pixel_fields_are_exactly_these() -> None:
    assert set(PIXEL_FIELDS) == set(OTHER_PIXEL_VALUES)
    assert set(PIXEL_FIELDS) | set(OTHER_VALUES) | {"schema_version"} == {f.name for f in FIELDS}


@pytest.mark.parametrize("name", sorted(OTHER_PIXEL_VALUES))
def test_changing_a_pixel_field_changes_the_fingerprint(name: str) -> None:
    job = Job(**BASE)
    assert fingerprint(dataclasses.replace(job, **{name: OTHER_PIXEL_VALUES[name]})) != fingerprint(job)


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_changing_anything_else_keeps_the_fingerprint(name: str) -> None:
    job = Job(**BASE)
    assert fingerprint(dataclasses.replace(job, **{name: OTHER_VALUES[name]})) == fingerprint(job)


def test_the_fingerprint_is_sixteen_hex_digits_of_the_pixel_fields() -> None:
    value = fingerprint(Job(**BASE))
    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert value == fingerprint(Job.from_dict(dict(BASE)))  # a version 1 ticket of the same render
