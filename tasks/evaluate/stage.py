"""The evaluate stage's two steps as plain functions (the `evaluate` flow wraps them as tasks): generate
reports on a split of the shards, then score a predictions file into EVAL/metrics.json + per_report.parquet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.evaluation import EvaluateParams, EvaluationMetrics


def generate(params: EvaluateParams, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate a report per test sample with the run's final checkpoint into EVAL/predictions.jsonl."""
    from tasks.evaluate.inference import generate_predictions
    from training.inference import ReportGenerator

    generator = ReportGenerator.from_run(Path(params.run), device=params.device)
    out = Path(params.out) / "predictions.jsonl"
    summary = generate_predictions(
        generator,
        Path(params.shards),
        out,
        split=params.split,
        batch_size=params.batch_size,
        max_new_tokens=params.max_new_tokens,
        limit=params.limit,
        progress=progress,
    )
    return {
        "predictions": str(out),
        "found": summary.found,
        "generated": summary.generated,
        "skipped": summary.skipped,
    }


def score(params: EvaluateParams, predictions: str, inference: dict[str, Any] | None) -> EvaluationMetrics:
    """Every metric over the predictions (first `limit`), with the encoder's retrieval metrics beside them
    when the pipeline trained one; written to EVAL."""
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
