"""The fine-tuning settings of the contract (rvm_vfx/spec/finetune.py) and its progress events: no training here."""

from __future__ import annotations

import json

import pytest

from rvm_vfx.cli import build_parser
from rvm_vfx.finetune.cli import _settings
from rvm_vfx.spec.errors import InputError
from rvm_vfx.spec.finetune import (
    DEFAULT_ITERATIONS,
    DEFAULT_TIME_LIMIT_MINUTES,
    FIELDS,
    FIELDS_BY_NAME,
    PATH_SETTINGS,
    FinetuneSettings,
    finetune_arguments,
    to_flags,
)
from rvm_vfx.spec.job import FIELDS_BY_NAME as JOB_FIELDS
from rvm_vfx.spec.progress import DONE, TRAIN, VALIDATION, event, parse_line


def test_the_settings_and_their_defaults() -> None:
    assert [f.name for f in FIELDS] == [
        "keyframes", "keyframe_channel", "frames", "checkpoint", "downsample", "iterations", "time_limit", "seed",
        "device", "precision", "ocio_config", "input_colorspace", "layer", "start_frame",
    ]  # fmt: skip
    settings = FinetuneSettings(keyframes="roto.####.exr")
    assert settings.iterations == DEFAULT_ITERATIONS == 150
    assert settings.time_limit == DEFAULT_TIME_LIMIT_MINUTES == 10.0
    assert (settings.seed, settings.downsample, settings.device, settings.precision) == (0, "auto", "auto", "fp32")
    assert PATH_SETTINGS == {"keyframes": "plate", "checkpoint": "checkpoint", "ocio_config": "ocio_config"}


@pytest.mark.parametrize(
    "name", ["frames", "checkpoint", "downsample", "device", "precision", "ocio_config", "input_colorspace", "layer"]
)
def test_a_setting_shared_with_the_job_is_declared_once(name: str) -> None:
    ours, theirs = FIELDS_BY_NAME[name], JOB_FIELDS[name]
    assert (ours.spec, ours.default, ours.types) == (theirs.spec, theirs.default, theirs.types)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "ticket.json: finetune: missing required field 'keyframes'"),
        ({"keyframes": "k.####.exr", "speed": 2}, "ticket.json: finetune: unknown field 'speed' (known fields: "),
        ({"keyframes": ""}, "ticket.json: finetune: finetune field 'keyframes': must not be empty"),
        ({"keyframes": "k", "time_limit": 0}, "finetune field 'time_limit': must be a number of minutes > 0, got 0"),
        ({"keyframes": "k", "time_limit": "5"}, "'time_limit': expected number or integer, got string ('5')"),
        ({"keyframes": "k", "iterations": 0}, "finetune field 'iterations': must be >= 1, got 0"),
        ({"keyframes": "k", "iterations": True}, "finetune field 'iterations': expected integer, got boolean (True)"),
        ({"keyframes": "k", "seed": -1}, "finetune field 'seed': must be >= 0, got -1"),
        ({"keyframes": "k", "downsample": 2}, "finetune field 'downsample': must be in (0, 1], got 2"),
        ({"keyframes": "k", "precision": "fp8"}, "finetune field 'precision': expected one of fp32, fp16, bf16, got "),
        ({"keyframes": "k", "frames": "9-1"}, "finetune field 'frames': "),
        ({"keyframes": "k", "keyframe_channel": " "}, "finetune field 'keyframe_channel': must not be empty"),
    ],
)
def test_a_bad_ticket_setting_is_named(data: dict, message: str) -> None:
    with pytest.raises(InputError) as caught:
        FinetuneSettings.from_dict(data, source="ticket.json: finetune")
    assert message in str(caught.value)


def test_settings_round_trip_through_json_and_the_command_line() -> None:
    settings = FinetuneSettings.from_dict(
        {"keyframes": "roto.####.exr", "iterations": 40, "time_limit": 2.5, "seed": 3, "downsample": 0.5,
         "keyframe_channel": "mask", "frames": "1001-1040", "precision": "bf16"}
    )  # fmt: skip
    assert FinetuneSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    flags = to_flags(settings)
    assert flags == [
        "--keyframe-channel", "mask", "--frames", "1001-1040", "--downsample", "0.5", "--iterations", "40",
        "--time-limit", "2.5", "--seed", "3", "--precision", "bf16",
    ]  # fmt: skip
    argv = finetune_arguments("plate.####.exr", "shot.pth", settings, overwrite=True)
    assert argv[:4] == ["finetune", "plate.####.exr", "roto.####.exr", "shot.pth"]
    assert argv[-3:] == ["--progress", "json", "--overwrite"]
    args = build_parser().parse_args(argv)
    assert (args.plate, args.out, args.overwrite, args.progress) == ("plate.####.exr", "shot.pth", True, "json")
    assert _settings(args) == settings


def test_the_bare_command_takes_the_defaults() -> None:
    args = build_parser().parse_args(["finetune", "p.####.exr", "k.####.exr", "o.pth"])
    assert _settings(args) == FinetuneSettings(keyframes="k.####.exr")
    assert args.progress == "auto" and not args.overwrite


def test_the_training_events_parse() -> None:
    train = parse_line(json.dumps(event(TRAIN, iteration=3, total=12, loss=0.25, eta_s=9.0, elapsed_s=3.1)))
    assert train is not None and (train.iteration, train.total, train.loss, train.eta_s) == (3, 12, 0.25, 9.0)
    assert train.fraction == 0.25
    held = parse_line(json.dumps(event(VALIDATION, keyframe=1012, mad_before=8.5, mad_after=4.25)))
    assert held is not None and (held.keyframe, held.mad_before, held.mad_after) == (1012, 8.5, 4.25)
    done = parse_line(json.dumps(event(DONE, done=12, total=12, checkpoint="/s/o.pth", sidecar="/s/o.json")))
    assert done is not None and (done.checkpoint, done.sidecar) == ("/s/o.pth", "/s/o.json")
    assert parse_line('{"event": "train", "iteration": "x"}').iteration is None  # never raises on a bad field
    with pytest.raises(ValueError, match="progress event 'train': missing \\['loss'\\]"):
        event(TRAIN, iteration=1, total=2)
