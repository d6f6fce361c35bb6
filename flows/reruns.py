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
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    done = finished_variant(cfg)
    if done is None:
        return None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(done["flow_run_id"]))
        except ObjectNotFound:  # another server's database
            run = None
        if run is None or not set(tags) <= set(run.tags or []) or not (run.state and run.state.is_completed()):
            # the evaluation came from another run (a plain pipeline run, another variant with the same
            # config): this variant's row is its own latest completed run, if it has one
            completed = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags), state=completed),
                sort=FlowRunSort.START_TIME_DESC, limit=1)
            if not found:
                return None  # run the pipeline once (it reuses every stage): the variant gets its row
            run = found[0]
    return {**done, "flow_run_id": str(run.id), "flow_run_name": run.name}


def tag_headline(flow_run_id: str, eval_dir: str, metric: str) -> str:
    """Adds (or updates) the `metric <name> <value> [CI]` tag of a variant's run; returns the tag."""
    from prefect.client.orchestration import get_client

    tag = headline(eval_dir, metric)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        client.update_flow_run(run.id, tags=with_headline(list(run.tags or []), tag))
    return tag
