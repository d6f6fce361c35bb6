"""Task runners for scale-out: ingest's chunks on a Dask cluster (prefect-dask) when the config names a
scheduler, otherwise a local process pool whose workers fork from a pre-imported server."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from schemas.config import IngestConfig

# What a worker needs imported before its first chunk (the engine, its decoders, Prefect's task engine).
WORKER_PRELOAD = ["tasks.ingest", "prefect.task_engine", "prefect.task_runners", "flows.ingest"]


def worker_context() -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading WORKER_PRELOAD; `start_worker_server()` starts it early."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the fork server now so its imports overlap the caller's own start-up and discovery."""
    from multiprocessing import forkserver

    worker_context()
    forkserver.ensure_running()


class PreforkedPoolTaskRunner(ProcessPoolTaskRunner):
    """Prefect's process pool, with workers forked from a fork server that has already imported the ingest
    engine and Prefect, instead of spawned processes that each import them (~2 s per worker on an idle core,
    ~10 s on a loaded 2-core machine: the fixed cost that made small runs slower on Prefect than bare). The
    fork server holds no threads, so forking it is safe; it lives as long as the calling process and serves
    every later flow run (mixtures: one ingest subflow per source)."""

    def __enter__(self):
        super().__enter__()
        spawned = self._executor  # has not started a process yet: processes start on first submit
        self._executor = ProcessPoolExecutor(max_workers=self._max_workers, mp_context=worker_context(),
                                             initializer=spawned._initializer, initargs=spawned._initargs)
        spawned.shutdown(wait=False)
        return self


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


def default_task_runner(cfg: IngestConfig) -> TaskRunner:
    """The local pool for ingest's chunks, one process per configured worker (default all cores)."""
    return PreforkedPoolTaskRunner(max_workers=cfg.workers or os.cpu_count() or 1)


def ingest_runner(cfg: IngestConfig, dask_address: str | None = None) -> TaskRunner:
    return dask_runner(dask_address) if dask_address else default_task_runner(cfg)
