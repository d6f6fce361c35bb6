"""The `ingest` flow: discover -> process chunks on a task runner -> assemble, with progress and summary
artifacts. The work itself is tasks/ingest.py; this module only wires it into Prefect."""

from __future__ import annotations

import os
import shutil
import time

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.futures import wait
from prefect.task_runners import TaskRunner

from flows import progress
from flows.runners import default_task_runner, start_worker_server
from schemas.config import IngestConfig, MixtureConfig
from tasks import ingest as engine
from tasks import mixture
from tasks.lock import holds_output_lock

# No input hashing and no stored results: the outputs are content-addressed files, the manifest is assembled
# from part files, and hashing a chunk's candidates would cost per image.
discover_task = task(engine.discover, name="discover", cache_policy=NO_CACHE, persist_result=False)
process_chunk_task = task(engine.process_chunk, name="process-chunk", cache_policy=NO_CACHE, persist_result=False)
assemble_task = task(engine.assemble, name="assemble", cache_policy=NO_CACHE, persist_result=False)


def artifact_key(prefix: str, source: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only (docs/pitfalls.md); inside a pipeline run
    the experiment follows (flows/ui.py)."""
    from flows.ui import artifact_key as scoped

    return scoped("-".join(filter(None, (prefix + "-" + source).lower().replace("_", "-").split("-"))))


def runner_workers(cfg: IngestConfig, task_runner: TaskRunner | None) -> int:
    """The parallelism the chunks are cut for: a Dask cluster's worker count, else the process pool's size."""
    client = getattr(task_runner, "_client", None)  # a started DaskTaskRunner
    if client is not None:
        try:
            return max(1, len(client.scheduler_info()["workers"]))
        except Exception:  # scheduler not answering yet: size by the config
            pass
    return cfg.workers or getattr(task_runner, "_max_workers", None) or os.cpu_count() or 1


@flow(name="ingest", log_prints=True)
@holds_output_lock("ingest")
def ingest_flow(cfg: IngestConfig) -> dict:
    start = time.perf_counter()
    share_api_url()
    discovery = discover_task(cfg)
    cands, total = discovery.candidates, len(discovery.candidates)
    plan = engine.plan_chunks(total, runner_workers(cfg, get_run_context().task_runner), cfg.batch_size)
    run_dir = engine.new_run_dir(cfg.out)
    progress_id = create_progress_artifact(0.0, key=artifact_key("ingest-progress", cfg.source),
                                           description=f"images processed of {total}, in {len(plan)} chunks")
    # One task run per chunk; engine.Chunk: the candidates are not walked for upstream futures (a cost per image).
    submitted = [process_chunk_task.submit(i, engine.Chunk(cands[a:b]), cfg, run_dir) for i, (a, b) in enumerate(plan)]
    pending = set(submitted)
    while pending:
        finished = wait(list(pending), timeout=engine.PROGRESS_EVERY_S).done
        if finished:
            pending -= finished
            update_progress_artifact(progress_id, 100.0 * (len(submitted) - len(pending)) / len(submitted))
        progress.notify(engine.progress_done(run_dir), total)  # in-process listeners (CLI bar): no API call
    try:
        results = [f.result() for f in submitted]
    except BaseException:  # a failed chunk fails the run: the other chunks' part files go too, once they stop
        wait(submitted)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    summary = assemble_task(cfg, discovery, results, run_dir, time.perf_counter() - start)
    create_table_artifact(
        [{"measure": k, "value": summary[k]} for k in ("found", "kept", "filtered", "quarantined", "decoded", "reused")]
        + [{"measure": f"filtered: {k}", "value": v} for k, v in summary["filtered_by_reason"].items()]
        + [{"measure": f"quarantined: {k}", "value": v} for k, v in summary["quarantined_by_reason"].items()],
        key=artifact_key("ingest-summary", cfg.source),
        description=f"Ingest of {cfg.source}: found = kept + filtered + quarantined",
    )
    print(f"ingest {cfg.source}: found {summary['found']} = kept {summary['kept']} + filtered "
          f"{summary['filtered']} + quarantined {summary['quarantined']} (decoded {summary['decoded']}, "
          f"reused {summary['reused']})")
    return summary


def run_ingest_flow(cfg: IngestConfig, task_runner: TaskRunner | None = None) -> dict:
    """Run the flow with a process pool sized by the config (or the runner given, e.g. Dask)."""
    if task_runner is None:
        start_worker_server()  # its imports overlap flow start-up and discovery
    return ingest_flow.with_options(task_runner=task_runner or default_task_runner(cfg))(cfg)


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
    mixture.check_sources(mix)
    for spec in mix.sources:
        cfg = mix.ingest_config(spec)
        ingest_flow.with_options(task_runner=default_task_runner(cfg), flow_run_name=f"ingest-{spec.name}")(cfg)
    summary = task(mixture.merge, name="merge")(mix)
    create_table_artifact(
        [{"source": name, **{k: s[k] for k in ("found", "kept", "filtered", "quarantined")}}
         for name, s in summary["per_source"].items()],
        key=artifact_key("ingest-mixture-summary", ""),
        description="Per-source reconciliation: found = kept + filtered + quarantined",
    )
    print(f"mixture {', '.join(summary['sources'])}: found {summary['found']} = kept {summary['kept']} + "
          f"filtered {summary['filtered']} + quarantined {summary['quarantined']}")
    return summary
