"""What a render tells its caller: progress events as it goes, and a ``RenderReport`` when it ends.

The reader threads, the writer threads and the main loop all add to one report, so every change to it
goes through ``Reporter`` and its lock; events are built with the contract's ``event`` so that what the
CLI prints and the plugins parse is the protocol of ``rvm_vfx.spec.progress``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .spec.frames import format_frames
from .spec.progress import CUT, PROGRESS, START, WARNING, event

log = logging.getLogger("rvm_vfx.render")  # a render's warnings, under the name callers filter on

ProgressCallback = Callable[[dict[str, Any]], None]


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
    #: Written frames that started a new shot (listed or detected), in order.
    cuts: list[int] = field(default_factory=list)

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
            "cuts": list(self.cuts),
        }


class Reporter:
    """One render's report and its progress callback, shared by the pipeline's threads."""

    def __init__(self, progress: ProgressCallback | None, pass_name: str | None = None) -> None:
        self.report = RenderReport(total=0)
        self.progress = progress
        #: A bidirectional render's pass ("backward", "forward"): its start and progress events say which.
        self.pass_name = pass_name
        self._send = progress or (lambda message: None)
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def send(self, kind: str, **fields: Any) -> None:
        if self.pass_name is not None and kind in (START, PROGRESS):
            fields = {**fields, "pass": self.pass_name}
        self._send(event(kind, **fields))

    def warn(self, message: str) -> None:
        """Report a warning once: a plate's quirk repeats on every frame, and one line says it."""
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
            self.report.warnings.append(message)
        log.warning(message)
        self.send(WARNING, message=message)

    def cut(self, frame: int, shot: int) -> None:
        """A new shot starts at ``frame`` (called from the main loop, in frame order)."""
        with self._lock:
            self.report.cuts.append(frame)
        log.info("cut at frame %d: shot %d starts, recurrent state reset", frame, shot)
        self.send(CUT, frame=frame, shot=shot)

    def plate_read(self, nonfinite: int, clipped_fraction: float, colorspace: str) -> None:
        """Add one plate frame's figures (called from the reader threads)."""
        with self._lock:
            self.report.nonfinite_values += nonfinite
            self.report.clipped_fraction_max = max(self.report.clipped_fraction_max, clipped_fraction)
            self.report.input_colorspace = colorspace

    def finish(self, elapsed_s: float) -> RenderReport:
        """The report, with the warnings that summarise the whole render."""
        report = self.report
        report.elapsed_s = elapsed_s
        if report.nonfinite_values:
            self.warn(f"{report.nonfinite_values} NaN/Inf plate values were replaced with 0 before matting")
        if report.clipped_fraction_max > 0:
            self.warn(
                f"up to {report.clipped_fraction_max:.2%} of plate values per frame lay outside [0, 1] in the "
                "network's sRGB space and were clipped for the network; the output keeps the plate's values"
            )
        return report
