"""The one way the tests start a real Dask cluster: worker processes on 127.0.0.1, no dashboards, quiet logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_cluster(workers: int = 2) -> Iterator[str]:
    """A LocalCluster of ``workers`` single-threaded processes; yields its scheduler's address (tcp://127.0.0.1:...)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        protocol="tcp",
        dashboard_address=None,
        worker_dashboard_address=None,
        silence_logs=40,
    ) as local:
        assert local.scheduler_address.startswith("tcp://127.0.0.1:")
        yield local.scheduler_address
