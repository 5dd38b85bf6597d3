"""A claimed ticket turned into a Job the worker may render, or an InputError saying why not.

A ticket is data from people who may make mistakes (or worse), so before anything is read or written:

* the ticket is a regular file under the size limit, UTF-8 JSON, validated against the Job schema
  (wrong types and unknown fields fail, naming the field);
* every path resolves, symlinks included, inside its allowed place: plates (every frame of them) and
  OCIO configs in an allowed input root (a dropped folder is its own input root), outputs in the
  output root (a relative output lands there), checkpoints in the models dir;
* checkpoints are loaded weights-only: a ``.pth`` through ``torch.load(weights_only=True)`` or a
  TF.js export (a ``model.json`` file or the folder that holds it); TorchScript, which carries code,
  is refused;
* the frame count is limited, checked on the requested range before the plate is even listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rvm_vfx.errors import InputError
from rvm_vfx.sequence import open_source, resolve_frames
from rvm_vfx.spec.fields import CHECKPOINT, FOLDER, OCIO_CONFIG, OUTPUT, PATH_KINDS, PLATE
from rvm_vfx.spec.frames import parse_frames
from rvm_vfx.spec.job import MAX_JOB_BYTES, PATH_FIELDS, Job
from rvm_vfx.spec.names import is_ocio_address

from .config import WorkerConfig
from .finetune_ticket import FINETUNE, FinetuneStage, check_finetune
from .fsutil import inside, real
from .layout import DROP, DROP_TICKET, TICKET

if TYPE_CHECKING:
    from .timeline_ticket import TimelineTicket


@dataclass
class Ticket:
    """A validated job: absolute paths, a checkpoint inside the models dir, the output frames."""

    job: Job
    checkpoint: Path
    frames: list[int]
    kind: str  # "ticket" or "folder"
    finetune: FinetuneStage | None = None  # train on the shot's keyframes first, then render with those weights

    @property
    def name(self) -> str:
        return self.job.name or Path(self.job.output).parent.name


def read_ticket_file(path: Path) -> dict:
    """The JSON object in a ticket file; refuses links, devices, oversized and non-UTF-8 files."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise InputError(f"ticket {path.name}: not found") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"ticket {path.name}: is a symlink; tickets must be regular files")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"ticket {path.name}: not a regular file")
    if st.st_size > MAX_JOB_BYTES:
        raise InputError(f"ticket {path.name}: {st.st_size} bytes; the limit is {MAX_JOB_BYTES}")
    try:
        text = path.read_bytes()[: MAX_JOB_BYTES + 1].decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise InputError(f"ticket {path.name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"ticket {path.name}: malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"ticket {path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def load_ticket(job_dir: Path, config: WorkerConfig) -> Ticket | TimelineTicket:
    """Read and validate the ticket of a claimed job folder (``ticket.json`` or ``drop/[job.json]``)."""
    drop = job_dir / DROP
    if (job_dir / TICKET).exists() or (job_dir / TICKET).is_symlink():
        data = read_ticket_file(job_dir / TICKET)
        if "timeline" in data:  # an edit to matte clip by clip: its own fields, each clip a Job checked below
            from .timeline_ticket import load_timeline_ticket

            return load_timeline_ticket(data, config)
        kind, input_base, input_roots = "ticket", None, list(config.allow_input_roots)
    elif drop.is_symlink():
        raise InputError(
            f"dropped folder {_drop_name(job_dir)!r} is a symlink (to {os.readlink(drop)}); "
            "symlinks are refused: copy the frames in instead"
        )
    elif drop.is_dir():
        inner = drop / DROP_TICKET
        data = read_ticket_file(inner) if inner.exists() or inner.is_symlink() else {}
        name = _drop_name(job_dir)
        data.setdefault("input", str(drop))
        data.setdefault("output", f"{name}/{name}.####.exr")
        data.setdefault("name", name)
        kind, input_base, input_roots = "folder", drop, [drop, *config.allow_input_roots]
    else:
        raise InputError("nothing to render: the job folder holds neither a ticket nor a dropped folder")
    stage = data.pop(FINETUNE, None)  # its own settings, not the Job's: checked once the Job's paths are placed
    ticket = check_job(Job.from_dict(data, source="ticket"), config, kind, input_base, input_roots)
    if stage is not None:
        ticket.finetune = check_finetune(stage, ticket.job, data.get("checkpoint"), config, input_base, input_roots)
    return ticket


def check_job(
    job: Job,
    config: WorkerConfig,
    kind: str = "ticket",
    input_base: Path | None = None,
    input_roots: list[Path] | None = None,
) -> Ticket:
    """A Job confined to the worker's places, its checkpoint resolved and its frames counted: the checks every
    Job the worker renders goes through, a ticket's or one clip's of a timeline ticket."""
    input_roots = list(config.allow_input_roots) if input_roots is None else input_roots
    job = _place_paths(job, config, input_base, input_roots)
    checkpoint = resolve_checkpoint(job.checkpoint, config)
    job = dataclasses.replace(
        job,
        checkpoint=str(checkpoint),
        snapshot_every=job.snapshot_every or config.snapshot_every,
    )
    frames = _frames(job, config, input_roots)
    return Ticket(job=job, checkpoint=checkpoint, frames=frames, kind=kind)


def _drop_name(job_dir: Path) -> str:
    """The dropped folder's original name: the job id without its ``-<date>-<time>-<random>`` tail."""
    parts = job_dir.name.rsplit("-", 3)
    return parts[0] if len(parts) == 4 else job_dir.name


@dataclass(frozen=True)
class _Places:
    """Where a ticket's paths may point: relative inputs start at ``base``."""

    base: Path | None
    input_roots: list[Path]
    models_dir: Path | None
    output_root: Path


def _place_paths(job: Job, config: WorkerConfig, input_base: Path | None, input_roots: list[Path]) -> Job:
    """Every path field of the Job, by its kind, made absolute and confined to the place of that kind."""
    # Inputs: relative to the dropped folder, or for a ticket to the first allowed input root.
    base = input_base or (config.allow_input_roots[0] if config.allow_input_roots else None)
    places = _Places(base, input_roots, config.models_dir, config.output_root)
    changes: dict[str, str] = {}
    for name, kind in PATH_FIELDS.items():
        value, place = getattr(job, name), _PLACE[kind]
        if value and place is not None:
            changes[name] = place(name, value, places)
    return dataclasses.replace(job, **changes)


def _place_input(name: str, value: str, places: _Places) -> str:
    """A plate (pattern, video or folder) or a folder read from: inside an allowed input root."""
    path = _absolute(value, places.base, name)
    if not inside(_folder_of(path), places.input_roots):
        raise InputError(f"ticket field '{name}': {value!r} resolves outside the allowed input roots")
    return str(real(path)) if os.path.isdir(path) else str(real(os.path.dirname(path)) / Path(path).name)


def _place_ocio_config(name: str, value: str, places: _Places) -> str:
    """An OCIO config file: in an input root or the models dir; an ``ocio://`` address names a built-in one."""
    if is_ocio_address(value):
        return value
    path = _absolute(value, places.base, name)
    allowed = [*places.input_roots, *([places.models_dir] if places.models_dir else [])]
    if not inside(path, allowed):
        raise InputError(f"ticket field '{name}': {value!r} resolves outside the allowed roots")
    return str(real(path))


def _place_output(name: str, value: str, places: _Places) -> str:
    """An output pattern: a relative one lands under the output root; every one must resolve inside it."""
    path = Path(value) if os.path.isabs(value) else places.output_root / value
    if not inside(path.parent, [places.output_root]):
        raise InputError(f"ticket field '{name}': {value!r} resolves outside the output root")
    return str(real(path.parent) / path.name)


#: The rule for each kind of path field; a new kind without one fails here, at import, rather than pass
#: unconfined. Checkpoints are placed by ``resolve_checkpoint``, which also checks what the file holds.
_PLACE: dict[str, Callable[[str, str, _Places], str] | None] = {
    PLATE: _place_input,
    FOLDER: _place_input,
    OCIO_CONFIG: _place_ocio_config,
    OUTPUT: _place_output,
    CHECKPOINT: None,
}
if set(_PLACE) != set(PATH_KINDS):
    raise TypeError(f"render_worker.ticket has no placement rule for {sorted(set(PATH_KINDS) - set(_PLACE))}")


def _absolute(value: str, base: Path | None, field: str) -> str:
    if os.path.isabs(value):
        return value
    if base is None:
        raise InputError(f"ticket field '{field}': {value!r} is relative and the worker has no input root")
    return str(base / value)


def _folder_of(path: str) -> str:
    """The folder a plate lives in: the path itself for a folder, else its parent (a pattern, a video)."""
    return path if os.path.isdir(path) else os.path.dirname(path)


def resolve_checkpoint(name: str | None, config: WorkerConfig, field: str = "checkpoint") -> Path:
    """The weights file for a ticket's ``checkpoint`` (or another ``field`` naming weights): a file or TF.js
    folder inside the models dir."""
    if config.models_dir is None:
        raise InputError(f"ticket field '{field}': this worker has no models dir, so it cannot load weights")
    name = name or config.default_checkpoint
    if not name:
        raise InputError(f"ticket field '{field}': not given, and the worker has no default checkpoint")
    models = real(config.models_dir)
    path = Path(name) if os.path.isabs(name) else models / name
    if not inside(path, [models]) or real(path) == models:
        raise InputError(f"ticket field '{field}': {name!r} is not inside the models dir")
    path = real(path)
    if path.is_dir():
        path = path / "model.json"  # a TF.js export is a folder; its manifest names the shards
    if not path.is_file():
        raise InputError(f"ticket field '{field}': {name!r} not found in the models dir")
    if path.suffix == ".json":
        _check_tfjs_shards(path, models, name, field)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist()):
                raise InputError(
                    f"ticket field '{field}': {name!r} is TorchScript, which carries code; the farm only "
                    "loads weights-only checkpoints (.pth state_dicts or a TF.js export)"
                )
    return path


