"""An ablation rerun as the Runs page shows it (the work: tasks/variants.py). A variant whose every stage is
already finished gets no new pipeline run: its row stays the run that produced it (when that run is on this
server, Completed and tagged for this variant), so `/runs?tag=ablation:<name>` keeps one row per variant after
any number of reruns. Each variant's run carries its headline metric as a tag, so the filtered Runs page says
which variant is better."""

from __future__ import annotations

from uuid import UUID

from schemas.pipeline import PipelineConfig
from tasks.variants import finished_variant, headline, with_headline


def reusable_variant(cfg: PipelineConfig, tags: list[str]) -> dict | None:
    """The finished variant's result (tasks/variants.finished_variant) when its run is on this server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    done = finished_variant(cfg)
    if done is None:
        return None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(done["flow_run_id"]))
        except ObjectNotFound:  # another server's database: run the pipeline (it reuses every stage)
            return None
    if not set(tags) <= set(run.tags or []) or run.state is None or not run.state.is_completed():
        return None
    return done


def tag_headline(flow_run_id: str, eval_dir: str, metric: str) -> str:
    """Adds (or updates) the `metric <name> <value> [CI]` tag of a variant's run; returns the tag."""
    from prefect.client.orchestration import get_client

    tag = headline(eval_dir, metric)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        client.update_flow_run(run.id, tags=with_headline(list(run.tags or []), tag))
    return tag
