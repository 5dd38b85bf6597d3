"""Farm chunks split at a job's listed cuts, and no chunk's pre-roll reaches into another shot."""

from __future__ import annotations

from render_worker.chunks import plan_chunks


def test_chunks_split_at_listed_cuts_and_a_chunk_that_starts_a_shot_has_no_pre_roll() -> None:
    frames = list(range(1001, 1021))
    chunks = plan_chunks(frames, chunk_size=8, preroll=5, job_preroll=2, cuts=(1005, 1015))
    assert [(c.frames_text, c.preroll) for c in chunks] == [
        ("1001-1004", 2),  # the job's own pre-roll: the start of a single-machine render
        ("1005-1012", 0),  # starts a shot: the state is reset there in any render
        ("1013-1014", 5),
        ("1015-1020", 0),
    ]


def test_without_cuts_the_chunks_are_as_before() -> None:
    chunks = plan_chunks(list(range(1, 11)), chunk_size=4, preroll=3)
    assert [(c.frames_text, c.preroll) for c in chunks] == [("1-4", 0), ("5-8", 3), ("9-10", 3)]


def test_a_cut_outside_the_frames_changes_nothing_and_a_cut_at_the_first_frame_keeps_the_job_pre_roll() -> None:
    chunks = plan_chunks(list(range(11, 21)), chunk_size=5, preroll=3, job_preroll=1, cuts=(5, 11, 30))
    assert [(c.frames_text, c.preroll, c.index) for c in chunks] == [("11-15", 1, 0), ("16-20", 3, 1)]
