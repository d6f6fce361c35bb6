"""Flow `shard` (the stage that validates and shards; `cxrflow shard`, pipeline stage `shard`, config section
`shard:` with its `validate:` thresholds): GX gate -> WebDataset shards -> indexes -> LLaVA export ->
read-back check."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.progress import Reporter
from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.shards import ShardParams
from tasks import stage_reports as reports
from tasks.export_llava import export_llava
from tasks.lock import holds_output_lock
from tasks.shard import ShardInfo, write_shards
from tasks.shard_index import split_counts, verify_shards, write_indexes
from tasks.validate import run_validation


def validate_with_progress(params: ShardParams):
    """tasks/validate.run_validation, driving a progress artifact (a step per GX suite) and the CLI's bar."""
    with Reporter(artifact_key("validate-progress"), f"Great Expectations validation of {params.data}",
                  stage="validation") as report:

        def on_progress(done: int, total: int, step: str) -> None:
            report(done, total)
            report.fields({"description": f"validation: {step}"})

        return run_validation(params.data, params.out, params.artifacts, params.validate_cfg, progress=on_progress)


def shard_with_progress(accepted: Path, params: ShardParams) -> list[ShardInfo]:
    """tasks/shard.write_shards, driving a progress artifact and the CLI's bar."""
    with Reporter(artifact_key("shard-progress"), f"samples sharded into {params.out}",
                  stage="samples sharded") as report:
        return write_shards(accepted, params.data, params.out, params.shard, progress=report)


validate_task = as_task(validate_with_progress, "validate")
shard_task = as_task(shard_with_progress, "write-shards")
index_task = as_task(write_indexes, "write-indexes")
export_task = as_task(export_llava, "export-llava")
verify_task = as_task(verify_shards, "verify-shards")
finish_task = as_task(reports.finish_shards, "shard-summary")


def _publish_validation(out: Path) -> None:
    """Table of every expectation + the Data Docs results rendered as markdown (also on failure, so the cause
    is one click away)."""
    report = reports.read_validation(out)
    if report is None:
        return
    create_table_artifact(
        key=artifact_key("gx-expectations"), table=reports.expectation_rows(report),
        description="Great Expectations results",
    )
    create_markdown_artifact(
        key=artifact_key("gx-data-docs"),
        markdown=reports.validation_markdown(report),
        description="GX Data Docs: validation results per suite",
    )


@flow(name="shard")
@holds_output_lock("shard")
def shard(params: ShardParams) -> dict:
    from tasks import preflight

    preflight.check_data_dir(params.data, "data")  # the CLI's checks, so a deployment run fails the same way
    preflight.check_out_dir(params.out, "out")
    try:
        result = validate_task(params)
    finally:
        _publish_validation(params.out)
    # the accepted rows go on as validation's file, read in bounded batches by each task (not one frame)
    accepted = result.accepted_path
    infos = shard_task(accepted, params)
    summary = index_task(params.out, params.data, infos, accepted, result.counts)
    llava = None
    if params.export_llava:
        llava = export_task(
            accepted, params.out, params.data, params.llava_image_root, params.llava_nan_labels
        )
    read_back = verify_task(params.out, split_counts(accepted))
    shards = finish_task(params.out, summary, llava, read_back)  # raises unless the counts reconcile
    create_markdown_artifact(
        key=artifact_key("shard-summary"), markdown=reports.shard_markdown(shards), description="WebDataset shards"
    )
    return shards.model_dump(mode="json")


validate_and_shard = shard  # the stage's name before issue 24 (flow `validate_and_shard`): kept for callers
