"""Flow `validate_and_shard`: GX gate -> WebDataset shards -> indexes -> LLaVA export -> read-back check."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from cxrio import atomic_write_json
from flows.progress_artifact import progress_reporter
from flows.ui import artifact_key
from schemas.shards import SPLITS, ValidateShardParams
from tasks.export_llava import export_llava
from tasks.lock import holds_output_lock
from tasks.shard import ShardInfo, write_shards
from tasks.shard_index import verify_shards, write_indexes
from tasks.validate import run_validation


def validate_with_progress(params: ValidateShardParams):
    """tasks/validate.run_validation, driving a progress artifact (a step per GX suite) and the CLI's bar."""
    from flows import progress

    progress.notify_stage("validation")
    report = progress_reporter(
        artifact_key("validate-progress"), f"Great Expectations validation of {params.data}"
    )

    def on_progress(done: int, total: int, step: str) -> None:
        report(done, total)
        progress.notify_fields({"description": f"validation: {step}"})

    return run_validation(params.data, params.out, params.artifacts, params.validate_cfg, progress=on_progress)


def shard_with_progress(accepted: pl.DataFrame, params: ValidateShardParams) -> list[ShardInfo]:
    """tasks/shard.write_shards, driving a progress artifact and the CLI's bar."""
    from flows import progress

    progress.notify_stage("samples sharded")
    report = progress_reporter(artifact_key("shard-progress"), f"samples sharded into {params.out}")
    return write_shards(accepted, params.data, params.out, params.shard, progress=report)


validate_task = task(validate_with_progress, name="validate", cache_policy=NO_CACHE)
shard_task = task(shard_with_progress, name="write-shards", cache_policy=NO_CACHE)
index_task = task(write_indexes, name="write-indexes", cache_policy=NO_CACHE)
export_task = task(export_llava, name="export-llava", cache_policy=NO_CACHE)
verify_task = task(verify_shards, name="verify-shards", cache_policy=NO_CACHE)


def validation_markdown(report: dict) -> str:
    """The validation results as Data Docs show them, rendered into the UI (a file:// link to the HTML site
    does not open from a browser tab served over http)."""
    counts = report.get("counts", {})
    failed = sum(not r["success"] for r in report["expectations"])
    lines = [
        "# Great Expectations validation",
        "",
        f"{len(report['expectations'])} expectations, {failed} failed. "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
    ]
    suites: dict[str, list[dict]] = {}
    for r in report["expectations"]:
        suites.setdefault(r["suite"], []).append(r)
    for suite, rows in suites.items():
        lines += [
            f"## `{suite}`",
            "",
            "| status | expectation | column | check | unexpected | observed |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            status = "✅ pass" if r["success"] else "❌ FAIL"
            observed = "" if r.get("observed_value") is None else str(r["observed_value"])
            lines.append(
                f"| {status} | `{r['expectation']}` | {r['column'] or ''} | {r['check'] or ''} | "
                f"{r['unexpected_count']} | {observed} |"
            )
        lines.append("")
    if report.get("data_docs"):
        lines.append(f"HTML Data Docs on the machine that ran the validation: `{report['data_docs']}`")
    return "\n".join(lines)


def _publish_validation(out: Path) -> None:
    """Table of every expectation + the Data Docs results rendered as markdown (also on failure, so the cause
    is one click away)."""
    path = Path(out) / "validation" / "expectations.json"
    if not path.exists():
        return
    report = json.loads(path.read_text())
    rows = [
        {
            "suite": r["suite"],
            "expectation": r["expectation"],
            "column": r["column"] or "",
            "check": r["check"] or "",
            "scope": r["scope"],
            "result": "pass" if r["success"] else "FAIL",
            "unexpected": r["unexpected_count"],
        }
        for r in report["expectations"]
    ]
    create_table_artifact(
        key=artifact_key("gx-expectations"), table=rows, description="Great Expectations results"
    )
    create_markdown_artifact(
        key=artifact_key("gx-data-docs"),
        markdown=validation_markdown(report),
        description="GX Data Docs: validation results per suite",
    )


@flow(name="validate_and_shard")
@holds_output_lock("validate and shard")
def validate_and_shard(params: ValidateShardParams) -> dict:
    from tasks import preflight

    preflight.check_data_dir(params.data, "data")  # the CLI's checks, so a deployment run fails the same way
    preflight.check_out_dir(params.out, "out")
    try:
        result = validate_task(params)
    finally:
        _publish_validation(params.out)
    infos = shard_task(result.accepted, params)
    summary = index_task(params.out, params.data, infos, result.accepted, result.counts)
    if params.export_llava:
        summary["llava_records"] = export_task(
            result.accepted, params.out, params.data, params.llava_image_root, params.llava_nan_labels
        )
    expected = {s: result.accepted.filter(result.accepted["split"] == s).height for s in SPLITS}
    summary["read_back"] = verify_task(params.out, expected)
    atomic_write_json(params.out / "summary.json", summary)
    rec = summary["reconciliation"]
    if not rec["balanced"]:
        raise RuntimeError(f"counts do not reconcile: {rec}")
    lines = [
        "| split | samples | shards | bytes |",
        "|---|---|---|---|",
        *[f"| {s} | {v['samples']} | {v['shards']} | {v['bytes']} |" for s, v in summary["splits"].items()],
        "",
        f"found {rec['found']} = sharded {rec['sharded']} + filtered {rec['filtered']} "
        f"+ quarantined {rec['quarantined']}",
    ]
    create_markdown_artifact(
        key=artifact_key("shard-summary"), markdown="\n".join(lines), description="WebDataset shards"
    )
    return summary
