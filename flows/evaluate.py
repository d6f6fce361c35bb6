"""Flow `evaluate`: generate on the test shards (or take a predictions file), score every metric, write
EVAL/metrics.json + EVAL/per_report.parquet, and publish a table artifact with a stable key per experiment
(the Prefect UI keeps its version history) plus a markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.evaluation import EvaluateParams
from tasks.evaluate import stage
from tasks.evaluate.scoring import score_predictions


def generate_with_progress(params: EvaluateParams) -> dict[str, Any]:
    """tasks/evaluate/stage.generate, driving a progress artifact (per experiment) and the CLI's bar."""
    from flows.progress import Reporter
    from schemas.pipeline import slug

    # per experiment, like the metrics (the key names it: not suffixed again inside a pipeline)
    key = artifact_key("evaluate-progress", slug(params.experiment, empty="default"), scoped=False)
    with Reporter(key, f"reports generated for {Path(params.out) / 'predictions.jsonl'}") as report:
        return stage.generate(params, progress=report)


generate_task = as_task(generate_with_progress, "generate")
score_task = as_task(score_predictions, "score")


@flow(name="evaluate")
def evaluate(params: EvaluateParams) -> dict[str, Any]:
    from schemas.pipeline import slug
    from tasks import preflight
    from tasks.evaluate.scoring import markdown_summary, metric_rows

    if params.predictions is None and params.run:  # the CLI's checks: a deployment run fails the same way
        preflight.check_run_dir(Path(params.run), "run")
        preflight.check_shards(Path(params.shards), params.split, "shards")
    inference = None
    predictions = params.predictions
    if predictions is None:
        inference = generate_task(params)
        predictions = inference["predictions"]
    metrics = score_task(params, predictions, inference)
    name = slug(params.experiment, empty="default")
    create_table_artifact(
        key=artifact_key("evaluation", name, scoped=False),
        table=metric_rows(metrics),
        description=f"Metrics of experiment {params.experiment} ({metrics.n_reports} reports)",
    )
    create_markdown_artifact(
        key=artifact_key("evaluation-summary", name, scoped=False),
        markdown=markdown_summary(metrics, {"inference": inference} if inference else None),
        description=f"Evaluation summary of {params.experiment}",
    )
    return {
        "out": params.out,
        "n_reports": metrics.n_reports,
        "artifact_key": artifact_key("evaluation", name, scoped=False),
        "metrics": {
            k: v.value if v.value is not None else v.not_computed for k, v in metrics.metrics.items()
        },
    }
