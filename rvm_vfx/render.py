"""The render pipeline: plate frames in, premultiplied colour-managed EXR frames out.

    read (threads) → to model space → MattingSession → to scene-linear → premultiply → write (threads)

Reading and writing run in small thread pools with bounded windows, so decoding, colour and
encoding overlap the network without the memory growing with the shot. Frames are produced in
order and each is computed exactly as a plain loop would, so threading never changes a pixel.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import torch

from . import __version__
from .allocator import retain_freed_memory
from .color import ColorPipeline, load_config
from .errors import ImageReadError, InputError, OutputError, write_error
from .imageio import Plate, write_exr
from .job import OUTPUT_FIELDS, Job
from .model import MattingNetwork
from .sequence import FrameSource, format_frame, format_frames, open_source, parse_frames, resolve_frames
from .session import MattingSession, load_snapshot, pick_device, save_snapshot
from .weights import load_model, resolve_checkpoint, sha256_of

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
LARGE_FRAME_PIXELS = 2_500_000


@dataclass(frozen=True)
class IOPlan:
    """How many frames are decoded ahead of the network and encoded behind it, and by how many threads."""

    read_threads: int
    write_threads: int
    read_ahead: int
    write_behind: int


def usable_cores() -> int:
    """Cores this process may run on (a farm slot's affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def io_plan(device_type: str, pixels: int, cores: int | None = None) -> IOPlan:
    """The I/O concurrency of a render on ``device_type`` ("cpu", "cuda", "mps") for plates of ``pixels``.

    On the CPU the network already fills every core, so two threads each way are enough to overlap
    reading and writing with it; more would only take turns on the same cores. On an accelerator the
    CPU side is the whole pipeline: by the per-frame costs in ``bench/`` (1080p: about 100 CPU-ms to
    decode and convert, 150 to compose and encode), two writer threads would cap a GPU render near
    13 fps, so reading and writing get up to half the cores each. A frame in flight holds a few full-size
    float copies, so plates over ``LARGE_FRAME_PIXELS`` keep fewer of them: at 3840×2160 on the CPU, one
    frame each way cut peak memory from 3.0 to 1.9 GB at the same fps.
    """
    large = pixels > LARGE_FRAME_PIXELS
    if device_type == "cpu":
        window = 1 if large else 3
        return IOPlan(read_threads=2, write_threads=2, read_ahead=window, write_behind=window)
    threads = min(8, max(2, (cores if cores is not None else usable_cores()) // 2))
    window = max(1, threads // 2) if large else threads + 1
    return IOPlan(read_threads=threads, write_threads=threads, read_ahead=window, write_behind=window)


_SNAPSHOT_RE = re.compile(r"^snapshot\.(\d+)\.pt$")


@dataclass
class RenderReport:
    """What a render did: for the CLI's last line, the worker's report and the plugins' messages."""

    total: int
    frames_written: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nonfinite_values: int = 0
    clipped_fraction_max: float = 0.0
    resumed_from: int | None = None
    stopped: bool = False
    elapsed_s: float = 0.0
    input_colorspace: str = ""
    output_colorspace: str = ""

    @property
    def fps(self) -> float:
        return len(self.frames_written) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": len(self.frames_written),
            "frames_written": format_frames(self.frames_written, limit=1000) if self.frames_written else "",
            "outputs": self.outputs,
            "warnings": self.warnings,
            "nonfinite_values": self.nonfinite_values,
            "clipped_fraction_max": self.clipped_fraction_max,
            "resumed_from": self.resumed_from,
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 3),
            "input_colorspace": self.input_colorspace,
            "output_colorspace": self.output_colorspace,
        }


# --------------------------------------------------------------------------- model cache


_MODEL_CACHE: dict[tuple[str, str], tuple[MattingNetwork, str]] = {}
_MODEL_LOCK = threading.Lock()


def cached_model(checkpoint: str | None) -> tuple[MattingNetwork, str]:
    """(model, sha256) for a checkpoint, loaded once per process: farm workers render many jobs."""
    path = str(resolve_checkpoint(checkpoint))  # a missing one fails here, saying how to get one
    key = (os.path.realpath(path), str(os.path.getmtime(path)))
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            model = load_model(path)
            _MODEL_CACHE[key] = (model, sha256_of(path))
        return _MODEL_CACHE[key]


# --------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    """The frames to run: pre-roll (computed, not written) then output frames, each with its source."""

    preroll: list[tuple[int, int]]
    frames: list[tuple[int, int]]


def _plan(job: Job, source: Any) -> _Plan:
    requested = parse_frames(job.frames) if job.frames else None
    mapping = resolve_frames(source, requested, job.missing)
    preroll: list[tuple[int, int]] = []
    if job.preroll > 0:
        on_disk = source.frames()
        first = mapping[0][0]
        start = max(on_disk[0], first - job.preroll)  # clamped at the plate's first frame
        if start < first:
            # Pre-roll only warms the state: a gap in it is held over rather than failing the render.
            preroll = resolve_frames(source, range(start, first), "hold")
    return _Plan(preroll=preroll, frames=mapping)


def _output_paths(job: Job, frame: int) -> dict[str, str]:
    paths = {"main": format_frame(job.output, frame)}
    if job.alpha_output:
        paths["alpha"] = format_frame(job.alpha_output, frame)
    if job.fg_output:
        paths["fg"] = format_frame(job.fg_output, frame)
    return paths


class _Entries:
    """Files by identity: the real folder (by device and inode where it exists) and the name in it.

    That is what a frame write replaces (``os.replace`` onto the name), so every spelling of one file
    meets here: ``####``, ``%04d`` and ``$F4``, ``..``, a symlinked folder, a second mount of the same share.
    A name that is itself a symlink also stands for the file it leads to.
    """

    def __init__(self) -> None:
        self._folders: dict[str, tuple[object, ...]] = {}

    def _entry(self, path: str) -> tuple[object, ...]:
        folder, name = os.path.split(path)
        identity = self._folders.get(folder)
        if identity is None:
            real = os.path.realpath(folder or ".")
            try:
                info = os.stat(real)
                identity = (info.st_dev, info.st_ino)
            except OSError:  # not made yet: its real path is all there is to compare
                identity = (real,)
            self._folders[folder] = identity
        return (*identity, name)

    def of(self, path: str) -> set[tuple[object, ...]]:
        entries = {self._entry(path)}
        if os.path.islink(path):
            entries.add(self._entry(os.path.realpath(path)))
        return entries


def check_output_targets(job: Job, source: FrameSource, frames: list[int]) -> None:
    """Refuse outputs that would land on a plate file or on each other; ``--overwrite`` never lifts this.

    Runs before a frame is read or a model loads. Overwriting is for earlier renders: an output on the
    plate destroys the only copy of what it is reading, and two outputs on one file leave whichever pass
    was written last (an alpha-only file where the RGBA matte should be) with the render saying "done".
    """
    entries = _Entries()
    plate: dict[tuple[object, ...], str] = {}
    for path in dict.fromkeys(source.path(f) for f in source.frames()):
        plate.update(dict.fromkeys(entries.of(path), path))
    fields = [name for name in OUTPUT_FIELDS if getattr(job, name)]
    on_plate: dict[str, list[tuple[int, str, str]]] = {}
    shared: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for frame in frames:
        taken: dict[tuple[object, ...], tuple[str, str]] = {}
        for name in fields:
            path = format_frame(getattr(job, name), frame)
            for entry in entries.of(path):
                if entry in plate:
                    on_plate.setdefault(name, []).append((frame, path, plate[entry]))
                if entry in taken and taken[entry][0] != name:
                    first, first_path = taken[entry]
                    shared.setdefault((first, name), []).append((frame, first_path, path))
                taken.setdefault(entry, (name, path))
    for name, hits in on_plate.items():
        _, path, plate_path = hits[0]
        raise InputError(
            f"job field '{name}': {path} would overwrite the plate's own frame {plate_path} "
            f"({_frame_count(hits, frames)}); the plate is never written to"
        )
    for (first, second), hits in shared.items():
        _, path, other = hits[0]
        spelled = f" (as {other})" if other != path else ""
        raise InputError(
            f"job fields '{first}' and '{second}' name the same file {path}{spelled} "
            f"({_frame_count(hits, frames)}): one would replace the other"
        )


def _frame_count(hits: list[tuple[int, str, str]], frames: list[int]) -> str:
    hit_frames = sorted({hit[0] for hit in hits})
    return f"{len(hit_frames)} of {len(frames)} frames: {format_frames(hit_frames)}"


def _refuse_unsafe_targets(job: Job) -> None:
    """The output-target check on the job's own plate and frame range, before the renderer is built."""
    source = open_source(job.input, layer=job.layer, start_frame=job.start_frame)
    try:
        check_output_targets(job, source, [frame for frame, _ in _plan(job, source).frames])
    finally:
        source.close()


def _check_outputs(job: Job, frames: list[int], ours: bool) -> None:
    """Refuse to overwrite unless asked (or the files are this job's own, being resumed).

    An output folder that could not be made or written fails here, before any frame is read, but
    nothing is created yet: folders are made when their first frame is written, so a render that
    fails on its first frame leaves no empty folder behind, and chunks of one job rendering into the
    same folder never see it taken away under them.
    """
    patterns = [p for p in (job.output, job.alpha_output, job.fg_output) if p]
    for pattern in patterns:
        folder = Path(format_frame(pattern, frames[0])).parent
        nearest = next((f for f in (folder, *folder.parents) if f.exists()), None)
        if nearest is None:
            continue
        if not nearest.is_dir():
            raise OutputError(f"cannot create output folder {folder}: {os.strerror(errno.ENOTDIR)}")
        if not os.access(nearest, os.W_OK | os.X_OK):
            if nearest == folder:
                raise OutputError(f"output folder {folder} is not writable")
            raise OutputError(f"cannot create output folder {folder}: {nearest} is not writable")
    if job.overwrite or ours:
        return
    existing = [f for f in frames if any(os.path.exists(p) for p in _output_paths(job, f).values())]
    if existing:
        first = next(p for p in _output_paths(job, existing[0]).values() if os.path.exists(p))
        raise InputError(
            f"output exists: {first} ({len(existing)} of {len(frames)} frames: {format_frames(existing)}); "
            "use --overwrite to replace"
        )


def _job_fingerprint(job: Job) -> str:
    """What must match for snapshots in a state folder to belong to this render."""
    keys = (
        "input",
        "output",
        "frames",
        "layer",
        "start_frame",
        "missing",
        "checkpoint",
        "downsample",
        "precision",
        "ocio_config",
        "input_colorspace",
        "output_colorspace",
        "preroll",
    )
    blob = json.dumps({k: getattr(job, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def frame_is_whole(path: str) -> bool:
    """A frame counts as written only if it opens and every pixel decodes."""
    inp = oiio.ImageInput.open(path)
    if inp is None:
        oiio.geterror()
        return False
    try:
        pixels = inp.read_image(format="half")
        return pixels is not None and not inp.has_error
    finally:
        inp.close()


# --------------------------------------------------------------------------- the render


class _Renderer:
    def __init__(
        self,
        job: Job,
        model: MattingNetwork | None,
        progress: ProgressCallback | None,
        stop: threading.Event | None,
        state_dir: str | os.PathLike[str] | None,
        checkpoint_sha256: str | None,
    ) -> None:
        self.job = job
        self.progress = progress or (lambda event: None)
        self.stop = stop or threading.Event()
        self.state_dir = Path(state_dir) if state_dir else None
        if model is None:
            model, checkpoint_sha256 = cached_model(job.checkpoint)
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256 or ""
        self.color = ColorPipeline(load_config(job.ocio_config))
        self.output_space = self.color.validate_space(
            job.output_colorspace or self.color.scene_linear, field="output_colorspace"
        )
        if job.input_colorspace:
            self.color.validate_space(job.input_colorspace, field="input_colorspace")
        self._warned: set[str] = set()
        self._folders_made: set[Path] = set()
        self._lock = threading.Lock()
        self.report = RenderReport(total=0)

    # ---------------------------------------------------------------- warnings

    def warn(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
            self.report.warnings.append(message)
        log.warning(message)
        self.progress({"event": "warning", "message": message})

    # ---------------------------------------------------------------- per-frame work (threads)

    def _read(self, source: Any, out_frame: int, src_frame: int) -> tuple[Plate, np.ndarray, str]:
        try:
            plate = source.read(src_frame)
        except ImageReadError as exc:
            raise ImageReadError(f"frame {out_frame}: {exc}") from None
        for message in plate.warnings:
            self.warn(message)
        space = self.color.resolve_input_space(self.job.input_colorspace, plate.colorspace, plate.is_float)
        model_rgb, clipped = self.color.to_model(plate.rgb, space)
        with self._lock:
            self.report.nonfinite_values += plate.nonfinite
            self.report.clipped_fraction_max = max(self.report.clipped_fraction_max, clipped)
            self.report.input_colorspace = space
        return plate, model_rgb, space

    def _write(
        self, frame: int, plate: Plate, model_rgb: np.ndarray, space: str, fgr: np.ndarray, pha: np.ndarray
    ) -> list[str]:
        job = self.job
        paths = _output_paths(job, frame)
        for path in paths.values():
            self._make_folder(Path(path).parent)
        rgba = self.color.compose_foreground(plate.rgb, model_rgb, fgr, pha, space, self.output_space)
        attributes = {
            "rvm:model": f"{self.model.variant}/{self.model.refiner_name}",
            "rvm:checkpoint_sha256": self.checkpoint_sha256,
            "rvm:downsample_ratio": float(self._ratio(plate)),
            "rvm:preroll": int(job.preroll),
            "rvm:version": __version__,
            "rvm:input_colorspace": space,
            "rvm:source": plate.path,
            **{k if ":" in k else f"rvm:meta:{k}": v for k, v in job.metadata.items()},
        }
        alpha = np.ascontiguousarray(rgba[..., 3:4])
        # A matte alone is data, tagged so that no reader puts it through a colour transform.
        if job.output_mode == "alpha":
            write_exr(paths["main"], alpha, plate.header, self.color.data_space, attributes, job.compression)
        else:
            write_exr(paths["main"], rgba, plate.header, self.output_space, attributes, job.compression)
        if "alpha" in paths:
            write_exr(paths["alpha"], alpha, plate.header, self.color.data_space, attributes, job.compression)
        if "fg" in paths:
            # Straight (unpremultiplied) foreground for artists who grade before premultiplying.
            straight = np.where(alpha > 0, rgba[..., :3] / np.maximum(alpha, 1e-8), 0.0).astype(np.float32)
            fg_attrs = {**attributes, "rvm:alpha": "straight"}
            write_exr(paths["fg"], straight, plate.header, self.output_space, fg_attrs, job.compression)
        return list(paths.values())

    def _make_folder(self, folder: Path) -> None:
        if folder in self._folders_made:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        self._folders_made.add(folder)

    def _ratio(self, plate: Plate) -> float:
        return self.session.ratio_for(plate.header.height, plate.header.width)

    # ---------------------------------------------------------------- state folder

    def _snapshots(self) -> list[int]:
        if self.state_dir is None or not self.state_dir.is_dir():
            return []
        found = [int(m.group(1)) for p in self.state_dir.iterdir() if (m := _SNAPSHOT_RE.match(p.name))]
        return sorted(found)

    def _prepare_state_dir(self) -> bool:
        """True when the folder already belongs to this job (its outputs are ours to replace)."""
        if self.state_dir is None:
            return False
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.state_dir, "cannot create the state folder", exc) from exc
        marker = self.state_dir / "render.json"
        fingerprint = _job_fingerprint(self.job)
        if marker.exists():
            try:
                if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                    return True
            except (OSError, json.JSONDecodeError):
                pass
            for index in self._snapshots():  # another job's snapshots must never seed this one
                (self.state_dir / f"snapshot.{index}.pt").unlink(missing_ok=True)
        tmp = marker.with_name(".render.json.tmp")
        try:
            tmp.write_text(json.dumps({"fingerprint": fingerprint, "job": self.job.to_dict()}, indent=2))
            os.replace(tmp, marker)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise write_error(marker, "cannot write the state marker", exc) from exc
        return False

    def _resume_point(self, frames: list[tuple[int, int]]) -> tuple[int, dict[str, Any] | None]:
        """(first output index to render, snapshot to restore) from the newest snapshot whose frames are whole."""
        snapshots = self._snapshots()
        if not snapshots:
            return 0, None
        first_bad = len(frames)
        for index, (frame, _) in enumerate(frames[: snapshots[-1] + 1]):
            if not all(os.path.exists(p) and frame_is_whole(p) for p in _output_paths(self.job, frame).values()):
                first_bad = index
                break
        usable = [s for s in snapshots if s < first_bad]
        if not usable:
            return 0, None
        index = usable[-1]
        return index + 1, load_snapshot(self.state_dir / f"snapshot.{index}.pt")  # type: ignore[operator]

    def _save_snapshot(self, index: int, snap: dict[str, Any]) -> None:
        assert self.state_dir is not None
        save_snapshot(self.state_dir / f"snapshot.{index}.pt", {**snap, "output_index": index})
        # Keep the two newest: the latest, and one before it in case the latest frame is damaged.
        for old in self._snapshots()[:-2]:
            (self.state_dir / f"snapshot.{old}.pt").unlink(missing_ok=True)

    # ---------------------------------------------------------------- main loop

    def run(self) -> RenderReport:
        job = self.job
        started = time.perf_counter()
        device = pick_device(job.device)
        self._frame: int | None = None
        self.session = MattingSession(
            self.model,
            job.downsample,
            device=device,
            precision=job.precision,
            on_warning=lambda message: self.warn(f"frame {self._frame}: {message}"),
        )
        source = open_source(job.input, layer=job.layer, start_frame=job.start_frame)
        try:
            plan = _plan(job, source)
            out_frames = [f for f, _ in plan.frames]
            self.report.total = len(out_frames)
            self.report.output_colorspace = self.output_space
            ours = self._prepare_state_dir()
            _check_outputs(job, out_frames, ours)
            start_index, snap = self._resume_point(plan.frames) if ours else (0, None)
            preroll = plan.preroll
            if snap is not None:
                self.session.restore(snap)
                self.report.resumed_from = plan.frames[start_index - 1][0]
                preroll = []
            self.progress(
                {
                    "event": "start",
                    "total": len(out_frames),
                    "output": job.output,
                    "resumed_from": self.report.resumed_from,
                    "first": out_frames[0],
                    "last": out_frames[-1],
                }
            )
            work = [(f, s, False) for f, s in preroll] + [(f, s, True) for f, s in plan.frames[start_index:]]
            self._loop(source, work, start_index)
        finally:
            source.close()
        self.report.elapsed_s = time.perf_counter() - started
        if self.report.nonfinite_values:
            self.warn(f"{self.report.nonfinite_values} NaN/Inf plate values were replaced with 0 before matting")
        if self.report.clipped_fraction_max > 0:
            self.warn(
                f"up to {self.report.clipped_fraction_max:.2%} of plate values per frame lay outside [0, 1] in the "
                "network's sRGB space and were clipped for the network; the output keeps the plate's values"
            )
        return self.report

    def _loop(self, source: Any, work: list[tuple[int, int, bool]], start_index: int) -> None:
        job = self.job
        done_before = start_index
        write_index = start_index
        t0 = time.perf_counter()
        device_type = self.session.device.type
        cores = usable_cores()
        plan = io_plan(device_type, 0, cores)  # thread counts do not depend on the frame size; windows do
        pending: deque[tuple[int, int, Future[list[str]]]] = deque()
        snapshots: deque[tuple[int, dict[str, Any]]] = deque()
        with (
            ThreadPoolExecutor(plan.read_threads, thread_name_prefix="rvm-read") as readers,
            ThreadPoolExecutor(plan.write_threads, thread_name_prefix="rvm-write") as writers,
        ):
            reads: deque[Future[tuple[Plate, np.ndarray, str]]] = deque()
            next_read = 0
            read_ahead, write_behind = 1, 1  # until the first plate says how big frames are

            def top_up() -> None:
                nonlocal next_read
                while next_read < len(work) and len(reads) < read_ahead:
                    frame, src, _ = work[next_read]
                    reads.append(readers.submit(self._read, source, frame, src))
                    next_read += 1

            def finish_writes(block_until: int) -> None:
                """Collect finished writes in order; persist snapshots whose frames are all on disk."""
                while pending and (len(pending) > block_until or pending[0][2].done()):
                    index, frame, fut = pending.popleft()
                    self.report.outputs.extend(fut.result())
                    self.report.frames_written.append(frame)
                    done = len(self.report.frames_written) + done_before
                    elapsed = time.perf_counter() - t0
                    fps = len(self.report.frames_written) / elapsed if elapsed > 0 else 0.0
                    remaining = self.report.total - done
                    self.progress(
                        {
                            "event": "progress",
                            "frame": frame,
                            "done": done,
                            "total": self.report.total,
                            "fps": round(fps, 3),
                            "eta_s": round(remaining / fps, 1) if fps else None,
                        }
                    )
                    while snapshots and snapshots[0][0] <= index:
                        self._save_snapshot(*snapshots.popleft())

            try:
                top_up()
                for frame, _src, write in work:
                    if self.stop.is_set():
                        self.report.stopped = True
                        break
                    plate, model_rgb, space = reads.popleft().result()
                    sized = io_plan(device_type, plate.header.width * plate.header.height, cores)
                    read_ahead, write_behind = sized.read_ahead, sized.write_behind
                    top_up()
                    tensor = torch.from_numpy(model_rgb).permute(2, 0, 1)[None]
                    self._frame = frame
                    fgr, pha = self.session.step(tensor)
                    if not write:
                        continue
                    fgr_np = fgr[0].permute(1, 2, 0).numpy()
                    pha_np = pha[0, 0].numpy()
                    fut = writers.submit(self._write, frame, plate, model_rgb, space, fgr_np, pha_np)
                    pending.append((write_index, frame, fut))
                    if (
                        self.state_dir is not None
                        and job.snapshot_every > 0
                        and (write_index + 1) % job.snapshot_every == 0
                    ):
                        snapshots.append((write_index, self.session.snapshot()))
                    write_index += 1
                    finish_writes(write_behind)
                finish_writes(0)
                if self.report.stopped and self.state_dir is not None and write_index > start_index:
                    # Stopped on request: leave a snapshot at the last written frame so a restart resumes there.
                    self._save_snapshot(write_index - 1, self.session.snapshot())
            except BaseException:
                for fut in reads:
                    fut.cancel()
                # Let frames already being encoded land (each atomically); never leave half of one.
                for _, _, fut in pending:
                    try:
                        fut.result()
                    except Exception:  # noqa: BLE001 - the first error is the one reported
                        pass
                raise


def render(
    job: Job,
    *,
    model: MattingNetwork | None = None,
    checkpoint_sha256: str | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> RenderReport:
    """Render ``job``. With ``state_dir`` the render snapshots its state every ``job.snapshot_every``
    written frames and, called again with the same folder, resumes from the newest snapshot whose
    frames read back whole, producing the same frames as an uninterrupted render.

    Tunes the process's allocator for frame-sized buffers on first use (see ``rvm_vfx.allocator``)."""
    retain_freed_memory()
    _refuse_unsafe_targets(job)
    return _Renderer(job, model, progress, stop, state_dir, checkpoint_sha256).run()
