"""The contract's progress protocol: events as the engine sends them, and as the plugins read them back."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from rvm_vfx.spec import progress
from rvm_vfx.spec.errors import InputError
from rvm_vfx.spec.progress import (
    CANCELLED,
    CUT,
    DONE,
    ERROR,
    EVENTS,
    FINETUNE_REPORT_FIELDS,
    PROGRESS,
    REPORT_FIELDS,
    START,
    TRAIN,
    VALIDATION,
    WARNING,
    Event,
    EventWriter,
    error_event,
    event,
    parse_line,
    render_arguments,
)

REPORT = {
    "total": 10,
    "done": 10,
    "frames_written": "1001-1010",
    "outputs": ["/o/m.1001.exr"],
    "warnings": ["frame 1003: 2 NaN values"],
    "nonfinite_values": 2,
    "clipped_fraction_max": 0.0,
    "resumed_from": None,
    "stopped": False,
    "elapsed_s": 4.2,
    "fps": 2.381,
    "input_colorspace": "ACEScg",
    "output_colorspace": "ACEScg",
}


class FlushCounter(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_the_event_names_and_their_fields() -> None:
    assert tuple(EVENTS) == ("start", "progress", "warning", "cut", "train", "validation", "done", "cancelled", "error")
    assert (START, PROGRESS, WARNING, CUT, TRAIN, VALIDATION, DONE, CANCELLED, ERROR) == tuple(EVENTS)
    # A render's report, or a fine-tuning run's (tests/test_finetune_spec.py).
    assert set(EVENTS[DONE].required) | set(EVENTS[DONE].optional) == set(REPORT_FIELDS) | set(FINETUNE_REPORT_FIELDS)
    assert EVENTS[CANCELLED] == EVENTS[DONE]


def test_event_builds_what_goes_on_the_wire() -> None:
    sent = event(PROGRESS, frame=1003, done=3, total=10, fps=2.5, eta_s=2.8)
    assert sent == {"event": "progress", "frame": 1003, "done": 3, "total": 10, "fps": 2.5, "eta_s": 2.8}
    assert event(START, total=4, chunks=2, output="/o/m.####.exr")["chunks"] == 2  # the Dask executor's start
    assert event(DONE, **REPORT) == {"event": "done", **REPORT}


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (
            "finished",
            {},
            "unknown progress event 'finished' "
            "(known: start, progress, warning, cut, train, validation, done, cancelled, error)",
        ),
        (PROGRESS, {"done": 1}, "progress event 'progress': missing ['total'], unknown []"),
        (WARNING, {"message": "m", "level": 2}, "progress event 'warning': missing [], unknown ['level']"),
    ],
)
def test_event_refuses_what_the_protocol_does_not_have(kind: str, fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        event(kind, **fields)
    assert str(caught.value) == message


def test_the_writer_sends_one_flushed_json_line_per_event() -> None:
    stream = FlushCounter()
    write = EventWriter(stream)
    write(event(WARNING, message="clipped"))
    write(event(PROGRESS, frame=1, done=1, total=2, fps=None, eta_s=None))
    assert stream.getvalue().splitlines() == [
        '{"event": "warning", "message": "clipped"}',
        '{"event": "progress", "frame": 1, "done": 1, "total": 2, "fps": null, "eta_s": null}',
    ]
    assert stream.flushes == 2


class YieldingStream:
    """A stream whose write hands the CPU to other threads halfway, as a pipe's partial writes can."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        middle = len(text) // 2
        self.parts.append(text[:middle])
        time.sleep(0)  # yield to the other writers, not a wait
        self.parts.append(text[middle:])

    def flush(self) -> None:
        pass


def test_lines_from_many_threads_never_interleave() -> None:
    stream = YieldingStream()
    write = EventWriter(stream)

    def send(index: int) -> None:
        for number in range(50):
            write(event(WARNING, message=f"{index}:{number}"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = "".join(stream.parts).splitlines()
    received = sorted(parse_line(line).message for line in lines)
    assert received == sorted(f"{i}:{n}" for i in range(4) for n in range(50))


def test_round_trip_of_every_kind() -> None:
    sent = [
        event(START, total=10, output="/o/m.####.exr", resumed_from=None, first=1001, last=1010),
        event(PROGRESS, frame=1001, done=1, total=10, fps=1.5, eta_s=6.0),
        event(WARNING, message="frame 1003: 2 NaN values"),
        event(DONE, **REPORT),
        event(CANCELLED, **{**REPORT, "done": 4, "stopped": True}),
        error_event(InputError("bad frame range 'x'")),
    ]
    stream = io.StringIO()
    write = EventWriter(stream)
    for message in sent:
        write(message)
    received = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert [e.as_dict() for e in received] == sent
    start, step, warning, done, cancelled, error = received
    assert (start.kind, start.total, start.fraction, start.resumed_from) == ("start", 10, 0.0, None)
    assert (step.frame, step.done, step.total, step.fps, step.eta_s, step.fraction) == (1001, 1, 10, 1.5, 6.0, 0.1)
    assert warning.message == "frame 1003: 2 NaN values"
    assert (done.outputs, done.warnings, done.fraction) == (["/o/m.1001.exr"], ["frame 1003: 2 NaN values"], 1.0)
    assert (cancelled.kind, cancelled.done) == ("cancelled", 4)
    assert (error.error_type, error.error_message) == ("InputError", "bad frame range 'x'")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "Loading model...\n",
        "[W NNPACK.cpp:64] Could not initialize NNPACK",
        "{not json",
        "[1, 2, 3]",
        '{"done": 3}',
        '{"event": 3}',
        '{"event": null}',
        '"event"',
    ],
)
def test_anything_that_is_not_an_event_is_ignored(line: str) -> None:
    assert parse_line(line) is None


def test_accessors_never_raise_on_odd_fields() -> None:
    odd = parse_line('{"event": "progress", "done": "3", "total": true, "frame": 2.5, "fps": "fast", "outputs": "x"}')
    assert odd is not None
    assert (odd.done, odd.total, odd.frame, odd.fps, odd.eta_s, odd.outputs, odd.fraction) == (
        None,
        None,
        None,
        None,
        None,
        [],
        None,
    )
    assert parse_line('  {"event": "progress", "done": 12, "total": 10}  \r\n').fraction == 1.0
    assert parse_line('{"event": "progress", "done": 2.0, "total": 0}').fraction is None
    newer = parse_line('{"event": "pass", "name": "backward"}')  # an event a newer engine might send
    assert (newer.kind, newer.fields) == ("pass", {"name": "backward"})


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        ({"type": "OutputError", "message": "disk full"}, "OutputError", "disk full"),
        ({"type": "OutputError", "message": ""}, "OutputError", "OutputError"),
        ({}, "", "unknown error"),
        ("plain text", "", "plain text"),
        (None, "", "unknown error"),
    ],
)
def test_error_events_always_have_a_message(error, kind: str, message: str) -> None:
    received = parse_line(json.dumps({"event": "error", "error": error}))
    assert (received.error_type, received.error_message) == (kind, message)


def test_render_arguments() -> None:
    assert render_arguments("/o/job.json") == ["render", "/o/job.json", "--progress", "json"]


def test_an_event_is_plain_data() -> None:
    assert Event("warning", {"message": "m"}) == parse_line('{"event": "warning", "message": "m"}')
    assert progress.Event("done", {}).outputs == []
