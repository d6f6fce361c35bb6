"""Flow `data`: ingest -> structure (rules by default) -> validate_and_shard, as subflows under one OUT
(the stage configs: tasks/plan.py)."""

from __future__ import annotations

from prefect import flow

from flows import progress  # the CLI board: a row per stage
from flows.ingest import ingest_flow, ingest_mixture_flow
from flows.runners import runner_for
from flows.structure import structure
from flows.validate_shard import validate_and_shard
from schemas.shards import DataParams
from tasks.lock import holds_output_lock
from tasks.plan import data_stage_configs


@flow(name="data")
@holds_output_lock("data")
def data_pipeline(params: DataParams) -> dict:
    confs = data_stage_configs(params)
    progress.notify_stage("images ingested")  # the CLI's bar: a row per stage
    if confs.mixture is not None:
        ingest = ingest_mixture_flow(confs.mixture)
    else:
        ingest = ingest_flow.with_options(task_runner=runner_for(confs.ingest))(confs.ingest)
    progress.notify_stage("reports structured")
    struct = structure(confs.structure)
    shards = validate_and_shard(confs.shard)
    return {"ingest": ingest, "structure": struct, "shards": shards}
