"""The one way a plain function becomes a Prefect task, the retry policy for work that touches a flaky world,
and the one helper that hands a flow run to a work pool deployment.

- `as_task(fn, name, flaky=...)`: no input hashing and no stored results (outputs are content-addressed
  files; hashing inputs would cost per image). `flaky=True` declares FLAKY_RETRIES on the task, so retries
  show in the UI as the task run's AwaitingRetry states: DICOMweb fetches (the dicomweb source's discover),
  LLM structuring (a rerun re-asks only what the LLM cache lacks) and deployment dispatch.
- `dispatch(deployment, parameters)`: run_deployment as a retried task; a run that ends in another state than
  Completed is an error naming the run (never retried: the run itself happened).
Prefect's private attributes are touched only in flows/runners.py."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

# 3 retries after 10 s, 20 s, 40 s (each +-50% jitter): long enough for a restarting server or a rate limit.
FLAKY_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_jitter_factor": 0.5,
}


@cache
def as_task(fn: Callable, name: str, flaky: bool = False) -> Task:
    """`fn` as a Prefect task named `name` (cached: one Task object per function, name and policy)."""
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False, **(FLAKY_RETRIES if flaky else {}))


def run_step(name: str, fn: Callable, *args, flaky: bool = False):
    return as_task(fn, name, flaky)(*args)


def _run_deployment(deployment: str, parameters: dict, flow_run_name: str | None, tags: list[str] | None):
    from prefect.deployments import run_deployment

    run = run_deployment(name=deployment, parameters=parameters, flow_run_name=flow_run_name, tags=tags)
    return {"flow_run_id": str(run.id), "state": run.state_name}


def dispatch(deployment: str, parameters: dict, what: str, *, flow_run_name: str | None = None,
             tags: list[str] | None = None, require_completed: bool = True) -> dict:
    """Run `deployment` with JSON `parameters` and wait for it: {"dispatched", "flow_run_id", "state"}.
    `what` names the work in the error when the run ends in another state than Completed."""
    from prefect.context import FlowRunContext

    # inside a flow run a retried task; outside one (a script, a test) a plain call
    call = as_task(_run_deployment, "dispatch", flaky=True) if FlowRunContext.get() else _run_deployment
    run = call(deployment, parameters, flow_run_name, tags)
    if require_completed and run["state"] != "Completed":
        raise RuntimeError(f"{what}: flow run {run['flow_run_id']} on {deployment} ended {run['state']}")
    return {"dispatched": deployment, **run}
