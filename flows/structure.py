"""The `structure` flow: report operations (structure / translate / synthesize) over a manifest, with run
totals and the rules-vs-LLM comparison as table artifacts. The work itself is tasks/reports/structure.py."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.llm import StructureConfig
from tasks.lock import holds_output_lock
from tasks.reports.structure import run_structure


def structure_with_progress(cfg: StructureConfig) -> dict:
    """run_structure, driving a progress artifact and the CLI's bar (reports done, estimated cost so far)."""
    from flows.progress import Reporter

    with Reporter(artifact_key("structure-progress"), f"reports structured into {cfg.out}") as report:

        def on_progress(done: int, total: int, cost: float) -> None:
            report(done, total)
            report.fields({"cost": f"${cost:.4f}"})

        return run_structure(cfg, progress=on_progress)


structure_task = as_task(structure_with_progress, "structure-reports")
# LLM structuring, retried: a retry re-asks only what the LLM cache lacks (rules send nothing: not retried)
structure_llm_task = as_task(structure_with_progress, "structure-reports", flaky=True)

_TOTALS = ("reports", "ok", "quarantined", "requests", "http_attempts", "cache_hits", "prompt_tokens",
           "completion_tokens", "estimated_cost_usd")


def totals_table(summary: dict) -> list[dict]:
    rows = [{"measure": k, "value": summary.get(k)} for k in _TOTALS]
    if summary.get("estimated_cost_note"):
        rows.append({"measure": "estimated_cost_usd note", "value": summary["estimated_cost_note"]})
    rows += [{"measure": f"quarantined: {k}", "value": v} for k, v in summary["quarantined_by_reason"].items()]
    return rows


def comparison_table(comparison: dict) -> list[dict]:
    return [{"measure": k, "value": v} for k, v in comparison.items()]


@flow(name="structure", log_prints=True)
@holds_output_lock("structure")
def structure(cfg: StructureConfig) -> dict:
    from tasks import preflight

    preflight.check_file(cfg.manifest, "manifest", "manifest.parquet from `cxrflow ingest`")  # as the CLI does
    preflight.check_out_dir(cfg.out, "out")
    summary = (structure_task if cfg.llm.backend == "rules" else structure_llm_task)(cfg)
    backend = summary["backend"] if summary["backend"] == "rules" else f"{summary['backend']}:{summary['model']}"
    create_table_artifact(
        totals_table(summary), key=artifact_key("structure-run-totals"),
        description=f"Report structuring with {backend} ({summary['mode']}): reports = ok + quarantined; "
        "tokens and cost are this run's ledger totals",
    )
    create_table_artifact(
        comparison_table(summary["comparison"]), key=artifact_key("structure-comparison"),
        description="Findings: LLM vs rule-based (BLEU-4, ROUGE-L, share differing, comparison sentences removed)",
    )
    print(f"structure: {summary['reports']} reports, {summary['quarantined']} quarantined, "
          f"{summary['requests']} requests, {summary['cache_hits']} cache hits")
    return summary
