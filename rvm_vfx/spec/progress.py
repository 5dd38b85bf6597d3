"""The progress protocol: one JSON object a line on stdout, from the engine to whoever started it.

``rvm-vfx render JOB.json --progress json`` (``render_arguments``) prints an event per line, flushed at
once, and exits with a code from ``exits``. The plugins read those lines from a subprocess whose stdout
may also carry a library's stray print, so ``parse_line`` ignores anything that is not an event and its
accessors never raise on a field that is missing or of the wrong type: an older or newer engine degrades
a progress bar, never the host.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

START, PROGRESS, WARNING, DONE, CANCELLED, ERROR = "start", "progress", "warning", "done", "cancelled", "error"
#: A new shot starts at ``frame`` (a cut, listed or detected): the state is reset there. Readers that do not
#: know it skip it, as they skip any event they do not know.
CUT = "cut"
#: ``rvm-vfx finetune``: a training step done (``iteration`` of ``total``, the step's ``loss``), and a held-out
#: keyframe's leave-one-out result (its MAD x 1e3 before and after training on the other keyframes).
TRAIN, VALIDATION = "train", "validation"
#: What a fine-tuning run reports when it ends, in ``done`` and ``cancelled`` (beside ``done`` and ``total``,
#: the iterations run and planned): the checkpoint and its JSON sidecar written.
FINETUNE_REPORT_FIELDS = ("checkpoint", "sidecar", "loss", "elapsed_s", "stopped", "validation", "warnings")

#: What a render reports when it ends (``RenderReport.to_dict``), in ``done`` and ``cancelled``.
REPORT_FIELDS = (
    "total",
    "done",
    "frames_written",
    "outputs",
    "warnings",
    "nonfinite_values",
    "clipped_fraction_max",
    "resumed_from",
    "stopped",
    "elapsed_s",
    "fps",
    "input_colorspace",
    "output_colorspace",
    "cuts",
)


def _report_fields() -> tuple[str, ...]:
    """The optional fields of ``done`` and ``cancelled``: a render's report, or a fine-tuning run's."""
    fields = [f for f in REPORT_FIELDS if f not in ("done", "total")]
    return tuple(fields + [f for f in FINETUNE_REPORT_FIELDS if f not in fields])


@dataclass(frozen=True)
class EventSpec:
    """An event's fields: those every sender includes, and those only some do (the worker's Dask executor
    reports chunks, the engine reports frames)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


EVENTS: Mapping[str, EventSpec] = {
    # "pass": a bidirectional render's pass, "backward" (run first) or "forward" (writes the frames); each starts
    # with its own "start" event and counts its own frames.
    START: EventSpec(("total",), ("output", "resumed_from", "first", "last", "chunks", "pass")),
    PROGRESS: EventSpec(("done", "total"), ("frame", "fps", "eta_s", "chunks_done", "pass")),
    WARNING: EventSpec(("message",)),
    # "cut": {"frame": the first frame of the new shot, "shot": its index in the render (0 is the first shot)}
    CUT: EventSpec(("frame",), ("shot",)),
    # "train": {"iteration": steps done, "total": steps planned, "loss": that step's loss, "eta_s", "elapsed_s",
    # "phase": "train", or "validation" while a leave-one-out fold trains (its steps count in the same total)}
    TRAIN: EventSpec(("iteration", "total", "loss"), ("eta_s", "elapsed_s", "phase")),
    VALIDATION: EventSpec(("keyframe", "mad_before", "mad_after"), ("iterations",)),
    DONE: EventSpec(("done", "total"), _report_fields()),
    CANCELLED: EventSpec(("done", "total"), _report_fields()),
    # "error": {"type": exception class name, "message": what to show}
    ERROR: EventSpec(("error",)),
}


def render_arguments(job_path: str) -> list[str]:
    """The engine's arguments for a job file with JSON progress (after ``python -m rvm_vfx`` or ``rvm-vfx``)."""
    return ["render", job_path, "--progress", "json"]


