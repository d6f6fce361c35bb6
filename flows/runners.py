"""Task runners, chosen one way for every entry point (pipeline, `data`, `ingest`, mixtures): ingest's
chunks on a Dask cluster (prefect-dask) when the config names a scheduler, otherwise a local process pool
whose workers fork from a pre-imported server.

The only module that reaches into Prefect's private attributes (`_executor`, `_max_workers`, `_client`);
tests/test_prefect_internals.py pins them to the installed Prefect version."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from schemas.config import Parallelism
from tasks.ingest import start_worker_server as _start_server
from tasks.ingest import worker_context

# What a Prefect worker needs imported before its first chunk, on top of the engine's own preload (listed in
# flows/worker_preload.py). A module name, so the CLI can start the fork server before importing Prefect.
PREFECT_PRELOAD = ("flows.worker_preload",)
# The Prefect release whose private attributes this module uses (checked by tests/test_prefect_internals.py).
PREFECT_VERSION = "3.8.8"


# A heartbeat interval the user exported (either of Prefect's names) is kept, in every kind of run.
HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def cli_run_settings() -> Iterator[None]:
    """Settings for flow runs that this process starts and runs in itself (the CLI), subflows included: no
    flow-run heartbeats. At the end of every flow run Prefect 3.8 joins its heartbeat thread, which sleeps in
    1-s steps: up to 1 s per flow run (each mixture source's subflow too). Heartbeats only feed automations
    that mark runs whose process vanished (kill -9, a lost host) as crashed; an exception, Ctrl-C or SIGTERM
    is reported by the engine itself, and a CLI run's process is the user's own terminal. Deployment runs
    (workers run the flow entrypoints, never this) keep them. Trade-off: docs/pitfalls.md."""
    if any(name in os.environ for name in HEARTBEAT_ENV):
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def start_worker_server() -> None:
    """Start the fork server with Prefect preloaded, so its imports overlap flow start-up and discovery."""
    _start_server(PREFECT_PRELOAD)


class PreforkedPoolTaskRunner(ProcessPoolTaskRunner):
    """Prefect's process pool, with workers forked from the fork server that the local runner uses too
    (tasks/ingest.py), instead of spawned processes that each import the engine and Prefect (~2 s per worker
    on an idle core, ~10 s on a loaded 2-core machine). The fork server lives as long as the calling process
    and serves every later flow run (mixtures: one ingest subflow per source)."""

    def __enter__(self):
        super().__enter__()
        spawned = self._executor  # has not started a process yet: processes start on first submit
        self._executor = ProcessPoolExecutor(
            max_workers=self._max_workers,
            mp_context=worker_context(PREFECT_PRELOAD),
            initializer=spawned._initializer,
            initargs=spawned._initargs,
        )
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


def default_task_runner(cfg: Parallelism) -> TaskRunner:
    """The local process pool. Its fork server starts now, so that its imports overlap flow start-up and
    discovery (`cxrflow data`, the pipeline, a mixture) instead of delaying the first chunk."""
    start_worker_server()
    return PreforkedPoolTaskRunner(max_workers=cfg.workers or os.cpu_count() or 1)


def runner_for(cfg: Parallelism) -> TaskRunner:
    """The task runner of an ingest run: Dask at cfg.dask_address, else the local pool of cfg.workers."""
    return dask_runner(cfg.dask_address) if cfg.dask_address else default_task_runner(cfg)


def runner_workers(cfg: Parallelism, task_runner: TaskRunner | None) -> int:
    """The parallelism the chunks are cut for: a Dask cluster's worker count, else the process pool's size."""
    client = getattr(task_runner, "_client", None)  # a started DaskTaskRunner
    if client is not None:
        try:
            return max(1, len(client.scheduler_info()["workers"]))
        except Exception:  # scheduler not answering yet: size by the config
            pass
    return cfg.workers or getattr(task_runner, "_max_workers", None) or os.cpu_count() or 1
