"""Farm render worker: watch a folder on shared storage, claim tickets atomically, render, report.

Artists drop tickets (JSON Jobs) or folders of frames into ``ROOT/incoming/``; any number of workers,
on any number of machines sharing ROOT, claim them by an atomic rename into ``ROOT/active/``, render
with resumable state snapshots and file the result under ``done/`` or ``failed/``. With a Dask
scheduler, a job is split into pre-rolled chunks that run on the cluster instead of in-process.

The worker never executes anything a ticket says: a ticket is data, validated against the Job schema,
with every path confined to the folders the farm admin allowed.
"""

from __future__ import annotations

__all__ = ["WorkerConfig", "Worker"]


def __getattr__(name: str) -> object:
    # Lazy: ``rvm-worker status`` and the Dask chunk task should not pay for importing everything.
    if name == "WorkerConfig":
        from .config import WorkerConfig

        return WorkerConfig
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(name)