# ------------------------------------------------------------------------------------------ sending


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event as the dict that goes on the wire; refuses names the protocol does not have."""
    spec = EVENTS.get(kind)
    if spec is None:
        raise ValueError(f"unknown progress event {kind!r} (known: {', '.join(EVENTS)})")
    missing = [name for name in spec.required if name not in fields]
    unknown = sorted(set(fields) - set(spec.required) - set(spec.optional))
    if missing or unknown:
        raise ValueError(f"progress event {kind!r}: missing {missing}, unknown {unknown}")
    return {"event": kind, **fields}


def error_event(error: BaseException) -> dict[str, Any]:
    return event(ERROR, error={"type": type(error).__name__, "message": str(error)})


class EventWriter:
    """Writes events to a stream, one JSON line each, flushed at once; safe to call from several threads."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, message: Mapping[str, Any]) -> None:
        line = json.dumps(dict(message)) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()


# ------------------------------------------------------------------------------------------ receiving


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


@dataclass(frozen=True)
class Event:
    """One event as received. ``fields`` holds everything that was sent; the properties read it safely."""

    kind: str
    fields: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The event as it was sent."""
        return {"event": self.kind, **self.fields}

    @property
    def total(self) -> int | None:
        return _integer(self.fields.get("total"))

    @property
    def done(self) -> int | None:
        return _integer(self.fields.get("done"))

    @property
    def frame(self) -> int | None:
        return _integer(self.fields.get("frame"))

    @property
    def fps(self) -> float | None:
        return _number(self.fields.get("fps"))

    @property
    def eta_s(self) -> float | None:
        return _number(self.fields.get("eta_s"))

    @property
    def resumed_from(self) -> int | None:
        return _integer(self.fields.get("resumed_from"))

    @property
    def shot(self) -> int | None:
        """A ``cut`` event's shot index."""
        return _integer(self.fields.get("shot"))

    @property
    def cuts(self) -> list[int]:
        """The cuts a ``done`` or ``cancelled`` report lists (frames that started a new shot)."""
        value = self.fields.get("cuts")
        if not isinstance(value, list):
            return []
        return [n for n in (_integer(v) for v in value) if n is not None]

    @property
    def message(self) -> str:
        """A warning's text."""
        value = self.fields.get("message")
        return value if isinstance(value, str) else ""

    @property
    def outputs(self) -> list[str]:
        value = self.fields.get("outputs")
        return [str(p) for p in value] if isinstance(value, list) else []

    @property
    def warnings(self) -> list[str]:
        value = self.fields.get("warnings")
        return [str(w) for w in value] if isinstance(value, list) else []

    @property
    def error_type(self) -> str:
        """The exception class an ``error`` event names ("" when it names none)."""
        error = self.fields.get("error")
        return str(error.get("type") or "") if isinstance(error, Mapping) else ""

    @property
    def error_message(self) -> str:
        """What an ``error`` event says went wrong, never empty."""
        error = self.fields.get("error")
        if isinstance(error, Mapping):
            return str(error.get("message") or error.get("type") or "unknown error")
        return str(error or self.fields.get("message") or "unknown error")

    @property
    def iteration(self) -> int | None:
        """A ``train`` event's steps done."""
        return _integer(self.fields.get("iteration"))

    @property
    def loss(self) -> float | None:
        """A ``train`` event's loss."""
        return _number(self.fields.get("loss"))

    @property
    def keyframe(self) -> int | None:
        """A ``validation`` event's held-out keyframe."""
        return _integer(self.fields.get("keyframe"))

    @property
    def mad_before(self) -> float | None:
        return _number(self.fields.get("mad_before"))

    @property
    def mad_after(self) -> float | None:
        return _number(self.fields.get("mad_after"))

    @property
    def checkpoint(self) -> str:
        """The checkpoint a fine-tuning ``done`` (or ``cancelled``) wrote ("" when it names none)."""
        value = self.fields.get("checkpoint")
        return value if isinstance(value, str) else ""

    @property
    def sidecar(self) -> str:
        """The JSON sidecar written beside that checkpoint."""
        value = self.fields.get("sidecar")
        return value if isinstance(value, str) else ""

    @property
    def fraction(self) -> float | None:
        """How far the render (or training) is, in [0, 1] (0 at ``start``); None when the event does not say."""
        done = 0 if self.kind == START else self.iteration if self.kind == TRAIN else self.done
        total = self.total
        if done is None or not total or total <= 0:
            return None
        return min(max(done / total, 0.0), 1.0)


def parse_line(line: str) -> Event | None:
    """One line of the engine's stdout as an event, or None for anything else (a stray print, a warning)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    kind = data.pop("event")
    return Event(kind, data)
