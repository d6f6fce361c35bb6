"""Paired significance between two evaluations of the same test ids, for every metric both computed.

Reads two per_report.parquet files (from `evaluate` / `score`), aligns them on id, and runs a paired
bootstrap (CI and p-value of the difference B - A from the same resamples) for each metric whose per-report
statistics both evaluations hold. Metrics either side could not compute are listed with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from schemas.evaluation import NOT_COMPUTED_PREFIX, EvaluationComparison, MetricComparison
from tasks.evaluate.resampling import SEED, paired_test
from tasks.evaluate.scoring import all_specs, frame_columns


def per_report_path(path: Path) -> Path:
    """An EVAL dir or a per_report.parquet file."""
    path = Path(path)
    return path / "per_report.parquet" if path.is_dir() else path


def compare_frames(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    name_a: str = "A",
    name_b: str = "B",
    n_resamples: int = 1000,
    seed: int = SEED,
) -> EvaluationComparison:
    ids_a, ids_b = set(a["id"].to_list()), set(b["id"].to_list())
    if ids_a != ids_b:
        raise ValueError(
            f"evaluations cover different ids: {len(ids_a - ids_b)} only in {name_a}, {len(ids_b - ids_a)} only in "
            f"{name_b}; paired tests need the same test ids"
        )
    a, b = a.sort("id"), b.sort("id")
    if a["reference"].to_list() != b["reference"].to_list():
        raise ValueError("the two evaluations use different reference texts for the same ids")
    ca, cb = frame_columns(a), frame_columns(b)
    out = EvaluationComparison(a=name_a, b=name_b, n_common=a.height, n_resamples=n_resamples, seed=seed)
    for spec in all_specs():
        lacking = [
            side for side, cols in ((name_a, ca), (name_b, cb)) if not all(c in cols for c in spec.columns)
        ]
        if lacking:
            out.metrics[spec.name] = MetricComparison(
                not_computed=f"{NOT_COMPUTED_PREFIX}not computed in {' and '.join(lacking)}", method=""
            )
            continue
        # NaN marks a report a metric could not score (e.g. a quarantined CheXprompt answer). Pairs need a value
        # on both sides: dropping NaN rows per side would compare different reports.
        both = _valued_rows(ca, spec.columns) & _valued_rows(cb, spec.columns)
        if not both.any():
            out.metrics[spec.name] = MetricComparison(
                not_computed=f"{NOT_COMPUTED_PREFIX}no report has a value in both {name_a} and {name_b}"
            )
            continue
        if not both.all():
            ca_m = {c: ca[c][both] for c in spec.columns}
            cb_m = {c: cb[c][both] for c in spec.columns}
            cmp = paired_test(spec, ca_m, cb_m, n_resamples=n_resamples, seed=seed)
            cmp.method += f"; {int(both.sum())} of {len(both)} reports valued in both"
        else:
            cmp = paired_test(spec, ca, cb, n_resamples=n_resamples, seed=seed)
        out.metrics[spec.name] = cmp
    return out


def _valued_rows(cols: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    n = len(cols[names[0]])
    mask = np.ones(n, dtype=bool)
    for c in names:
        arr = np.asarray(cols[c])
        if arr.dtype.kind == "f":
            mask &= ~np.isnan(arr)
    return mask


def compare_evals(a: Path, b: Path, n_resamples: int = 1000, seed: int = SEED) -> EvaluationComparison:
    pa, pb = per_report_path(a), per_report_path(b)
    return compare_frames(
        pl.read_parquet(pa),
        pl.read_parquet(pb),
        name_a=str(a),
        name_b=str(b),
        n_resamples=n_resamples,
        seed=seed,
    )
