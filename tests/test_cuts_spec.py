"""The ``cuts`` field and the ``cut`` event in the contract."""

from __future__ import annotations

import json

import pytest

from rvm_vfx.errors import InputError
from rvm_vfx.spec.job import Job, parse_cuts
from rvm_vfx.spec.progress import CUT, DONE, event, parse_line


def test_a_cut_list_is_frame_numbers_sorted_once_each() -> None:
    assert parse_cuts("1040, 1012,1040") == (1012, 1040)
    assert parse_cuts("auto") is None and parse_cuts("none") is None
    assert Job(input="p.####.exr", output="o.####.exr").cuts == "auto"


def test_a_bad_cut_list_names_the_field_and_the_bad_part() -> None:
    with pytest.raises(InputError) as caught:
        Job.from_dict({"input": "p.####.exr", "output": "o.####.exr", "cuts": "1012,10x4"})
    assert str(caught.value) == (
        "job: job field 'cuts': expected 'auto', 'none' or frame numbers separated by commas (1012,1040), "
        "got '1012,10x4': '10x4' is not a frame number"
    )


def test_the_cut_event_and_the_reports_cuts_read_back_and_never_raise() -> None:
    line = json.dumps(event(CUT, frame=1005, shot=1))
    received = parse_line(line)
    assert received is not None and (received.kind, received.frame, received.shot) == (CUT, 1005, 1)
    done = parse_line(json.dumps({"event": DONE, "done": 1, "total": 1, "cuts": [1005, "x", 1.5, None]}))
    assert done is not None and done.cuts == [1005]
    odd = parse_line(json.dumps({"event": CUT, "frame": "soon", "cuts": "1005"}))
    assert odd is not None and (odd.frame, odd.shot, odd.cuts) == (None, None, [])
