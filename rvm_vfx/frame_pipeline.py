"""The frame pipeline: plates decoded ahead of the network, frames encoded behind it, in order.

    read (threads) → to model space → MattingSession → (to scene-linear → premultiply → write) (threads)

Reading and writing run in small thread pools with bounded windows, so decoding, colour and encoding
overlap the network without the memory growing with the shot. Frames are stepped in order and each is
computed exactly as a plain loop would, so threading never changes a pixel. A snapshot of the recurrent
state is kept only once every frame up to it is on disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .color import ColorPipeline
from .cuts import CutDetector, Cuts, Signature, signature
from .device_color import DeviceColor, DeviceFrame
from .errors import ImageReadError
from .frame_io import Plate
from .job import Job
from .model import MattingNetwork
from .render_outputs import FrameWriter
from .render_report import Reporter
from .resume_state import StateFolder
from .sequence import FrameSource
from .session import MattingSession, pick_device
from .spec.progress import PROGRESS

LARGE_FRAME_PIXELS = 2_500_000

#: A frame's network input: numpy on the CPU path, on the network's device on the device colour path.
ModelInput = "np.ndarray | DeviceFrame"
#: A frame as read: the plate, its network input, the input's colour space and its cut signature.
_Read = tuple[Plate, ModelInput, str, "Signature | None"]

#: One frame of the work list: (output frame number, source frame read for it, whether it is written).
WorkItem = tuple[int, int, bool]
#: The frames (output number, source frame) that warm the state before a shot's first source frame, in the order
#: they are stepped (``rvm_vfx.passes.warm_sources``).
WarmPlan = Callable[[int], list[tuple[int, int]]]
#: What a pass does with a frame's (fgr, pha) and how many frames of the shot it had seen: the forward pass of a
#: bidirectional render combines them with the backward pass's (``blend``), the backward pass keeps them (``sink``).
Blend = Callable[[int, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
Sink = Callable[[int, np.ndarray, np.ndarray, int], list[str]]


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
    CPU side is the whole pipeline: by the per-frame costs in ``bench/`` (1080p: about 70 CPU-ms to
    decode and convert, 90 to compose and encode; the premultiply runs on the writer's thread, not torch's
    pool), two writer threads would cap a GPU render near 22 fps, so reading and writing get up to half
    the cores each. A frame in flight holds a few full-size
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


def _network_input(model_rgb: ModelInput) -> torch.Tensor:
    """A frame's network input as the session takes it (1×3×H×W, a view either way)."""
    if isinstance(model_rgb, DeviceFrame):
        return model_rgb.network_input()
    return torch.from_numpy(model_rgb).permute(2, 0, 1)[None]


