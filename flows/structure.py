"""The `structure` flow: report operations (structure / translate / synthesize) over a manifest, with run
totals and the rules-vs-LLM comparison as table artifacts. The work itself is tasks/reports/structure.py."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.llm import StructureConfig
from schemas.stages import StructureSummary
from tasks import stage_reports as reports
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

@flow(name="structure", log_prints=True)
@holds_output_lock("structure")
def structure(cfg: StructureConfig) -> dict:
    from tasks import preflight

    preflight.check_file(cfg.manifest, "manifest", "manifest.parquet from `cxrflow ingest`")  # as the CLI does
    preflight.check_out_dir(cfg.out, "out")
    summary = (structure_task if cfg.llm.backend == "rules" else structure_llm_task)(cfg)
    s = StructureSummary.model_validate(summary)
    create_table_artifact(
        reports.structure_totals(s), key=artifact_key("structure-run-totals"),
        description=f"Report structuring with {reports.structure_backend(s)} ({s.mode}): reports = ok + "
        "quarantined; tokens and cost are this run's ledger totals",
    )
    create_table_artifact(
        reports.structure_comparison(s), key=artifact_key("structure-comparison"),
        description="Findings: LLM vs rule-based (BLEU-4, ROUGE-L, share differing, comparison sentences removed)",
    )
    print(reports.structure_line(s))
    return summary
