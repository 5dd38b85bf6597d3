"""Job: the one description of a render request.

The CLI's flags, a farm ticket and a plugin's knobs all become a Job, and a Job is validated in one
place, here. A Job is plain data (JSON in, JSON out): nothing in it is ever executed, and every
error names the field it is about so that an artist can fix a ticket without reading code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .sequence import parse_frames

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
MISSING_MODES = ("error", "hold")
OUTPUT_MODES = ("premultiplied", "alpha")
COMPRESSIONS = ("zip", "zips", "piz", "dwaa", "dwab", "none", "rle", "pxr24", "b44", "b44a")
#: The fields that name files the render writes (each an EXR sequence pattern).
OUTPUT_FIELDS = ("output", "alpha_output", "fg_output")
# A ticket is a small JSON document; anything bigger is a mistake or an attack.
MAX_JOB_BYTES = 64 * 1024


@dataclass
class Job:
    """A render: plate in, premultiplied scene-linear EXR out. Paths may be relative to ``base_dir``."""

    input: str
    output: str
    frames: str | None = None
    layer: str | None = None
    start_frame: int = 1
    missing: str = "error"
    checkpoint: str | None = None
    downsample: str | float = "auto"
    device: str = "auto"
    precision: str = "fp32"
    ocio_config: str | None = None
    input_colorspace: str | None = None
    output_colorspace: str | None = None
    compression: str = "zip"
    output_mode: str = "premultiplied"
    alpha_output: str | None = None
    fg_output: str | None = None
    preroll: int = 0
    overwrite: bool = False
    snapshot_every: int = 0
    name: str | None = None
    priority: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check every field's type and range; raise InputError naming the first bad field."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _FIELD_TYPES[f.name])
        _nonempty("input", self.input)
        _nonempty("output", self.output)
        _choice("missing", self.missing, MISSING_MODES)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("compression", self.compression, COMPRESSIONS)
        _choice("output_mode", self.output_mode, OUTPUT_MODES)
        if isinstance(self.downsample, str):
            if self.downsample != "auto":
                raise InputError(
                    f"job field 'downsample': expected 'auto' or a number in (0, 1], got {self.downsample!r}"
                )
        elif not (0 < self.downsample <= 1) or not math.isfinite(self.downsample):
            raise InputError(f"job field 'downsample': must be in (0, 1], got {self.downsample}")
        for name in ("preroll", "snapshot_every"):
            if getattr(self, name) < 0:
                raise InputError(f"job field '{name}': must be >= 0, got {getattr(self, name)}")
        if self.frames is not None:
            try:
                parse_frames(self.frames)
            except InputError as exc:
                raise InputError(f"job field 'frames': {exc}") from None
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InputError("job field 'metadata': must map strings to strings")
        for name in OUTPUT_FIELDS:
            if getattr(self, name):
                _exr_name(name, getattr(self, name))

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "job") -> Job:
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown field {unknown[0]!r} (known fields: {', '.join(sorted(known))})")
        for required in ("input", "output"):
            if required not in data:
                raise InputError(f"{source}: missing required field '{required}'")
        try:
            return cls(**data)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Job:
        """Read a job file; relative paths in it are taken relative to the file's folder."""
        path = Path(path)
        text = read_limited(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        job = cls.from_dict(data, source=str(path))
        return job.resolved(path.parent)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def resolved(self, base_dir: str | os.PathLike[str]) -> Job:
        """A copy whose relative paths are made absolute against ``base_dir``."""
        base = Path(base_dir)
        changes = {}
        for name in ("input", "output", "alpha_output", "fg_output", "checkpoint", "ocio_config"):
            value = getattr(self, name)
            # ``ocio://`` names OCIO's built-in configs (what Nuke 15+ uses): an address, not a path.
            if value and not os.path.isabs(value) and not value.startswith("ocio://"):
                changes[name] = str(base / value)
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- helpers

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input": (str,),
    "output": (str,),
    "frames": (str, type(None)),
    "layer": (str, type(None)),
    "start_frame": (int,),
    "missing": (str,),
    "checkpoint": (str, type(None)),
    "downsample": (str, float, int),
    "device": (str,),
    "precision": (str,),
    "ocio_config": (str, type(None)),
    "input_colorspace": (str, type(None)),
    "output_colorspace": (str, type(None)),
    "compression": (str,),
    "output_mode": (str,),
    "alpha_output": (str, type(None)),
    "fg_output": (str, type(None)),
    "preroll": (int,),
    "overwrite": (bool,),
    "snapshot_every": (int,),
    "name": (str, type(None)),
    "priority": (int,),
    "metadata": (dict,),
}

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", type(None): "null"}


def _check_type(name: str, value: Any, allowed: tuple[type, ...]) -> None:
    # bool is an int in Python; a ticket saying "preroll": true is still a mistake.
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        expected = " or ".join(_TYPE_NAMES[t] for t in allowed)
        got = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise InputError(f"job field '{name}': expected {expected}, got {got} ({value!r})")


def _nonempty(name: str, value: str) -> None:
    if not value.strip():
        raise InputError(f"job field '{name}': must not be empty")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"job field '{name}': expected one of {', '.join(choices)}, got {value!r}")


def _exr_name(name: str, value: str) -> None:
    """Outputs are always OpenEXR, so a ``.png`` name would hide EXR data behind the wrong extension."""
    extension = os.path.splitext(os.path.basename(value))[1]
    if extension.lower() != ".exr":
        shown = repr(extension) if extension else "no extension"
        raise InputError(
            f"job field '{name}': outputs are written as OpenEXR, so the name must end in .exr; {value!r} has {shown}"
        )


def read_limited(path: Path, limit: int = MAX_JOB_BYTES) -> str:
    """Read a job/ticket file, refusing oversized or non-text files with a message naming them."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: job file is {size} bytes; the limit is {limit}")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: job file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: job file is not UTF-8 text") from None