class FramePipeline:
    """Steps one job's frames through a ``MattingSession``, reading ahead and writing behind it."""

    def __init__(
        self,
        job: Job,
        model: MattingNetwork,
        color: ColorPipeline,
        reporter: Reporter,
        stop: threading.Event | None,
        *,
        cuts: Cuts | None = None,
        warm: WarmPlan | None = None,
        blend: Blend | None = None,
        sink: Sink | None = None,
        device_color: bool | None = None,
    ) -> None:
        """``device_color``: colour and compositing on the network's device (``rvm_vfx.device_color``); None uses it on
        CUDA and MPS sessions, True also on a CPU one (tests, the bench's comparison), False never."""
        self.job = job
        self.color = color
        self.reporter = reporter
        self.stop = stop or threading.Event()
        self.frame_in_network: int | None = None  # for the session's warnings, which name no frame
        self.cuts = cuts if cuts is not None else Cuts(job.cuts)
        self.warm, self.blend, self.sink = warm, blend, sink
        self.restored = False  # a restored state is warm already: no warm-up before the first frame run
        self.session = MattingSession(
            model,
            job.downsample,
            device=pick_device(job.device),
            precision=job.precision,
            on_warning=lambda message: reporter.warn(f"frame {self.frame_in_network}: {message}"),
        )
        self.device_color = device_color
        self.device: DeviceColor | None = None  # set per run, when its writer can take composed frames

    # ---------------------------------------------------------------- per-frame work (threads)

    def read(self, source: FrameSource, out_frame: int, src_frame: int, counted: bool = True) -> _Read:
        """A plate frame, its pixels in the network's space and, when cuts are detected, their signature (on a
        reader thread: detection costs the main loop nothing but the comparison). A warm-up read is not
        ``counted``: the frame's warnings and figures are the report's when it is read as itself."""
        try:
            plate = source.read(src_frame)
        except ImageReadError as exc:
            raise ImageReadError(f"frame {out_frame}: {exc}") from None
        for message in plate.warnings if counted else ():
            self.reporter.warn(message)
        space = self.color.resolve_input_space(self.job.input_colorspace, plate.colorspace, plate.is_float)
        on_device = self.device.to_model(plate.rgb, space) if self.device is not None else None
        model_rgb: ModelInput
        model_rgb, clipped = on_device if on_device is not None else self.color.to_model(plate.rgb, space)
        if counted:
            self.reporter.plate_read(plate.nonfinite, clipped, space)
        if not self.cuts.detects:
            return plate, model_rgb, space, None
        return plate, model_rgb, space, model_rgb.signature() if on_device else signature(model_rgb)

    def _device_for(self, writer: FrameWriter | None) -> DeviceColor | None:
        """The device colour path of a run, or None for the CPU path: a forward pass writing frames that need no
        mattes or straight foreground, on CUDA or MPS unless told (``device_color``)."""
        wanted = self.device_color
        if wanted is None:
            wanted = self.session.device.type in ("cuda", "mps")
        if (
            not wanted
            or writer is None
            or not writer.accepts_composed
            or self.blend is not None
            or self.sink is not None
        ):
            return None
        return DeviceColor(self.color, writer.output_space, self.session.device)

    # ---------------------------------------------------------------- state to resume from

    def snapshot(self) -> dict[str, Any]:
        """The session's snapshot plus where the cuts stand, so a resumed render finds the same cuts."""
        return {**self.session.snapshot(), "cuts": self.cuts.state()}

    def restore(self, snap: dict[str, Any]) -> None:
        self.session.restore(snap)
        self.cuts.restore(snap.get("cuts"))
        self.restored = True

    # ---------------------------------------------------------------- the loop

    def run(
        self,
        source: FrameSource,
        work: list[WorkItem],
        start_index: int,
        writer: FrameWriter | None,
        state: StateFolder | None,
    ) -> None:
        """Run ``work`` (pre-roll, then output frames from output index ``start_index``) to the end or a stop."""
        cores = usable_cores()
        plan = io_plan(self.session.device.type, 0, cores)  # thread counts do not depend on the frame size
        self.device = self._device_for(writer)
        with (
            ThreadPoolExecutor(plan.read_threads, thread_name_prefix="rvm-read") as readers,
            ThreadPoolExecutor(plan.write_threads, thread_name_prefix="rvm-write") as writers,
        ):
            run = _Run(self, source, work, start_index, writer, state, readers, writers, cores)
            try:
                run.all_frames()
            except BaseException:
                run.abandon()
                raise


