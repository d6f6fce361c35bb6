"""Task runners, chosen one way for every entry point (pipeline, `data`, `ingest`, mixtures): ingest's
chunks on a Dask cluster (prefect-dask) when the config names a scheduler, otherwise a local process pool
whose workers fork from a pre-imported server (task runs in threads of the flow, the work in the pool).

The only module that reaches into Prefect's private attributes (`_max_workers`, `_client`);
tests/test_prefect_wiring.py pins them to the installed Prefect version."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from schemas.config import Parallelism
from tasks.ingest import start_worker_server, worker_context

T = TypeVar("T")

# The Prefect release whose private attributes this module uses (checked by tests/test_prefect_wiring.py).
PREFECT_VERSION = "3.8.8"
# A heartbeat interval the user configured (exported under either of Prefect's names, or set in a Prefect
# profile or settings file) is kept, in every kind of run.
HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def cli_run_settings() -> Iterator[None]:
    """Settings for flow runs that this process starts and runs in itself (the CLI), subflows included: no
    flow-run heartbeats. At the end of every flow run Prefect 3.8 joins its heartbeat thread, which sleeps in
    1-s steps: up to 1 s per flow run (each mixture source's subflow too). Heartbeats only feed automations
    that mark runs whose process vanished (kill -9, a lost host) as crashed; an exception, Ctrl-C or SIGTERM
    is reported by the engine itself, and a CLI run's process is the user's own terminal. Deployment runs
    (workers run the flow entrypoints, never this) keep them. Trade-off: docs/pitfalls.md."""
    from prefect.settings import get_current_settings, temporary_settings

    # exported now, or set by any settings source when the settings loaded (`prefect config set` writes the
    # profile, not the environment)
    configured = "heartbeat_frequency" in get_current_settings().flows.model_fields_set
    if configured or any(name in os.environ for name in HEARTBEAT_ENV):
        yield
        return

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


class LocalPoolTaskRunner(ThreadPoolTaskRunner):
    """The local runner: each task run in a thread of the flow's process, its work (`on_pool`) on a process
    pool forked from the fork server that `cxrflow ingest --no-prefect` uses too (tasks/ingest.py).

    The workers never import Prefect and never host a task run: no Prefect import in the fork server, no
    context hydration, settings and API clients per chunk in the workers, no message queue back to the flow
    (issue 28: together most of the fixed cost measured). The UI still shows one task run per chunk, Running
    while its chunk runs; a chunk's exception (a worker killed: BrokenProcessPool) fails its task run. One
    thread per process, so a task run starts when its chunk can. The fork server lives as long as the calling
    process and serves every later flow run (mixtures: one ingest subflow per source)."""

    def __enter__(self):
        super().__enter__()
        self.pool = ProcessPoolExecutor(max_workers=self._max_workers, mp_context=worker_context())
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=False, cancel_futures=True)  # queued chunks dropped (Ctrl-C, a failed chunk)
        try:
            super().__exit__(*exc)  # the task-run threads end as their running chunks do
        finally:
            self.pool.shutdown(wait=True)


def on_pool(fn: Callable[..., T], args: tuple) -> T:
    """fn(*args) on the flow's process pool when the flow runs on a LocalPoolTaskRunner, else right here (the
    task run is already where the work belongs: a Dask worker)."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if isinstance(runner, LocalPoolTaskRunner):
        return runner.pool.submit(fn, *args).result()
    return fn(*args)


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
    return LocalPoolTaskRunner(max_workers=cfg.workers or os.cpu_count() or 1)


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
