"""Flow `data`: ingest -> structure (rules by default) -> shard, as subflows under one OUT
(the stage configs: tasks/plan.py; the stages' flows: flows/stages.py)."""

from __future__ import annotations

from prefect import flow

from flows.stages import run_stage
from schemas.shards import DataParams
from tasks.lock import holds_output_lock
from tasks.plan import DATA_STAGES, data_stage_configs


@flow(name="data")
@holds_output_lock("data")
def data_pipeline(params: DataParams) -> dict:
    confs = data_stage_configs(params)
    done = {stage: run_stage(stage, confs) for stage in DATA_STAGES}
    return {"ingest": done["ingest"], "structure": done["structure"], "shards": done["shard"]}
