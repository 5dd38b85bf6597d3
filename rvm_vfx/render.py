"""The render: plate frames in, premultiplied colour-managed EXR frames out.

    read (threads) → to model space → MattingSession → to scene-linear → premultiply → write (threads)

``render`` plans the frames, checks the outputs, claims the state folder and runs the frame pipeline.
Each of those lives in its own module: ``render_outputs`` (where frames go, what may be written there,
writing them), ``resume_state`` (the state folder: whose it is, snapshots, where to resume),
``frame_pipeline`` (read-ahead and write-behind threads around the session) and ``render_report``
(progress events and the final report). Their public names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

from .allocator import retain_freed_memory
from .color import ColorPipeline, load_config
from .cuts import Cuts, last_cut_at_or_before
from .frame_pipeline import LARGE_FRAME_PIXELS, FramePipeline, IOPlan, WorkItem, io_plan, usable_cores
from .job import Job
from .mattes import Mattes
from .model import MattingNetwork
from .passes import BIDIRECTIONAL, FORWARD, backward_folder, run_backward, warm_plan
from .render_outputs import FrameWriter, check_output_targets, check_outputs
from .render_report import ProgressCallback, RenderReport, Reporter
from .resume_state import StateFolder, frame_is_whole
from .sequence import FrameSource, open_source, parse_frames, resolve_frames
from .spec.job import parse_cuts
from .spec.progress import START
from .weights import load_model, resolve_checkpoint, sha256_of

__all__ = [
    "LARGE_FRAME_PIXELS",
    "IOPlan",
    "ProgressCallback",
    "RenderReport",
    "cached_model",
    "check_output_targets",
    "frame_is_whole",
    "io_plan",
    "render",
    "usable_cores",
]


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


def _plan(job: Job, source: FrameSource) -> _Plan:
    requested = parse_frames(job.frames) if job.frames else None
    mapping = resolve_frames(source, requested, job.missing)
    preroll: list[tuple[int, int]] = []
    if job.preroll > 0:
        on_disk = source.frames()
        first = mapping[0][0]
        start = max(on_disk[0], first - job.preroll)  # clamped at the plate's first frame
        cut = last_cut_at_or_before(job.cuts, first)
        if cut is not None:
            start = max(start, cut)  # and at the last listed cut: pre-roll never crosses into another shot
        if start < first:
            # Pre-roll only warms the state: a gap in it is held over rather than failing the render.
            preroll = resolve_frames(source, range(start, first), "hold")
    return _Plan(preroll=preroll, frames=mapping)


def _colour(job: Job) -> tuple[ColorPipeline, str]:
    """The job's OCIO config and its output space, with both colour-space fields checked against it."""
    color = ColorPipeline(load_config(job.ocio_config))
    output_space = color.validate_space(job.output_colorspace or color.scene_linear, field="output_colorspace")
    if job.input_colorspace:
        color.validate_space(job.input_colorspace, field="input_colorspace")
    return color, output_space


# --------------------------------------------------------------------------- the render


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
    # The plate is opened and planned once; its output targets are checked before the model loads or
    # anything is read or written.
    source = open_source(job.input, layer=job.layer, start_frame=job.start_frame)
    mattes: Mattes | None = None
    try:
        plan = _plan(job, source)
        out_frames = [frame for frame, _ in plan.frames]
        mattes = Mattes.open(job, out_frames)  # a matte frame missing fails here, before anything is read
        check_output_targets(job, source, out_frames, mattes)
        if model is None:
            model, checkpoint_sha256 = cached_model(job.checkpoint)
        color, output_space = _colour(job)
        reporter = Reporter(progress, pass_name=FORWARD if job.passes == BIDIRECTIONAL else None)
        started = time.perf_counter()
        writer = FrameWriter(job, color, output_space, model, checkpoint_sha256 or "", mattes)
        state = StateFolder(state_dir, job) if state_dir else None
        ours = state.claim() if state is not None else False
        check_outputs(job, out_frames, ours)
        reporter.report.total = len(plan.frames)
        reporter.report.output_colorspace = output_space
        with ExitStack() as stack:
            pipeline, plan = _forward_pass(job, source, plan, model, color, reporter, stop, state_dir, ours, stack)
            if pipeline is None:  # stopped during the backward pass
                reporter.report.stopped = True
                return reporter.finish(time.perf_counter() - started)
            work, start_index = _work(plan, pipeline, state, ours, reporter.report)
            reporter.send(
                START,
                total=len(out_frames),
                output=job.output,
                resumed_from=reporter.report.resumed_from,
                first=out_frames[0],
                last=out_frames[-1],
            )
            pipeline.run(source, work, start_index, writer, state)
            if job.passes == BIDIRECTIONAL and state_dir is not None and not reporter.report.stopped:
                shutil.rmtree(os.path.join(state_dir, "backward"), ignore_errors=True)  # a shot of half floats
    finally:
        source.close()
        if mattes is not None:
            mattes.close()
    return reporter.finish(time.perf_counter() - started)


def _forward_pass(
    job: Job,
    source: FrameSource,
    plan: _Plan,
    model: MattingNetwork,
    color: ColorPipeline,
    reporter: Reporter,
    stop: threading.Event | None,
    state_dir: str | os.PathLike[str] | None,
    ours: bool,
    stack: ExitStack,
) -> tuple[FramePipeline | None, _Plan]:
    """The pipeline and plan of the pass that writes the frames; a bidirectional job runs its backward pass
    first (None when it was stopped there), and both passes start shots at the cuts the backward pass found."""

    def pipeline_for(pass_reporter: Reporter, **hooks: object) -> FramePipeline:
        return FramePipeline(job, model, color, pass_reporter, stop, **hooks)  # type: ignore[arg-type]

    if job.passes != BIDIRECTIONAL:
        return pipeline_for(reporter, warm=warm_plan(source, job.warmup, +1, parse_cuts(job.cuts) or ())), plan
    folder, resumable = stack.enter_context(backward_folder(job, state_dir, ours))
    backward = run_backward(job, source, plan.frames, plan.preroll, pipeline_for, folder, resumable, reporter.progress)
    reporter.report.warnings.extend(w for w in backward.warnings if w not in reporter.report.warnings)
    if backward.stopped:
        return None, plan
    cuts = backward.forward_cuts(job)
    if cuts != job.cuts:  # detected by the backward pass: the forward pre-roll stops at them too
        plan = _plan(dataclasses.replace(job, cuts=cuts), source)
    warm = warm_plan(source, job.warmup, +1, parse_cuts(cuts) or ())
    return pipeline_for(reporter, cuts=Cuts(cuts), warm=warm, blend=backward.blend), plan


def _work(
    plan: _Plan, pipeline: FramePipeline, state: StateFolder | None, ours: bool, report: RenderReport
) -> tuple[list[WorkItem], int]:
    """(the frames to run, the output index of the first written), with a state folder of this job's, after
    restoring the session to where the last render stopped."""
    start_index, snap = state.resume_point(plan.frames) if state is not None and ours else (0, None)
    preroll = plan.preroll
    if snap is not None:
        pipeline.restore(snap)
        report.resumed_from = plan.frames[start_index - 1][0]
        preroll = []  # the snapshot is the warm state
    work = [(f, s, False) for f, s in preroll] + [(f, s, True) for f, s in plan.frames[start_index:]]
    return work, start_index
