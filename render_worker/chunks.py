"""Splitting a job's frames into chunks for the cluster, each with the pre-roll that warms its state.

RVM remembers earlier frames; a chunk that starts cold at frame F gives a slightly different matte
at F than the uninterrupted render. Each chunk after the first therefore runs ``preroll`` frames
before F and throws their output away (the engine clamps the pre-roll at the plate's first frame).
The first chunk keeps the job's own pre-roll, so it is exactly the start of a single-machine render.
A job that lists its cuts is split at them too: a chunk that starts a shot needs no pre-roll (the state
is reset there in any render), and no chunk's pre-roll reaches back into another shot (the engine starts
it at the last cut). Detected cuts (``auto``) are found by each chunk as it reads its pre-roll.

A bidirectional job (``passes``) runs each chunk backward too, and that pass is warm only with frames after the
chunk: each chunk before the last gets ``postroll`` = ``max(preroll, job postroll)`` frames after it (none when
the next chunk starts at a listed cut), the last keeps the job's own, as the first keeps its pre-roll.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rvm_vfx.spec.frames import format_frames
from rvm_vfx.spec.job import Job


@dataclass(frozen=True)
class Chunk:
    index: int
    frames: tuple[int, ...]
    preroll: int
    postroll: int = 0

    @property
    def frames_text(self) -> str:
        """The chunk's frames as a Job ``frames`` string (``1001-1100``; gaps kept as listed)."""
        return format_frames(self.frames, limit=None)

    @property
    def name(self) -> str:
        return f"chunk-{self.index:04d}"


def plan_chunks(
    frames: list[int],
    chunk_size: int,
    preroll: int,
    job_preroll: int = 0,
    cuts: tuple[int, ...] = (),
    job_postroll: int = 0,
    bidirectional: bool = False,
) -> list[Chunk]:
    """Consecutive runs of up to ``chunk_size`` output frames, none across a cut in ``cuts``; the first keeps
    ``job_preroll``, one that starts at a cut none, the others get ``max(preroll, job_preroll)``; with
    ``bidirectional`` the same after each chunk for the backward pass (``job_postroll`` for the last)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    chunks: list[Chunk] = []
    for shot in _split_at(frames, set(cuts)):
        for start in range(0, len(shot), chunk_size):
            part = tuple(shot[start : start + chunk_size])
            if not chunks:
                warm = job_preroll
            elif part[0] in cuts:
                warm = 0
            else:
                warm = max(preroll, job_preroll)
            chunks.append(Chunk(len(chunks), part, warm, job_postroll))
    if not bidirectional:
        return chunks
    after = [0 if following.frames[0] in cuts else max(preroll, job_postroll) for following in chunks[1:]]
    return [dataclasses.replace(c, postroll=p) for c, p in zip(chunks, [*after, job_postroll], strict=True)]


def _split_at(frames: list[int], cuts: set[int]) -> list[list[int]]:
    """``frames`` in runs, a new run at each frame that is a cut."""
    runs: list[list[int]] = []
    for frame in frames:
        if not runs or frame in cuts:
            runs.append([])
        runs[-1].append(frame)
    return runs


def chunk_job(job: Job, chunk: Chunk) -> Job:
    """The same Job restricted to the chunk's frames with its pre-roll: what one cluster task renders."""
    return dataclasses.replace(job, frames=chunk.frames_text, preroll=chunk.preroll, postroll=chunk.postroll)


def chunk_resources(job: Job) -> dict[str, float] | None:
    """Dask resources a chunk needs: a ``GPU`` slot when the job asks for CUDA (workers declare ``GPU=1``)."""
    return device_resources(job.device)


def device_resources(device: str) -> dict[str, float] | None:
    """Dask resources of a task on ``device`` (a chunk, a ticket's training): a ``GPU`` slot for CUDA."""
    return {"GPU": 1} if device == "cuda" else None
