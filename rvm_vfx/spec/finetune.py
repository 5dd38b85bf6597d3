"""Shot fine-tuning settings: what ``rvm-vfx finetune``, a ticket's ``"finetune": {...}`` and a plugin all say.

Each setting is declared once below, like the Job's fields (``fields.declare``), and every check, message
(``finetune field 'time_limit': ...``) and CLI flag follows from the declaration. Settings that mean what
the Job's field of the same name means (the plate's frames, colour and layer, the base weights, the
downsample ratio, device and precision) reuse the Job's declaration, so their help, default and check
live in one place. The plate and the checkpoint written (``OUT.pth``) are not settings: a ticket's
plate is its Job's input, and where the checkpoint goes is the worker's to decide.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .fields import PLATE, FieldSpec, JobField, declare, job_fields
from .job import FIELDS_BY_NAME as JOB_FIELDS

#: The bare command's budget: an iteration count (reproducible), with a time limit as a cap on a loaded
#: machine. Measured on 2 CPU cores at 512x288 (docs/finetune.md): see ``bench/bench_finetune.py``.
DEFAULT_ITERATIONS = 150
DEFAULT_TIME_LIMIT_MINUTES = 10.0
#: The command line's progress modes (as ``matte``'s).
PROGRESS_MODES = ("auto", "bar", "json", "none")


def _as_in_job(name: str) -> Any:
    """A setting declared exactly as the Job's field ``name`` (same help, default, check and flag)."""
    field = JOB_FIELDS[name]
    spec = {f.name: getattr(field.spec, f.name) for f in dataclasses.fields(FieldSpec)}
    return declare(field.default, **spec)


def _positive_minutes(value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"must be a number of minutes > 0, got {value}")


@dataclass
class FinetuneSettings:
    """How to fine-tune the network on a shot from roto keyframes; paths may be relative to ``resolved``'s base."""

    keyframes: str = declare(
        help="keyframe mattes: an image sequence numbered like the plate (name.####.exr); every frame on disk "
        "is a keyframe",
        path=PLATE,
        nonempty=True,
        flag="keyframes",
    )
    keyframe_channel: str | None = declare(
        None,
        help="keyframes' channel (default: A, else the only channel, else R)",
        nonempty=True,
        flag="--keyframe-channel",
    )
    frames: str | None = _as_in_job("frames")
    checkpoint: str | None = _as_in_job("checkpoint")
    downsample: str | float = _as_in_job("downsample")
    iterations: int = declare(
        DEFAULT_ITERATIONS,
        help=f"training steps (default {DEFAULT_ITERATIONS})",
        minimum=1,
        flag="--iterations",
    )
    time_limit: float = declare(
        DEFAULT_TIME_LIMIT_MINUTES,
        help=f"minutes after which training stops and keeps the best so far (default {DEFAULT_TIME_LIMIT_MINUTES:g})",
        check=_positive_minutes,
        flag="--time-limit",
    )
    seed: int = declare(
        0, help="random seed: the same seed gives the same weights on one machine", minimum=0, flag="--seed"
    )
    device: str = _as_in_job("device")
    precision: str = _as_in_job("precision")
    ocio_config: str | None = _as_in_job("ocio_config")
    input_colorspace: str | None = _as_in_job("input_colorspace")
    layer: str | None = _as_in_job("layer")
    start_frame: int = _as_in_job("start_frame")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every setting's type, then every value; raises InputError naming the first bad one."""
        for f in FIELDS:
            f.check_type(getattr(self, f.name))
        for f in FIELDS:
            f.check_value(getattr(self, f.name))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "finetune") -> FinetuneSettings:
        """Settings from a JSON object (a ticket's ``"finetune"``); errors start with ``source``
        (``ticket.json: finetune: finetune field 'seed': ...`` from the worker)."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS_BY_NAME))
        if unknown:
            raise InputError(
                f"{source}: unknown field {unknown[0]!r} (known fields: {', '.join(sorted(FIELDS_BY_NAME))})"
            )
        for f in FIELDS:
            if f.required and f.name not in data:
                raise InputError(f"{source}: missing required field '{f.name}'")
        try:
            return cls(**data)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def paths(self) -> dict[str, str]:
        """The settings that are paths, by name, with their kind (``fields.PATH_KINDS``)."""
        return {name: kind for name, kind in PATH_SETTINGS.items() if getattr(self, name)}


FIELDS: tuple[JobField, ...] = job_fields(FinetuneSettings, owner="finetune")
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
#: Path settings and their kinds: the keyframes are read like a plate, the base weights like a checkpoint.
PATH_SETTINGS = {f.name: f.path for f in FIELDS if f.path is not None}


def _flag_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def to_flags(settings: FinetuneSettings) -> list[str]:
    """The ``rvm-vfx finetune`` flags that give ``settings`` (defaults left out; positionals not included)."""
    flags: list[str] = []
    for f in FIELDS:
        value = getattr(settings, f.name)
        if not f.flag or not f.flag.startswith("-") or value is None or value == f.default_value():
            continue
        if isinstance(value, bool):
            flags.append(f.flag)
        else:
            flags += [f.flag, _flag_value(value)]
    return flags


def finetune_arguments(
    plate: str, out: str, settings: FinetuneSettings, *, progress: str = "json", overwrite: bool = False
) -> list[str]:
    """The engine's arguments (after ``python -m rvm_vfx`` or ``rvm-vfx``) that train ``settings`` on ``plate``."""
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, not {progress!r}")
    arguments = ["finetune", plate, settings.keyframes, out, *to_flags(settings), "--progress", progress]
    return arguments + (["--overwrite"] if overwrite else [])
