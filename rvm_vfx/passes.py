"""Warm start and the bidirectional pass: where the recurrent memory of a shot's first frame comes from.

RVM's error is highest on a shot's first frames, where its memory (r1..r4) is empty. Two things fill it
without training:

* **Warm-up** (``warmup`` N): before the first frame of a shot, the frames after it (first+N .. first+1)
  are stepped in reverse, not written, so the state arriving at the first frame comes from its neighbours.
  Pre-roll is the real past, warm-up the near future played backwards; they compose (warm-up plays before
  the pre-roll, from the first frame run). The warm-up stops at the plate's end and at the next cut; with
  detected cuts, a cut found inside the warm-up resets the state there (see ``warm_reads``).
* **Bidirectional** (``passes`` bidirectional): the shot is run backward (warmed by ``postroll`` frames
  after its end, played in reverse, and by the mirrored warm-up), each frame's full-resolution fgr/pha
  kept on disk as half floats (``BackwardStore``), then forward, each frame combined with its stored
  backward result (``combine``) before mattes, colour, premultiply and write. One frame of each pass is in
  memory at a time, whatever the shot's length.

The functions here are the engine's one definition of the warm-up order and of the combination;
``bench/evaluate_passes.py`` imports them to measure what the renders do.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cuts import Cuts
from .errors import write_error
from .frame_pipeline import FramePipeline, WarmPlan
from .job import Job
from .render_report import ProgressCallback, Reporter
from .resume_state import StateFolder
from .sequence import FrameSource, VideoSource, resolve_frames
from .spec.job import CUTS_AUTO, CUTS_NONE
from .spec.progress import START

FORWARD, BACKWARD = "forward", "backward"
BIDIRECTIONAL = "bidirectional"

#: How the two passes are combined (``combine``'s ``mode``): plain mean; each pass weighted by how much of the shot
#: it remembers at that frame; or by agreement (the mean where the passes agree, the lower alpha where they differ
#: by more than ``DISAGREE``: a pass's usual mistake is a ghost of where the subject was or will be). ``COMBINE`` is
#: the engine's choice, measured by ``bench/evaluate_passes.py`` (docs/quality.md).
COMBINE_MODES = ("mean", "memory", "agreement")
DISAGREE = 0.1
COMBINE = "agreement"
#: Frames after which a pass's memory counts as full for ``memory`` weighting: the paper's error curve flattens
#: after about 15 frames; weights follow 1 - exp(-seen / MEMORY_FRAMES).
MEMORY_FRAMES = 6.0


def warm_sources(first: int, count: int, direction: int, limit: int) -> list[int]:
    """The frames stepped (in this order, not written) to warm the state before ``first``.

    ``direction`` is the pass's: +1 (forward) warms with first+count .. first+1, the near future played
    backward; -1 (the backward pass) mirrors it, first-count .. first-1 played forward. ``limit`` is the last
    frame of the shot in that direction (the plate's end or the frame before the next cut), inclusive.
    """
    if count <= 0:
        return []
    if direction > 0:
        stop = min(first + count, limit)
        return list(range(stop, first, -1))
    stop = max(first - count, limit)
    return list(range(stop, first))


def shot_limit(first: int, direction: int, plate_frames: tuple[int, int], cuts: tuple[int, ...]) -> int:
    """The last frame of ``first``'s shot going ``direction``: clamped at the plate and the listed ``cuts``."""
    low, high = plate_frames
    if direction > 0:
        after = [c for c in cuts if c > first]
        return min([high, *(c - 1 for c in after)])
    before = [c for c in cuts if c <= first]
    return max([low, *before])


def memory_weight(seen: int) -> float:
    """How full a pass's memory is after ``seen`` frames of the shot (0: empty, towards 1: warm)."""
    return 1.0 - math.exp(-max(0, seen) / MEMORY_FRAMES)


def combine(
    forward: tuple[np.ndarray, np.ndarray],
    backward: tuple[np.ndarray, np.ndarray],
    seen_forward: int,
    seen_backward: int,
    mode: str = COMBINE,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame's (fgr, pha) from the forward and backward passes' (fgr H×W×3, pha H×W), float32.

    ``seen_*`` is how many frames of the shot each pass had stepped when it reached this frame (warm-up and
    pre-/post-roll included): with ``memory``, a pass that has just started a shot counts for less.
    """
    if mode == "agreement":
        return _by_agreement(forward, backward)
    if mode == "mean":
        weight = 0.5
    elif mode == "memory":
        wf, wb = memory_weight(seen_forward), memory_weight(seen_backward)
        weight = 0.5 if wf + wb == 0 else wf / (wf + wb)
    else:
        raise ValueError(f"unknown combination {mode!r} (known: {', '.join(COMBINE_MODES)})")
    w = np.float32(weight)
    fgr = w * forward[0] + (np.float32(1) - w) * backward[0].astype(np.float32)
    pha = w * forward[1] + (np.float32(1) - w) * backward[1].astype(np.float32)
    return fgr.astype(np.float32, copy=False), pha.astype(np.float32, copy=False)


def _by_agreement(
    forward: tuple[np.ndarray, np.ndarray], backward: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    fgr_f, pha_f = forward
    fgr_b, pha_b = backward[0].astype(np.float32), backward[1].astype(np.float32)
    half = np.float32(0.5)
    differ = np.abs(pha_f - pha_b) > np.float32(DISAGREE)
    take_forward = pha_f <= pha_b
    pha = np.where(differ, np.where(take_forward, pha_f, pha_b), half * (pha_f + pha_b))
    pick = np.where(take_forward[..., None], fgr_f, fgr_b)
    fgr = np.where(differ[..., None], pick, half * (fgr_f + fgr_b))
    return fgr.astype(np.float32, copy=False), pha.astype(np.float32, copy=False)


class BackwardStore:
    """The backward pass's results, one half-float ``.npy`` per frame (H×W×4: fgr then pha) in a folder.

    Half floats keep a 1080p frame at 16 MB on disk and hold alpha to 1/2048, far below any matte error;
    the forward pass reads them back, so a render's result is the same whether or not it was resumed.
    A file is written under a temporary name and renamed, so a killed render leaves whole files only.
    ``done.json`` marks the pass complete and lists the cuts it found (the forward pass uses them).
    """

    DONE = "done.json"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, frame: int) -> Path:
        return self.folder / f"backward.{frame}.npy"

    def write(self, frame: int, fgr: np.ndarray, pha: np.ndarray, seen: int) -> list[str]:
        """Keep one frame; returns its path (the pipeline lists what it wrote)."""
        path = self.path(frame)
        tmp = path.with_name(f".{path.name}.tmp")
        pixels = np.concatenate([fgr, pha[..., None]], axis=-1).astype(np.float16)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                np.save(handle, pixels)
                np.save(handle, np.asarray([seen], dtype=np.int64))
            os.replace(tmp, path)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise write_error(path, "cannot write the backward pass's frame", exc) from exc
        return [str(path)]

    def read(self, frame: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(fgr, pha, frames the backward pass had seen) for ``frame``."""
        with open(self.path(frame), "rb") as handle:
            pixels = np.load(handle)
            seen = int(np.load(handle)[0])
        return pixels[..., :3], pixels[..., 3], seen

    def is_whole(self, frame: int) -> bool:
        try:
            self.read(frame)
        except (OSError, ValueError, EOFError, IndexError):
            return False
        return True

    def finish(self, cuts: list[int]) -> None:
        """Mark the pass complete, with the cuts it found (first frames of new shots, sorted)."""
        marker = self.folder / self.DONE
        tmp = marker.with_name(f".{self.DONE}.tmp")
        try:
            tmp.write_text(json.dumps({"cuts": sorted(cuts)}))
            os.replace(tmp, marker)
        except OSError as exc:
            raise write_error(marker, "cannot mark the backward pass done", exc) from exc

    def finished(self) -> list[int] | None:
        """The cuts of a completed pass, or None when it has not completed."""
        try:
            return [int(c) for c in json.loads((self.folder / self.DONE).read_text())["cuts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None


# --------------------------------------------------------------------------- planning the passes


def ordered_frames(source: FrameSource, frames: list[int]) -> list[tuple[int, int]]:
    """(frame, source frame) for ``frames`` in the order given; a frame missing on disk is held over (warm-up
    and post-roll only warm the state, like pre-roll)."""
    if not frames:
        return []
    pairs = dict(resolve_frames(source, frames, "hold"))
    return [(f, pairs[f]) for f in frames]


def warm_plan(source: FrameSource, count: int, direction: int, cuts: tuple[int, ...]) -> WarmPlan | None:
    """The pass's warm-up: for a shot's first source frame, the frames stepped before it (``warm_sources``)."""
    if count <= 0:
        return None
    on_disk = source.frames()
    bounds = (on_disk[0], on_disk[-1])

    def plan(first: int) -> list[tuple[int, int]]:
        limit = shot_limit(first, direction, bounds, cuts)
        return ordered_frames(source, warm_sources(first, count, direction, limit))

    return plan


def postroll_frames(source: FrameSource, last: int, count: int, cuts: tuple[int, ...]) -> list[tuple[int, int]]:
    """The backward pass's post-roll: the real frames after ``last`` (up to ``count``, within its shot and the
    plate), in the order stepped: the farthest first."""
    if count <= 0:
        return []
    on_disk = source.frames()
    limit = shot_limit(last, +1, (on_disk[0], on_disk[-1]), cuts)
    return ordered_frames(source, list(range(min(last + count, limit), last, -1)))


@dataclass
class Backward:
    """A completed backward pass: where its frames are and the cuts both passes use."""

    store: BackwardStore
    cuts: list[int]
    stopped: bool = False
    warnings: list[str] = field(default_factory=list)

    def forward_cuts(self, job: Job) -> str:
        """The ``cuts`` value the forward pass runs with: detected cuts become the list the backward pass found."""
        if job.cuts != CUTS_AUTO:
            return job.cuts
        return ",".join(str(c) for c in sorted(set(self.cuts))) or CUTS_NONE

    def blend(self, frame: int, fgr: np.ndarray, pha: np.ndarray, seen: int) -> tuple[np.ndarray, np.ndarray]:
        """The forward pass's frame combined with the stored backward one (on a writer thread)."""
        back_fgr, back_pha, back_seen = self.store.read(frame)
        return combine((fgr, pha), (back_fgr, back_pha), seen, back_seen)


def run_backward(
    job: Job,
    source: FrameSource,
    frames: list[tuple[int, int]],
    preroll: list[tuple[int, int]],
    pipeline_for: Callable[..., FramePipeline],
    folder: Path,
    resumable: bool,
    progress: ProgressCallback | None,
) -> Backward:
    """Run ``frames`` backward, keeping each frame's result in ``folder``; resumes from its snapshots there.

    With detected cuts the pass also reads the forward pass's pre-roll (stepped, not kept), so the cuts it finds
    cover every frame either pass reads; the forward pass then uses them (``Backward.forward_cuts``) and both
    passes start their shots at the same frames."""
    store = BackwardStore(folder)
    done = store.finished()
    if done is not None:
        return Backward(store, done)
    reporter = Reporter(progress, pass_name=BACKWARD)
    if isinstance(source, VideoSource):
        reporter.warn(
            f"{source.filename}: the backward pass reads the video from its last frame to its first, and a video "
            "decodes forward only (each step back decodes from the start): slow for long shots; render an image "
            "sequence of the plate first"
        )
    cuts = Cuts(job.cuts, reverse=True)
    listed = cuts.listed
    pipeline = pipeline_for(reporter, cuts=cuts, warm=warm_plan(source, job.warmup, -1, listed), sink=store.write)
    state = StateFolder(folder, job) if resumable else None
    order = list(reversed(frames))
    lead = postroll_frames(source, frames[-1][0], job.postroll, listed)
    tail = list(reversed(preroll)) if cuts.detects else []
    start_index, snap = (0, None)
    if state is not None:
        state.claim()
        start_index, snap = state.resume_point(order, is_whole=lambda frame, _paths: store.is_whole(frame))
    if snap is not None:
        pipeline.restore(snap)
        reporter.report.resumed_from = order[start_index - 1][0]
        lead = []
    work = [(f, s, False) for f, s in lead] + [(f, s, True) for f, s in order[start_index:]]
    work += [(f, s, False) for f, s in tail]
    reporter.report.total = len(order)
    reporter.send(
        START,
        total=len(order),
        output=job.output,
        resumed_from=reporter.report.resumed_from,
        first=order[0][0],
        last=order[-1][0],
    )
    pipeline.run(source, work, start_index, None, state)
    result = Backward(store, list(cuts.found), reporter.report.stopped, reporter.report.warnings)
    if not result.stopped:
        store.finish(result.cuts)
    return result


@contextmanager
def backward_folder(job: Job, state_dir: str | os.PathLike[str] | None, ours: bool) -> Iterator[tuple[Path, bool]]:
    """(the folder the backward pass keeps its frames in, whether they survive a crash for a resume).

    With a state folder it is ``backward/`` in it (emptied when the state folder was another job's); without one,
    a temporary folder beside the output frames, removed when the render ends. After a render that completes,
    the backward frames are removed (a shot's worth of half floats) either way."""
    if state_dir is not None:
        folder = Path(state_dir) / "backward"
        if not ours:
            shutil.rmtree(folder, ignore_errors=True)
        yield folder, True
        return
    parent = Path(job.output).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".rvm-backward-", dir=parent))
    except OSError as exc:
        raise write_error(parent, "cannot make the backward pass's temporary folder", exc) from exc
    try:
        yield folder, False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