def _check_tfjs_shards(manifest: Path, models: Path, name: str, field: str) -> None:
    """A manifest could name shards anywhere (``../../secret``): they must be in the models dir too."""
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8")).get("weightsManifest", [])
        shards = [manifest.parent / p for group in groups for p in group["paths"]]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        raise InputError(f"ticket field '{field}': {name!r} is not a TF.js model.json") from None
    for shard in shards:
        if not inside(shard, [models]):
            raise InputError(f"ticket field '{field}': {name!r} names a weights shard outside the models dir")


def _frames(job: Job, config: WorkerConfig, input_roots: list[Path]) -> list[int]:
    """The output frames, within the frame limit, every plate frame inside the input roots."""
    limit = config.max_frames
    if job.frames is not None:
        requested = parse_frames(job.frames)
        if len(requested) > limit:
            raise InputError(f"ticket field 'frames': {len(requested)} frames; this worker's limit is {limit}")
    else:
        requested = None
    from rvm_vfx.render import check_output_targets  # the engine's rule; imported late, as the executors do

    source = open_source(job.input, layer=job.layer, start_frame=job.start_frame)
    try:
        mapping = resolve_frames(source, requested, job.missing)
        if len(mapping) > limit:
            raise InputError(f"ticket: the plate has {len(mapping)} frames; this worker's limit is {limit}")
        for path in sorted({source.path(src) for _, src in mapping}):
            if not inside(path, input_roots):
                raise InputError(f"ticket field 'input': plate frame {path} resolves outside the allowed input roots")
        out_frames = [frame for frame, _ in mapping]
        _check_matte_frames(job, out_frames, input_roots)
        try:
            check_output_targets(job, source, out_frames)
        except InputError as exc:
            raise InputError(f"ticket: {exc}") from None
    finally:
        source.close()
    return out_frames


def _check_matte_frames(job: Job, frames: list[int], input_roots: list[Path]) -> None:
    """Every matte frame the render reads inside the input roots, as every plate frame is: a matte's folder
    inside a root may still hold links to files outside it."""
    from rvm_vfx.mattes import Mattes  # numpy: imported late, as the engine's rules are

    mattes = Mattes.open(job, frames)
    if mattes is None:
        return
    try:
        for field, files in mattes.files().items():
            for path in files:
                if not inside(path, input_roots):
                    raise InputError(
                        f"ticket field '{field}': matte frame {path} resolves outside the allowed input roots"
                    )
    finally:
        mattes.close()
