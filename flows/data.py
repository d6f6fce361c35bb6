"""Flow `data`: ingest -> structure (rules by default) -> validate_and_shard, as subflows under one OUT."""

from __future__ import annotations

from prefect import flow

from flows import progress
from flows.ingest import default_task_runner, ingest_flow, ingest_mixture_flow
from flows.structure import structure
from flows.validate_shard import validate_and_shard
from schemas.config import ImageConfig, IngestConfig, MixtureConfig
from schemas.llm import LLMConfig, StructureConfig
from schemas.shards import DataParams, ValidateConfig, ValidateShardParams
from tasks.lock import holds_output_lock


def stage_configs(p: DataParams) -> tuple[IngestConfig, StructureConfig, ValidateShardParams]:
    data, artifacts = p.out / "data", p.out / "artifacts"
    ingest = IngestConfig(
        source=p.source,
        root=p.root or data,  # unused for a mixture (ingest_mixture_flow reads p.sources)
        out=data,
        frontal_only=p.frontal_only,
        workers=p.workers,
        limit=p.limit,
        image=ImageConfig(size=p.image_size),
        annotations=p.annotations,
    )
    llm = LLMConfig(
        backend=p.llm_backend, model=p.llm_model, base_url=p.llm_base_url, cache_dir=artifacts / "llm-cache"
    )
    struct = StructureConfig(manifest=data / "manifest.parquet", out=data, llm=llm)
    shard = ValidateShardParams(
        data=data,
        out=p.out / "shards",
        artifacts=artifacts,
        validate_cfg=ValidateConfig(frontal_only=p.frontal_only),
        shard=p.shard,
    )
    return ingest, struct, shard


def mixture_config(p: DataParams) -> MixtureConfig:
    return MixtureConfig(sources=p.sources, out=p.out / "data", frontal_only=p.frontal_only,
                         image=ImageConfig(size=p.image_size), workers=p.workers)


@flow(name="data")
@holds_output_lock("data")
def data_pipeline(params: DataParams) -> dict:
    ingest_cfg, structure_cfg, shard_params = stage_configs(params)
    progress.notify_stage("images ingested")  # the CLI's bar: a row per stage
    if params.sources:
        ingest = ingest_mixture_flow(mixture_config(params))
    else:
        ingest = ingest_flow.with_options(task_runner=default_task_runner(ingest_cfg))(ingest_cfg)
    progress.notify_stage("reports structured")
    struct = structure(structure_cfg)
    shards = validate_and_shard(shard_params)
    return {"ingest": ingest, "structure": struct, "shards": shards}
