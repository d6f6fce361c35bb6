"""Task runners for scale-out: ingest's batches on a Dask cluster (prefect-dask) when the config names a
scheduler, otherwise the local process pool of flows/ingest.py."""

from __future__ import annotations

from prefect.task_runners import TaskRunner

from schemas.config import IngestConfig


def dask_runner(address: str | None = None, n_workers: int | None = None) -> TaskRunner:
    """DaskTaskRunner on an existing scheduler (`tcp://host:8786`), or a temporary local multi-process
    cluster of `n_workers` when no address is given."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs = {"processes": True, "threads_per_worker": 1}
    if n_workers:
        kwargs["n_workers"] = n_workers
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


def ingest_runner(cfg: IngestConfig, dask_address: str | None = None) -> TaskRunner:
    from flows.ingest import default_task_runner

    return dask_runner(dask_address) if dask_address else default_task_runner(cfg)
