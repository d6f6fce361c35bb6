"""The evaluate stage's generation step as a plain function (the `evaluate` flow wraps it as a task); scoring a
predictions file is tasks/evaluate/scoring.score_predictions, shared with `cxrflow score`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.evaluation import EvaluateParams


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

