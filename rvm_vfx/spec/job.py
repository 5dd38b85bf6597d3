"""Job: the one description of a render request.

The CLI's flags, a farm ticket and a plugin's knobs all become a Job, and a Job is validated in one
place, here. A Job is plain data (JSON in, JSON out): nothing in it is ever executed, and every
error names the field it is about so that an artist can fix a ticket without reading code.

Each field is declared once below; to add one, add its line (and, if an old ticket must be read
differently, an upgrade in ``schema``). Checks, paths, outputs, the resume fingerprint and the CLI's
flags follow from the declaration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .fields import CHECKPOINT, OCIO_CONFIG, OUTPUT, PLATE, JobField, declare, job_fields
from .frames import parse_frames
from .names import is_ocio_address
from .schema import SCHEMA_VERSION, upgrade

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
MISSING_MODES = ("error", "hold")
OUTPUT_MODES = ("premultiplied", "alpha")
#: OpenEXR's compressions as OpenImageIO spells them.
COMPRESSIONS = ("zip", "zips", "piz", "dwaa", "dwab", "none", "rle", "pxr24", "b44", "b44a")
#: ``cuts``: detect the cuts, or there are none; anything else lists the first frames of new shots.
CUTS_AUTO, CUTS_NONE = "auto", "none"
#: ``passes``: the recurrent network run forward only, or also backward with the two results combined per frame.
PASSES = ("forward", "bidirectional")
# A ticket is a small JSON document; anything bigger is a mistake or an attack.
MAX_JOB_BYTES = 64 * 1024


def _downsample(value: str | float) -> None:
    if isinstance(value, str):
        if value != "auto":
            raise InputError(f"expected 'auto' or a number in (0, 1], got {value!r}")
    elif not (0 < value <= 1) or not math.isfinite(value):
        raise InputError(f"must be in (0, 1], got {value}")


def _frames(value: str) -> None:
    parse_frames(value)


def parse_cuts(value: str) -> tuple[int, ...] | None:
    """The frames a ``cuts`` list names (each the first frame of a new shot), sorted; None for auto/none."""
    if value in (CUTS_AUTO, CUTS_NONE):
        return None
    frames = []
    for part in value.split(","):
        text = part.strip()
        try:
            frames.append(int(text))
        except ValueError:
            raise InputError(
                f"expected 'auto', 'none' or frame numbers separated by commas (1012,1040), got {value!r}: "
                f"{text!r} is not a frame number"
            ) from None
    return tuple(sorted(set(frames)))


def _cuts(value: str) -> None:
    parse_cuts(value)


def _metadata(value: dict[Any, Any]) -> None:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InputError("must map strings to strings")


def _schema_version(value: int) -> None:
    if value != SCHEMA_VERSION:
        raise InputError(f"expected {SCHEMA_VERSION}, got {value}; Job.from_dict upgrades older jobs")


@dataclass
class Job:
    """A render: plate in, premultiplied scene-linear EXR out. Paths may be relative to ``base_dir``."""

    input: str = declare(
        help="plate: name.####.exr, name.%04d.exr, name.$F4.exr, a folder, or a video",
        path=PLATE,
        pixels=True,
        nonempty=True,
        flag="input",
    )
    output: str = declare(
        help="output EXR pattern, e.g. out/matte.####.exr", path=OUTPUT, pixels=True, nonempty=True, flag="output"
    )
    frames: str | None = declare(
        None,
        help="frame range, e.g. 1001-1100 or 1001-1050,1060-1100 (default: all)",
        pixels=True,
        check=_frames,
        flag="--frames",
    )
    layer: str | None = declare(None, help="EXR layer to read (default: rgba)", pixels=True, flag="--layer")
    start_frame: int = declare(1, help="number of a video's first frame (default 1)", pixels=True, flag="--start-frame")
    missing: str = declare(
        "error", help="missing frames: fail or hold", choices=MISSING_MODES, pixels=True, flag="--missing"
    )
    checkpoint: str | None = declare(
        None,
        help="weights: .pth, .torchscript or TF.js model.json (default: cached)",
        path=CHECKPOINT,
        pixels=True,
        flag="--checkpoint",
    )
    downsample: str | float = declare(
        "auto",
        help="downsample ratio: auto or a number in (0, 1]",
        pixels=True,
        check=_downsample,
        flag="--downsample",
    )
    # Another device computes other low bits: frames kept from the first device would not match the rest.
    device: str = declare(
        "auto",
        help="where the network runs; auto: CUDA, then MPS, then the CPU",
        choices=DEVICES,
        pixels=True,
        flag="--device",
    )
    precision: str = declare(
        "fp32",
        help="network precision; fp16 and bf16 are faster on GPUs",
        choices=PRECISIONS,
        pixels=True,
        flag="--precision",
    )
    ocio_config: str | None = declare(
        None,
        help="OCIO config (default: $OCIO, else the built-in CG config)",
        path=OCIO_CONFIG,
        pixels=True,
        flag="--ocio-config",
    )
    input_colorspace: str | None = declare(
        None,
        help="plate colour space (default: file metadata, else by type)",
        pixels=True,
        flag="--input-colorspace",
    )
    output_colorspace: str | None = declare(
        None, help="output colour space (default: the scene_linear role)", pixels=True, flag="--output-colorspace"
    )
    # Lossy ones (dwaa, dwab, b44, pxr24) change pixels; the others change the files.
    compression: str = declare(
        "zip",
        help="EXR compression: zip zips piz dwaa dwab none ...",
        choices=COMPRESSIONS,
        pixels=True,
        flag="--compression",
    )
    output_mode: str = declare(
        "premultiplied",
        help="premultiplied RGBA, or the alpha channel alone",
        choices=OUTPUT_MODES,
        pixels=True,
        flag="--output-mode",
    )
    alpha_output: str | None = declare(
        None, help="also write alpha-only EXRs to this pattern", path=OUTPUT, pixels=True, flag="--alpha-output"
    )
    fg_output: str | None = declare(
        None,
        help="also write the straight (unpremultiplied) foreground to this pattern",
        path=OUTPUT,
        pixels=True,
        flag="--fg-output",
    )
    preroll: int = declare(
        0, help="frames run before the first one to warm the state", minimum=0, pixels=True, flag="--preroll"
    )
    # On by default: 8 frames won on the test clips (docs/quality.md, bench/evaluate_passes.py).
    warmup: int = declare(
        8,
        help="frames of the shot played in reverse before its first frame to warm the state",
        minimum=0,
        pixels=True,
        flag="--warmup",
    )
    passes: str = declare(
        "forward",
        help="forward, or bidirectional: also run backward and combine both mattes per frame",
        choices=PASSES,
        pixels=True,
        flag="--passes",
    )
    postroll: int = declare(
        0,
        help="frames after the last one run (in reverse) to warm the backward pass (bidirectional only)",
        minimum=0,
        pixels=True,
        flag="--postroll",
    )
    # Each listed frame starts a new shot: the state is reset there and pre-roll never reaches back across it.
    cuts: str = declare(
        CUTS_AUTO,
        help="shot cuts: auto (detect), none, or the first frames of new shots, e.g. 1012,1040",
        pixels=True,
        check=_cuts,
        flag="--cuts",
    )
    # Mattes: image sequences numbered like the plate, applied to alpha after the network (core, then hold-out,
    # then garbage, which wins). The channel is read by name; None: A if present, else the only channel, else R.
    garbage_matte: str | None = declare(
        None,
        help="garbage matte sequence: alpha forced to 0 where it is 1",
        path=PLATE,
        pixels=True,
        flag="--garbage-matte",
    )
    garbage_channel: str | None = declare(
        None,
        help="garbage matte's channel (default: A, else the only channel, else R)",
        pixels=True,
        nonempty=True,
        flag="--garbage-channel",
    )
    invert_garbage: bool = declare(False, help="use 1 - the garbage matte", pixels=True, flag="--invert-garbage")
    core_matte: str | None = declare(
        None, help="core matte sequence: alpha forced to 1 where it is 1", path=PLATE, pixels=True, flag="--core-matte"
    )
    core_channel: str | None = declare(
        None,
        help="core matte's channel (default: A, else the only channel, else R)",
        pixels=True,
        nonempty=True,
        flag="--core-channel",
    )
    invert_core: bool = declare(False, help="use 1 - the core matte", pixels=True, flag="--invert-core")
    holdout_matte: str | None = declare(
        None,
        help="hold-out matte sequence: alpha multiplied by 1 - it",
        path=PLATE,
        pixels=True,
        flag="--holdout-matte",
    )
    holdout_channel: str | None = declare(
        None,
        help="hold-out matte's channel (default: A, else the only channel, else R)",
        pixels=True,
        nonempty=True,
        flag="--holdout-channel",
    )
    invert_holdout: bool = declare(False, help="use 1 - the hold-out matte", pixels=True, flag="--invert-holdout")
    overwrite: bool = declare(False, help="replace existing output frames", flag="--overwrite")
    snapshot_every: int = declare(
        0, help="written frames between resume snapshots (0: none)", minimum=0, flag="--snapshot-every"
    )
    name: str | None = declare(None, help="the job's name in the farm's lists (default: its output folder's name)")
    priority: int = declare(0, help="farm priority: higher runs first")
    # Provenance in the EXR headers; it may differ between sessions (a host's version, a script's name)
    # while every pixel stays the same, so a resumed render keeps its frames.
    metadata: dict[str, str] = declare(
        factory=dict,
        help="extra EXR header attributes (rvm:meta:<key>, or the key itself when it has a ':')",
        check=_metadata,
    )
    schema_version: int = declare(
        SCHEMA_VERSION,
        help="version of the job format; older tickets are upgraded when read",
        check=_schema_version,
    )

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check every field's type, then every value, then the outputs' names; raise InputError naming the first
        bad field."""
        for f in FIELDS:
            f.check_type(getattr(self, f.name))
        for f in FIELDS:
            f.check_value(getattr(self, f.name))
        for f in FIELDS:
            f.check_name(getattr(self, f.name))

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "job") -> Job:
        """A Job from a JSON object of any schema version (upgraded); errors start with ``source``."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            data = upgrade(data)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        known = {f.name for f in FIELDS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown field {unknown[0]!r} (known fields: {', '.join(sorted(known))})")
        for f in FIELDS:
            if f.required and f.name not in data:
                raise InputError(f"{source}: missing required field '{f.name}'")
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
        for name in PATH_FIELDS:
            value = getattr(self, name)
            # ``ocio://`` names OCIO's built-in configs (what Nuke 15+ uses): an address, not a path.
            if value and not os.path.isabs(value) and not is_ocio_address(value):
                changes[name] = str(base / value)
        return dataclasses.replace(self, **changes)

    def outputs(self) -> dict[str, str]:
        """The output patterns this job writes, by field name (``output`` first)."""
        return {name: getattr(self, name) for name in OUTPUT_FIELDS if getattr(self, name)}


# ---------------------------------------------------------------------- what follows from the declarations

FIELDS: tuple[JobField, ...] = job_fields(Job)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
#: Path fields and their kinds (``fields.PATH_KINDS``), in declaration order.
PATH_FIELDS = {f.name: f.path for f in FIELDS if f.path is not None}
#: The fields that name files the render writes (each an EXR sequence pattern).
OUTPUT_FIELDS = tuple(name for name, kind in PATH_FIELDS.items() if kind == OUTPUT)
#: The fields a resumed render must find unchanged to keep the frames already written.
PIXEL_FIELDS = tuple(f.name for f in FIELDS if f.pixels)


def fields_of_kind(kind: str) -> tuple[str, ...]:
    """The names of the path fields of one kind (``fields.PLATE``, ``fields.OUTPUT``, ...)."""
    return tuple(name for name, k in PATH_FIELDS.items() if k == kind)


def fingerprint(job: Job) -> str:
    """What must match for snapshots and frames in a state folder to belong to this render."""
    blob = json.dumps({name: getattr(job, name) for name in PIXEL_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
