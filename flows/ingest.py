"""The `ingest` flow: discover -> process batches on a task runner -> assemble, with progress and summary
artifacts. The work itself is tasks/ingest.py; this module only wires it into Prefect."""

from __future__ import annotations

import os
import time

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from flows import progress
from schemas.config import IngestConfig, MixtureConfig
from tasks import ingest as engine
from tasks import mixture

discover_task = task(engine.discover, name="discover")
process_batch_task = task(engine.process_batch, name="process-batch")
assemble_task = task(engine.assemble, name="assemble")


def artifact_key(prefix: str, source: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only (pitfalls.md); inside a pipeline run the
    experiment follows (flows/ui.py)."""
    from flows.ui import artifact_key as scoped

    return scoped("-".join(filter(None, (prefix + "-" + source).lower().replace("_", "-").split("-"))))


@flow(name="ingest", log_prints=True)
def ingest_flow(cfg: IngestConfig) -> dict:
    start = time.perf_counter()
    share_api_url()
    discovery = discover_task(cfg)
    known = engine.load_hash_cache(cfg.out)
    work = engine.batches(discovery.candidates, cfg.batch_size)
    total = len(discovery.candidates)
    progress_id = create_progress_artifact(0.0, key=artifact_key("ingest-progress", cfg.source),
                                           description=f"images processed of {total}")
    futures = {process_batch_task.submit(b, cfg, engine.hashes_for(known, b)): len(b) for b in work}
    results, done = [], 0
    for fut in as_completed(list(futures)):
        results.append(fut.result())
        done += futures[fut]
        update_progress_artifact(progress_id, 100.0 * done / max(total, 1))
        progress.notify(done, total)
    summary = assemble_task(cfg, discovery, results, time.perf_counter() - start)
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


def default_task_runner(cfg: IngestConfig) -> TaskRunner:
    return ProcessPoolTaskRunner(max_workers=cfg.workers or os.cpu_count() or 1)


def run_ingest_flow(cfg: IngestConfig, task_runner: TaskRunner | None = None) -> dict:
    """Run the flow with a process pool sized by the config (or the runner given, e.g. Dask)."""
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
        key="ingest-mixture-summary",
        description="Per-source reconciliation: found = kept + filtered + quarantined",
    )
    print(f"mixture {', '.join(summary['sources'])}: found {summary['found']} = kept {summary['kept']} + "
          f"filtered {summary['filtered']} + quarantined {summary['quarantined']}")
    return summary
