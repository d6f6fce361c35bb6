"""Paired significance between two evaluations of the same test ids, for every metric both computed.

Reads two per_report.parquet files (from `evaluate` / `score`), aligns them on id, and runs a paired
bootstrap (CI and p-value of the difference B - A from the same resamples) for each metric whose per-report
statistics both evaluations hold. Metrics either side could not compute are listed with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from schemas.errors import UserError
from schemas.evaluation import NOT_COMPUTED_PREFIX, EvaluationComparison, MetricComparison
from tasks.evaluate.resampling import SEED, paired_test
from tasks.evaluate.scoring import all_specs, frame_columns


def per_report_path(path: Path) -> Path:
    """An EVAL dir or a per_report.parquet file."""
    path = Path(path)
    return path / "per_report.parquet" if path.is_dir() else path


def load_per_report(path: Path) -> pl.DataFrame:
    """per_report rows of an EVAL dir / per_report.parquet, or of a predictions .jsonl (a LLaVA-Rad file as it
    is written included) scored here with the metrics that need no LLM."""
    path = Path(path)
    if path.suffix == ".jsonl":
        from tasks.evaluate.inference import read_predictions
        from tasks.evaluate.scoring import score_records

        _, frame, _ = score_records(read_predictions(path), n_bootstrap=0)
        return frame
    parquet = per_report_path(path)
    if not parquet.is_file():
        raise UserError(
            f"{path} holds no per_report.parquet",
            "pass an EVAL folder of `cxrflow evaluate` / `cxrflow score`, its per_report.parquet or a predictions .jsonl",
        )
    try:
        return pl.read_parquet(parquet)
    except (OSError, pl.exceptions.PolarsError) as exc:  # not Parquet (a stray or truncated file)
        raise UserError(f"{parquet} is not a readable Parquet file ({exc})") from None


def by_study(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """One row per `<subject>_<study>`: the study's first row in file order (LLaVA-Rad writes one line per
    image, cxrflow one per image key), re-keyed by the study so two systems pair on it."""
    if "study" not in frame.columns or frame["study"].null_count() == frame.height:
        raise ValueError(f"{name} has no study ids (per_report.parquet column `study`); cannot pair by study")
    missing = frame["study"].null_count()
    if missing:
        raise ValueError(f"{name}: {missing} rows have no study id; cannot pair by study")
    return frame.unique(subset="study", keep="first", maintain_order=True).with_columns(id=pl.col("study"))


def compare_frames(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    name_a: str = "A",
    name_b: str = "B",
    n_resamples: int = 1000,
    seed: int = SEED,
    pair_by: str = "id",
) -> EvaluationComparison:
    note = None
    if pair_by == "study":
        rows_a, rows_b = a.height, b.height
        a, b = by_study(a, name_a), by_study(b, name_b)
        common = set(a["id"].to_list()) & set(b["id"].to_list())
        note = (
            f"paired by study: {rows_a} rows of {name_a} and {rows_b} of {name_b} -> first row of each study; "
            f"{len(common)} studies in both, {a.height - len(common)} only in {name_a}, "
            f"{b.height - len(common)} only in {name_b} (left out)"
        )
        if not common:
            raise ValueError(f"no study is in both {name_a} and {name_b}")
        a = a.filter(pl.col("id").is_in(list(common)))
        b = b.filter(pl.col("id").is_in(list(common)))
    elif pair_by != "id":
        raise ValueError(f"pair_by must be id or study, not {pair_by!r}")
    ids_a, ids_b = set(a["id"].to_list()), set(b["id"].to_list())
    if ids_a != ids_b:
        raise ValueError(
            f"evaluations cover different ids: {len(ids_a - ids_b)} only in {name_a}, {len(ids_b - ids_a)} only in "
            f"{name_b}; paired tests need the same test ids"
        )
    a, b = a.sort("id"), b.sort("id")
    differ = sum(
        " ".join(x.split()) != " ".join(y.split())
        for x, y in zip(a["reference"].to_list(), b["reference"].to_list(), strict=True)
    )
    if differ and pair_by == "id":
        raise ValueError("the two evaluations use different reference texts for the same ids")
    if differ:  # two pipelines' references of one study (e.g. cxrflow's sections vs the annotation release)
        note += f"; {differ} studies have different reference texts on the two sides"
    ca, cb = frame_columns(a), frame_columns(b)
    out = EvaluationComparison(
        a=name_a,
        b=name_b,
        n_common=a.height,
        n_resamples=n_resamples,
        seed=seed,
        paired_by=pair_by,
        note=note,
    )
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


def compare_evals(
    a: Path, b: Path, n_resamples: int = 1000, seed: int = SEED, pair_by: str = "id"
) -> EvaluationComparison:
    return compare_frames(
        load_per_report(a),
        load_per_report(b),
        name_a=str(a),
        name_b=str(b),
        n_resamples=n_resamples,
        seed=seed,
        pair_by=pair_by,
    )
