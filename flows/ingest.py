"""The `ingest` flows: tasks/ingest.py's plan (and tasks/mixture.py's) run by a Prefect runner, with
progress and summary artifacts. The plan and the work are in tasks/; this module only wires them into
Prefect."""

from __future__ import annotations

import os
from collections.abc import Callable

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.context import get_run_context
from prefect.futures import wait
from prefect.task_runners import TaskRunner

from flows.progress import Reporter
from flows.runners import on_pool, runner_for, runner_workers
from flows.tasking import as_task, run_step
from flows.ui import artifact_key
from schemas.config import IngestConfig, MixtureConfig, SourceSpec
from schemas.stages import IngestSummary, MixtureSummary
from tasks import ingest as engine
from tasks import mixture
from tasks import stage_reports as reports
from tasks.lock import holds_output_lock


class PrefectRunner:
    """Runs tasks/ingest.py's plan inside a flow: one task run per step and per chunk on the flow's task
    runner (the chunk's work on its process pool, flows/runners.py `on_pool`); a progress artifact updated per
    finished chunk, the CLI bar fed from the chunks' progress files."""

    def __init__(self, cfg: IngestConfig):
        from tasks.sources import get_adapter

        self.source = cfg.source
        self.remote = getattr(get_adapter(cfg.source), "remote", False)  # fetches over the network: retried

    def workers(self, cfg: IngestConfig) -> int:
        return runner_workers(cfg, get_run_context().task_runner)

    def step(self, name: str, fn: Callable, *args):
        return run_step(name, fn, *args, flaky=self.remote and name == "discover")

    def map_chunks(self, fn: Callable, calls: list[tuple], run_dir, total: int) -> list:
        # one task run per chunk; its work on the local pool (flows/runners.py) or in the Dask task itself
        submitted = [as_task(on_pool, "process-chunk").submit(fn, call) for call in calls]
        pending = set(submitted)
        with Reporter(artifact_key("ingest-progress", self.source),
                      f"images processed of {total}, in {len(calls)} chunks") as report:
            while pending:
                pending -= wait(list(pending), timeout=engine.PROGRESS_EVERY_S).done
                report(engine.progress_done(run_dir), total)  # the chunks' progress files
        try:
            return [f.result() for f in submitted]
        except BaseException:  # the plan removes the run folder: wait until no other chunk still writes to it
            wait(submitted)
            raise




@flow(name="ingest", log_prints=True)
@holds_output_lock("ingest")
def ingest_flow(cfg: IngestConfig) -> dict:
    share_api_url()
    summary = engine.ingest(cfg, PrefectRunner(cfg))
    s = IngestSummary.model_validate(summary)
    create_table_artifact(
        reports.ingest_rows(s),
        key=artifact_key("ingest-summary", cfg.source),
        description=f"Ingest of {cfg.source}: found = kept + filtered + quarantined",
    )
    print("\n".join(reports.ingest_lines(s)))
    return summary


def run_ingest_flow(cfg: IngestConfig, task_runner: TaskRunner | None = None) -> dict:
    """Run the flow on the config's runner (flows/runners.py runner_for), or the runner given."""
    return ingest_flow.with_options(task_runner=task_runner or runner_for(cfg))(cfg)


def share_api_url() -> None:
    """Point worker processes at this process's Prefect API.

    Without PREFECT_API_URL a flow starts a temporary local server; processes spawned by the task runner
    would each start their own (~5 s each) instead of reporting to it. Workers inherit the environment.
    """
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.client.orchestration import get_client

        os.environ["PREFECT_API_URL"] = str(get_client().api_url)


@flow(name="ingest-mixture", log_prints=True)
@holds_output_lock("ingest mixture")
def ingest_mixture_flow(mix: MixtureConfig) -> dict:
    """Several sources, one manifest: every layout checked first, one ingest subflow per source, then merge."""

    def ingest_source(spec: SourceSpec, cfg: IngestConfig) -> dict:
        return ingest_flow.with_options(
            task_runner=runner_for(cfg), flow_run_name=f"ingest-{spec.name}"  # the mixture's dask_address too
        )(cfg)

    summary = mixture.ingest_mixture(mix, ingest_source, run_step)
    s = MixtureSummary.model_validate(summary)
    create_table_artifact(
        reports.mixture_rows(s),
        key=artifact_key("ingest-mixture-summary", ""),
        description="Per-source reconciliation: found = kept + filtered + quarantined",
    )
    print(reports.mixture_line(s))
    return summary
