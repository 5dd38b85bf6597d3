"""Splitting a job's frames into chunks for the cluster, each with the pre-roll that warms its state.

RVM remembers earlier frames; a chunk that starts cold at frame F gives a slightly different matte
at F than the uninterrupted render. Each chunk after the first therefore runs ``preroll`` frames
before F and throws their output away (the engine clamps the pre-roll at the plate's first frame).
The first chunk keeps the job's own pre-roll, so it is exactly the start of a single-machine render.
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

    @property
    def frames_text(self) -> str:
        """The chunk's frames as a Job ``frames`` string (``1001-1100``; gaps kept as listed)."""
        return format_frames(self.frames, limit=None)

    @property
    def name(self) -> str:
        return f"chunk-{self.index:04d}"


def plan_chunks(frames: list[int], chunk_size: int, preroll: int, job_preroll: int = 0) -> list[Chunk]:
    """Consecutive runs of ``chunk_size`` output frames; later chunks get ``max(preroll, job_preroll)``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    chunks = []
    for index, start in enumerate(range(0, len(frames), chunk_size)):
        part = tuple(frames[start : start + chunk_size])
        chunks.append(Chunk(index, part, job_preroll if index == 0 else max(preroll, job_preroll)))
    return chunks


def chunk_job(job: Job, chunk: Chunk) -> Job:
    """The same Job restricted to the chunk's frames with its pre-roll: what one cluster task renders."""
    return dataclasses.replace(job, frames=chunk.frames_text, preroll=chunk.preroll)


def chunk_resources(job: Job) -> dict[str, float] | None:
    """Dask resources a chunk needs: a ``GPU`` slot when the job asks for CUDA (workers declare ``GPU=1``)."""
    return {"GPU": 1} if job.device == "cuda" else None
