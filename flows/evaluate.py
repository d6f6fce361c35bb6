"""Flow `evaluate`: generate on the test shards (or take a predictions file), score every metric, write
EVAL/metrics.json + EVAL/per_report.parquet, and publish a table artifact with a stable key per experiment
(the Prefect UI keeps its version history) plus a markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from schemas.evaluation import EvaluateParams, EvaluationMetrics


@task(cache_policy=NO_CACHE)
def generate_task(params: EvaluateParams) -> dict[str, Any]:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from flows import progress
    from tasks.evaluate.inference import generate_predictions
    from training.inference import ReportGenerator

    generator = ReportGenerator.from_run(Path(params.run), device=params.device)
    out = Path(params.out) / "predictions.jsonl"
    from schemas.pipeline import slug

    key = f"evaluate-progress-{slug(params.experiment, empty='default')}"  # per experiment, like the metrics artifacts
    artifact = create_progress_artifact(0.0, key=key, description=f"reports generated for {out}")

    def on_progress(done: int, total: int) -> None:
        progress.notify(done, total)
        update_progress_artifact(artifact, round(100.0 * done / max(total, 1), 1))

    summary = generate_predictions(
        generator,
        Path(params.shards),
        out,
        split=params.split,
        batch_size=params.batch_size,
        max_new_tokens=params.max_new_tokens,
        limit=params.limit,
        progress=on_progress,
    )
    return {
        "predictions": str(out),
        "found": summary.found,
        "generated": summary.generated,
        "skipped": summary.skipped,
    }


@task(cache_policy=NO_CACHE)
def score_task(
    params: EvaluateParams, predictions: str, inference: dict[str, Any] | None
) -> EvaluationMetrics:
    from schemas.llm import LLMConfig
    from tasks.evaluate.inference import read_predictions
    from tasks.evaluate.scoring import score_records, write_evaluation
    from tasks.io import sha256_file

    records = read_predictions(Path(predictions))
    if params.limit is not None:
        records = records[: params.limit]
    llm = LLMConfig(**params.llm) if params.llm is not None else None
    metrics, frame, notes = score_records(
        records,
        experiment=params.experiment,
        paths=params.model_paths,
        llm=llm,
        source=params.source,
        n_bootstrap=params.n_bootstrap,
        seed=params.seed,
        bootstrap_scheme=params.bootstrap_scheme,
        chexprompt_protocol=params.chexprompt_protocol,
        ledger_path=Path(params.out) / "llm-ledger.jsonl",
    )
    metrics.predictions_sha256 = sha256_file(Path(predictions))
    if params.encoder_metrics is not None:  # the encoder's retrieval metrics sit beside the report metrics
        enc = EvaluationMetrics.model_validate_json(Path(params.encoder_metrics).read_text())
        metrics.metrics.update(enc.metrics)
        notes["encoder_metrics"] = {"path": params.encoder_metrics, "n_queries": enc.n_reports}
    if inference is not None:
        notes["inference"] = inference
    write_evaluation(Path(params.out), metrics, frame, notes)
    return metrics


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
        key=f"evaluation-{name}",
        table=metric_rows(metrics),
        description=f"Metrics of experiment {params.experiment} ({metrics.n_reports} reports)",
    )
    create_markdown_artifact(
        key=f"evaluation-summary-{name}",
        markdown=markdown_summary(metrics, {"inference": inference} if inference else None),
        description=f"Evaluation summary of {params.experiment}",
    )
    return {
        "out": params.out,
        "n_reports": metrics.n_reports,
        "artifact_key": f"evaluation-{name}",
        "metrics": {
            k: v.value if v.value is not None else v.not_computed for k, v in metrics.metrics.items()
        },
    }
