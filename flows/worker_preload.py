"""Imported by the ingest fork server before it forks Prefect workers (flows/runners.py, cxrflow_cli/ingest.py):
Prefect's task engine, the flow module, and the Prefect collections (prefect-dask), which hydrating each task
run's context would otherwise import in every worker (~0.4 s per worker, profiled: BENCHMARKS.md)."""

import prefect.task_engine  # noqa: F401
import prefect.task_runners  # noqa: F401
from prefect.plugins import load_prefect_collections

import flows.ingest  # noqa: F401

load_prefect_collections()
