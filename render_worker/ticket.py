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
from dataclasses import dataclass
from pathlib import Path

from rvm_vfx.errors import InputError
from rvm_vfx.job import MAX_JOB_BYTES, OUTPUT_FIELDS, Job
from rvm_vfx.sequence import open_source, parse_frames, resolve_frames

from .config import WorkerConfig
from .fsutil import inside, real
from .layout import DROP, DROP_TICKET, TICKET


@dataclass
class Ticket:
    """A validated job: absolute paths, a checkpoint inside the models dir, the output frames."""

    job: Job
    checkpoint: Path
    frames: list[int]
    kind: str  # "ticket" or "folder"

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


def load_ticket(job_dir: Path, config: WorkerConfig) -> Ticket:
    """Read and validate the ticket of a claimed job folder (``ticket.json`` or ``drop/[job.json]``)."""
    drop = job_dir / DROP
    if (job_dir / TICKET).exists() or (job_dir / TICKET).is_symlink():
        data = read_ticket_file(job_dir / TICKET)
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
    job = Job.from_dict(data, source="ticket")
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


def _place_paths(job: Job, config: WorkerConfig, input_base: Path | None, input_roots: list[Path]) -> Job:
    changes: dict[str, str] = {}
    # Inputs: relative to the dropped folder, or for a ticket to the first allowed input root.
    base = input_base or (config.allow_input_roots[0] if config.allow_input_roots else None)
    plate = _absolute(job.input, base, "input")
    if not inside(_folder_of(plate), input_roots):
        raise InputError(f"ticket field 'input': {job.input!r} resolves outside the allowed input roots")
    changes["input"] = (
        str(real(plate)) if os.path.isdir(plate) else str(real(os.path.dirname(plate)) / Path(plate).name)
    )
    if job.ocio_config and not job.ocio_config.startswith("ocio://"):  # ocio:// names a built-in config
        config_path = _absolute(job.ocio_config, base, "ocio_config")
        allowed = [*input_roots, *([config.models_dir] if config.models_dir else [])]
        if not inside(config_path, allowed):
            raise InputError(f"ticket field 'ocio_config': {job.ocio_config!r} resolves outside the allowed roots")
        changes["ocio_config"] = str(real(config_path))
    # Outputs: relative ones land under the output root; every one must resolve inside it.
    for name in OUTPUT_FIELDS:
        value = getattr(job, name)
        if not value:
            continue
        path = Path(value) if os.path.isabs(value) else config.output_root / value
        if not inside(path.parent, [config.output_root]):
            raise InputError(f"ticket field '{name}': {value!r} resolves outside the output root")
        changes[name] = str(real(path.parent) / path.name)
    return dataclasses.replace(job, **changes)


def _absolute(value: str, base: Path | None, field: str) -> str:
    if os.path.isabs(value):
        return value
    if base is None:
        raise InputError(f"ticket field '{field}': {value!r} is relative and the worker has no input root")
    return str(base / value)


def _folder_of(path: str) -> str:
    """The folder a plate lives in: the path itself for a folder, else its parent (a pattern, a video)."""
    return path if os.path.isdir(path) else os.path.dirname(path)


def resolve_checkpoint(name: str | None, config: WorkerConfig) -> Path:
    """The weights file for a ticket's ``checkpoint``: a file or TF.js folder inside the models dir."""
    if config.models_dir is None:
        raise InputError("ticket field 'checkpoint': this worker has no models dir, so it cannot load weights")
    name = name or config.default_checkpoint
    if not name:
        raise InputError("ticket field 'checkpoint': not given, and the worker has no default checkpoint")
    models = real(config.models_dir)
    path = Path(name) if os.path.isabs(name) else models / name
    if not inside(path, [models]) or real(path) == models:
        raise InputError(f"ticket field 'checkpoint': {name!r} is not inside the models dir")
    path = real(path)
    if path.is_dir():
        path = path / "model.json"  # a TF.js export is a folder; its manifest names the shards
    if not path.is_file():
        raise InputError(f"ticket field 'checkpoint': {name!r} not found in the models dir")
    if path.suffix == ".json":
        _check_tfjs_shards(path, models, name)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist()):
                raise InputError(
                    f"ticket field 'checkpoint': {name!r} is TorchScript, which carries code; the farm only "
                    "loads weights-only checkpoints (.pth state_dicts or a TF.js export)"
                )
    return path


def _check_tfjs_shards(manifest: Path, models: Path, name: str) -> None:
    """A manifest could name shards anywhere (``../../secret``): they must be in the models dir too."""
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8")).get("weightsManifest", [])
        shards = [manifest.parent / p for group in groups for p in group["paths"]]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        raise InputError(f"ticket field 'checkpoint': {name!r} is not a TF.js model.json") from None
    for shard in shards:
        if not inside(shard, [models]):
            raise InputError(f"ticket field 'checkpoint': {name!r} names a weights shard outside the models dir")


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
        try:
            check_output_targets(job, source, out_frames)
        except InputError as exc:
            raise InputError(f"ticket: {exc}") from None
    finally:
        source.close()
    return out_frames