class _Run:
    """One pass over a work list: the reads in flight ahead of the network, the writes in flight behind
    it, and the snapshots waiting for their frames to land."""

    def __init__(
        self,
        pipeline: FramePipeline,
        source: FrameSource,
        work: list[WorkItem],
        start_index: int,
        writer: FrameWriter | None,
        state: StateFolder | None,
        readers: ThreadPoolExecutor,
        writers: ThreadPoolExecutor,
        cores: int,
    ) -> None:
        self.pipeline = pipeline
        self.session = pipeline.session
        self.report = pipeline.reporter.report
        self.source = source
        self.work = work
        self.start_index = start_index
        self.writer = writer
        self.state = state
        self.readers = readers
        self.writers = writers
        self.cores = cores
        self.snapshot_every = pipeline.job.snapshot_every if state is not None else 0
        self.write_index = start_index  # the output index of the next frame written
        self.next_read = 0
        self.read_ahead, self.write_behind = 1, 1  # until the first plate says how big frames are
        self.reads: deque[Future[_Read]] = deque()
        self.pending: deque[tuple[int, int, Future[list[str]]]] = deque()
        self.snapshots: deque[tuple[int, dict[str, Any]]] = deque()
        self.t0 = time.perf_counter()
        self.fresh = not pipeline.restored  # the first frame run starts a shot unless a snapshot was restored

    def all_frames(self) -> None:
        self.top_up()
        for frame, src, write in self.work:
            if self.pipeline.stop.is_set():
                self.report.stopped = True
                break
            self.step(frame, src, write)
            self.finish_writes(self.write_behind)
        self.finish_writes(0)
        if self.report.stopped and self.state is not None and self.write_index > self.start_index:
            # Stopped on request: leave a snapshot at the last written frame so a restart resumes there.
            self.state.save(self.write_index - 1, self.pipeline.snapshot())

    def top_up(self) -> None:
        while self.next_read < len(self.work) and len(self.reads) < self.read_ahead:
            frame, src, _ = self.work[self.next_read]
            self.reads.append(self.readers.submit(self.pipeline.read, self.source, frame, src))
            self.next_read += 1

    def step(self, frame: int, src: int, write: bool) -> None:
        """The next frame through the network; its files queued for the writers when it is written."""
        plate, model_rgb, space, sig = self.reads.popleft().result()
        cuts = self.pipeline.cuts
        new_shot = cuts.at(frame, sig)
        if new_shot:
            self.session.reset()  # a new shot: nothing of the last one may carry over
            if write and not cuts.reverse:
                self.pipeline.reporter.cut(frame, cuts.shot)
        if (new_shot or self.fresh) and self.pipeline.warm is not None:
            self.warm_up(src, model_rgb.shape, sig)
        self.fresh = False
        sized = io_plan(self.session.device.type, plate.header.width * plate.header.height, self.cores)
        self.read_ahead, self.write_behind = sized.read_ahead, sized.write_behind
        self.top_up()
        self.pipeline.frame_in_network = frame
        on_device = isinstance(model_rgb, DeviceFrame)
        fgr, pha = self.session.step(_network_input(model_rgb), on_device=on_device)
        if not write:
            return
        if not on_device:  # the CPU path's writers take numpy
            fgr, pha = fgr[0].permute(1, 2, 0).numpy(), pha[0, 0].numpy()
        ratio = self.session.ratio_for(plate.header.height, plate.header.width)
        seen = self.session.frames_seen
        fut = self.writers.submit(self.emit, frame, plate, model_rgb, space, fgr, pha, ratio, cuts.shot, seen)
        self.pending.append((self.write_index, frame, fut))
        if self.snapshot_every > 0 and (self.write_index + 1) % self.snapshot_every == 0:
            self.snapshots.append((self.write_index, self.pipeline.snapshot()))
        self.write_index += 1

    def warm_up(self, src: int, shape: tuple[int, ...], sig: Signature | None) -> None:
        """Step the frames that warm the state before source frame ``src`` starts a shot (not written).

        They are read here, on the main loop (a few frames per shot). With detected cuts a fresh detector
        follows them in the order stepped: a cut found among them resets the state there, and a cut between
        the last of them and ``src`` throws them all away, so no other shot's memory reaches this one. A warm-up
        frame that cannot be read, or of another size than ``src`` (``shape``), resets it the same way: the
        warm-up only warms, and the render fails on a damaged frame only when it reaches it as itself."""
        detector = CutDetector() if self.pipeline.cuts.detects else None
        for warm_frame, warm_src in self.pipeline.warm(src):  # type: ignore[misc]  # called only when set
            try:
                _, model_rgb, _, warm_sig = self.pipeline.read(self.source, warm_frame, warm_src, counted=False)
            except ImageReadError:
                self.session.reset()
                continue
            cut = detector is not None and warm_sig is not None and detector.is_cut(warm_sig)
            if cut or model_rgb.shape != shape:
                self.session.reset()
                if model_rgb.shape != shape:
                    continue
            self.pipeline.frame_in_network = warm_frame
            self.session.step(_network_input(model_rgb), on_device=isinstance(model_rgb, DeviceFrame))
        if detector is not None and sig is not None and detector.previous is not None and detector.is_cut(sig):
            self.session.reset()

    def emit(
        self,
        frame: int,
        plate: Plate,
        model_rgb: ModelInput,
        space: str,
        fgr: np.ndarray | torch.Tensor,
        pha: np.ndarray | torch.Tensor,
        ratio: float,
        shot: int,
        seen: int,
    ) -> list[str]:
        """A stepped frame's result to where its pass sends it (on a writer thread)."""
        pipeline = self.pipeline
        if isinstance(model_rgb, DeviceFrame):  # composed on the device; only its half RGBA comes back
            rgba = pipeline.device.compose(model_rgb, fgr, pha)  # type: ignore[union-attr,arg-type]
            return self.writer.write_composed(frame, plate, space, rgba, ratio, shot)  # type: ignore[union-attr]
        if pipeline.blend is not None:
            fgr, pha = pipeline.blend(frame, fgr, pha, seen)
        if pipeline.sink is not None:
            return pipeline.sink(frame, fgr, pha, seen)
        return self.writer.write(frame, plate, model_rgb, space, fgr, pha, ratio, shot)  # type: ignore[union-attr]

    def finish_writes(self, block_until: int) -> None:
        """Collect finished writes in order; persist snapshots whose frames are all on disk."""
        report = self.report
        while self.pending and (len(self.pending) > block_until or self.pending[0][2].done()):
            index, frame, fut = self.pending.popleft()
            report.outputs.extend(fut.result())
            report.frames_written.append(frame)
            done = len(report.frames_written) + self.start_index
            elapsed = time.perf_counter() - self.t0
            fps = len(report.frames_written) / elapsed if elapsed > 0 else 0.0
            remaining = report.total - done
            self.pipeline.reporter.send(
                PROGRESS,
                frame=frame,
                done=done,
                total=report.total,
                fps=round(fps, 3),
                eta_s=round(remaining / fps, 1) if fps else None,
            )
            while self.snapshots and self.snapshots[0][0] <= index:
                self.state.save(*self.snapshots.popleft())  # type: ignore[union-attr]  # queued only with a state

    def abandon(self) -> None:
        """After a failure: drop the reads not started, and let frames being encoded land (each atomically)."""
        for fut in self.reads:
            fut.cancel()
        for _, _, fut in self.pending:
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - the first error is the one reported
                pass
