"""A render's state folder: what lets a stopped or killed render carry on exactly where it was.

The folder holds ``render.json``, naming the job it belongs to by ``rvm_vfx.spec.job.fingerprint`` (every
field that changes what the frames hold), and ``snapshot.N.pt``, the recurrent state after output index N.
A render resumes from the newest snapshot whose frames all read back whole; a folder left by another job,
or by this job with any pixel field changed, is taken over and its snapshots removed, so old frames are
never kept under new settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import OpenImageIO as oiio

from .errors import write_error
from .job import Job
from .render_outputs import output_paths
from .session import load_snapshot, save_snapshot
from .spec.job import fingerprint

_SNAPSHOT_RE = re.compile(r"^snapshot\.(\d+)\.pt$")
MARKER = "render.json"
#: Snapshots kept: the latest, and one before it in case the latest frame is damaged.
KEPT_SNAPSHOTS = 2


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


def _outputs_whole(_frame: int, paths: dict[str, str]) -> bool:
    return all(os.path.exists(p) and frame_is_whole(p) for p in paths.values())


class StateFolder:
    """One job's state folder: its marker, its snapshots, and where a render of the job resumes."""

    def __init__(self, folder: str | os.PathLike[str], job: Job) -> None:
        self.folder = Path(folder)
        self.job = job
        self.fingerprint = fingerprint(job)

    def snapshots(self) -> list[int]:
        """The output indices that have a snapshot, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [int(m.group(1)) for p in self.folder.iterdir() if (m := _SNAPSHOT_RE.match(p.name))]
        return sorted(found)

    def _snapshot_path(self, index: int) -> Path:
        return self.folder / f"snapshot.{index}.pt"

    def claim(self) -> bool:
        """Make the folder this job's; True when it already was (its outputs are then ours to replace)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.folder, "cannot create the state folder", exc) from exc
        marker = self.folder / MARKER
        if marker.exists():
            try:
                if json.loads(marker.read_text()).get("fingerprint") == self.fingerprint:
                    return True
            except (OSError, json.JSONDecodeError):
                pass
            for index in self.snapshots():  # another job's snapshots must never seed this one
                self._snapshot_path(index).unlink(missing_ok=True)
        self._write_marker(marker)
        return False

    def _write_marker(self, marker: Path) -> None:
        tmp = marker.with_name(f".{MARKER}.tmp")
        try:
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "job": self.job.to_dict()}, indent=2))
            os.replace(tmp, marker)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise write_error(marker, "cannot write the state marker", exc) from exc

    def resume_point(
        self, frames: list[tuple[int, int]], is_whole: Callable[[int, dict[str, str]], bool] | None = None
    ) -> tuple[int, dict[str, Any] | None]:
        """(first output index to render, snapshot to restore) from the newest snapshot whose frames are whole.

        ``is_whole(frame, its output paths)`` says whether a frame's results read back; by default, every output
        file opens and decodes (the backward pass of a bidirectional render keeps its frames otherwise)."""
        snapshots = self.snapshots()
        if not snapshots:
            return 0, None
        whole = is_whole or _outputs_whole
        first_bad = len(frames)
        for index, (frame, _) in enumerate(frames[: snapshots[-1] + 1]):
            if not whole(frame, output_paths(self.job, frame)):
                first_bad = index
                break
        usable = [s for s in snapshots if s < first_bad]
        if not usable:
            return 0, None
        index = usable[-1]
        return index + 1, load_snapshot(self._snapshot_path(index))

    def save(self, index: int, snap: dict[str, Any]) -> None:
        """Keep the state after output index ``index``; older snapshots beyond the kept few are removed."""
        save_snapshot(self._snapshot_path(index), {**snap, "output_index": index})
        for old in self.snapshots()[:-KEPT_SNAPSHOTS]:
            self._snapshot_path(old).unlink(missing_ok=True)
