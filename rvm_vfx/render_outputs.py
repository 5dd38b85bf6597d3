"""A render's output files: where each frame goes, what may be written there, and writing it.

Every check runs before a frame is read: outputs never land on the plate or on each other
(``check_output_targets``, which ``--overwrite`` never lifts), and earlier renders are replaced only
when asked or when they are this job's own, being resumed (``check_outputs``). ``FrameWriter`` then
writes a frame's files: the matte (premultiplied RGBA, or alpha alone) and the optional alpha-only and
straight-foreground extras, each atomically.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from . import __version__
from .color import ColorPipeline
from .errors import InputError, OutputError
from .frame_io import Plate, write_exr
from .job import Job
from .mattes import Mattes
from .model import MattingNetwork
from .sequence import FrameSource
from .spec.frames import format_frame, format_frames


def output_paths(job: Job, frame: int) -> dict[str, str]:
    """The files one frame writes, by job field (``output`` first)."""
    return {name: format_frame(pattern, frame) for name, pattern in job.outputs().items()}


# --------------------------------------------------------------------------- where outputs may go


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


def check_output_targets(job: Job, source: FrameSource, frames: list[int], mattes: Mattes | None = None) -> None:
    """Refuse outputs that would land on a plate or matte file or on each other; ``--overwrite`` never lifts this.

    Runs before a frame is read or a model loads. Overwriting is for earlier renders: an output on the
    plate (or on a garbage/core/hold-out matte) destroys the only copy of what it is reading, and two outputs
    on one file leave whichever pass was written last (an alpha-only file where the RGBA matte should be)
    with the render saying "done".
    """
    entries = _Entries()
    plate: dict[tuple[object, ...], str] = {}
    for path in dict.fromkeys(source.path(f) for f in source.frames()):
        plate.update(dict.fromkeys(entries.of(path), path))
    read: dict[tuple[object, ...], tuple[str, str]] = {}  # a matte's files: (its field, the file)
    for field, paths in (mattes.files() if mattes is not None else {}).items():
        for path in paths:
            read.update(dict.fromkeys(entries.of(path), (field, path)))
    on_matte: dict[str, tuple[int, str, str, str]] = {}
    on_plate: dict[str, list[tuple[int, str, str]]] = {}
    shared: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for frame in frames:
        taken: dict[tuple[object, ...], tuple[str, str]] = {}
        for name, path in output_paths(job, frame).items():
            for entry in entries.of(path):
                if entry in plate:
                    on_plate.setdefault(name, []).append((frame, path, plate[entry]))
                if entry in read:
                    on_matte.setdefault(name, (frame, path, *read[entry]))
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
    for name, (frame, path, field, matte_path) in on_matte.items():
        raise InputError(
            f"job field '{name}': {path} (frame {frame}) would overwrite {matte_path}, a file of job field "
            f"'{field}'; mattes are never written to"
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


def check_outputs(job: Job, frames: list[int], ours: bool) -> None:
    """Refuse to overwrite unless asked (or the files are this job's own, being resumed).

    An output folder that could not be made or written fails here, before any frame is read, but
    nothing is created yet: folders are made when their first frame is written, so a render that
    fails on its first frame leaves no empty folder behind, and chunks of one job rendering into the
    same folder never see it taken away under them.
    """
    for path in output_paths(job, frames[0]).values():
        _check_folder(Path(path).parent)
    if job.overwrite or ours:
        return
    existing = [f for f in frames if any(os.path.exists(p) for p in output_paths(job, f).values())]
    if existing:
        first = next(p for p in output_paths(job, existing[0]).values() if os.path.exists(p))
        raise InputError(
            f"output exists: {first} ({len(existing)} of {len(frames)} frames: {format_frames(existing)}); "
            "use --overwrite to replace"
        )


def _check_folder(folder: Path) -> None:
    """An output folder can be made (or is there) and written to."""
    nearest = next((f for f in (folder, *folder.parents) if f.exists()), None)
    if nearest is None:
        return
    if not nearest.is_dir():
        raise OutputError(f"cannot create output folder {folder}: {os.strerror(errno.ENOTDIR)}")
    if not os.access(nearest, os.W_OK | os.X_OK):
        if nearest == folder:
            raise OutputError(f"output folder {folder} is not writable")
        raise OutputError(f"cannot create output folder {folder}: {nearest} is not writable")


# --------------------------------------------------------------------------- writing a frame


def compose_dtype(paths: dict[str, str]) -> type[np.floating]:
    """The precision to compose a frame in, given the files it writes (``output_paths``).

    Every file is half, so the premultiplied output is composed straight into halves (one full-frame pass
    fewer, same bits), except when a straight foreground is written: it divides the float32 colour by
    alpha, and halves would change its values.
    """
    return np.float32 if "fg_output" in paths else np.float16


class FrameWriter:
    """Writes a rendered frame's files; called from the writer threads, one frame per call."""

    def __init__(
        self,
        job: Job,
        color: ColorPipeline,
        output_space: str,
        model: MattingNetwork,
        checkpoint_sha256: str,
        mattes: Mattes | None = None,
    ) -> None:
        self.job = job
        self.mattes = mattes
        self.color = color
        self.output_space = output_space
        self.model_name = f"{model.variant}/{model.refiner_name}"
        self.checkpoint_sha256 = checkpoint_sha256
        self._folders_made: set[Path] = set()

    def write(
        self,
        frame: int,
        plate: Plate,
        model_rgb: np.ndarray,
        space: str,
        fgr: np.ndarray,
        pha: np.ndarray,
        downsample_ratio: float,
        shot: int = 0,
    ) -> list[str]:
        """Write ``frame`` (of shot index ``shot``) from the network's ``fgr``/``pha`` and its plate; returns the
        paths written."""
        paths = self._paths(frame)
        matte_attributes: dict[str, object] = {}
        if self.mattes is not None:  # garbage / core / hold-out: after the network, before colour (``mattes``)
            fgr, pha, matte_attributes = self.mattes.apply(frame, plate.header, model_rgb, fgr, pha)
        rgba = self.color.compose_foreground(
            plate.rgb, model_rgb, fgr, pha, space, self.output_space, compose_dtype(paths)
        )
        return self._write_files(paths, plate, space, rgba, downsample_ratio, shot, matte_attributes)

    @property
    def accepts_composed(self) -> bool:
        """Whether ``write_composed`` can write this job's frames: no mattes to apply to the network's outputs, no
        straight foreground (it divides float32 colour, which a half RGBA has lost)."""
        return self.mattes is None and "fg_output" not in self.job.outputs()

    def write_composed(
        self, frame: int, plate: Plate, space: str, rgba: np.ndarray, downsample_ratio: float, shot: int = 0
    ) -> list[str]:
        """Write ``frame`` from its premultiplied half RGBA, composed elsewhere (``rvm_vfx.device_color``): the same
        files, attributes and alpha as ``write``; returns the paths written."""
        if not self.accepts_composed:
            raise ValueError("a job with mattes or a straight foreground composes its frames in write()")
        if rgba.dtype != np.float16 or rgba.shape != (plate.header.height, plate.header.width, 4):
            raise ValueError(
                f"expected half RGBA of the plate's {plate.header.width}×{plate.header.height}, got "
                f"{rgba.dtype} {rgba.shape}"
            )
        return self._write_files(self._paths(frame), plate, space, rgba, downsample_ratio, shot, {})

    def _paths(self, frame: int) -> dict[str, str]:
        paths = output_paths(self.job, frame)
        for path in paths.values():
            self._make_folder(Path(path).parent)
        return paths

    def _write_files(
        self,
        paths: dict[str, str],
        plate: Plate,
        space: str,
        rgba: np.ndarray,
        downsample_ratio: float,
        shot: int,
        matte_attributes: dict[str, object],
    ) -> list[str]:
        job = self.job
        attributes = {
            "rvm:model": self.model_name,
            "rvm:checkpoint_sha256": self.checkpoint_sha256,
            "rvm:downsample_ratio": float(downsample_ratio),
            "rvm:preroll": int(job.preroll),
            "rvm:shot": int(shot),  # 0-based: the number of cuts before this frame (``rvm_vfx.cuts``)
            "rvm:version": __version__,
            "rvm:input_colorspace": space,
            "rvm:source": plate.path,
            **matte_attributes,
            **{k if ":" in k else f"rvm:meta:{k}": v for k, v in job.metadata.items()},
        }
        alpha = np.ascontiguousarray(rgba[..., 3:4])
        # A matte alone is data, tagged so that no reader puts it through a colour transform.
        if job.output_mode == "alpha":
            write_exr(paths["output"], alpha, plate.header, self.color.data_space, attributes, job.compression)
        else:
            write_exr(paths["output"], rgba, plate.header, self.output_space, attributes, job.compression)
        if "alpha_output" in paths:
            write_exr(paths["alpha_output"], alpha, plate.header, self.color.data_space, attributes, job.compression)
        if "fg_output" in paths:
            # Straight (unpremultiplied) foreground for artists who grade before premultiplying.
            straight = np.where(alpha > 0, rgba[..., :3] / np.maximum(alpha, 1e-8), 0.0).astype(np.float32)
            fg_attrs = {**attributes, "rvm:alpha": "straight"}
            write_exr(paths["fg_output"], straight, plate.header, self.output_space, fg_attrs, job.compression)
        return list(paths.values())

    def _make_folder(self, folder: Path) -> None:
        if folder in self._folders_made:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        self._folders_made.add(folder)
