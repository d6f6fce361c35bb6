"""The gate before sharding: Great Expectations suites on the manifest and the structured reports.

Three suites run in a file data context under the artifacts root (so Data Docs persist between runs):
- `cxrflow-patient-splits` on the distinct (subject_id, split) pairs: a patient in two splits FAILS the run;
- `cxrflow-manifest-table`: the manifest's row count against a floor relative to ingest's `found` (FAILS);
- `cxrflow-samples`: row-level expectations; every failing row becomes a quarantine row naming the
  expectation(s). Quarantining more than `max_quarantine_fraction` of the rows FAILS the run (collapse).
Rows with no findings in any allowed version are filtered first ("no findings"), as LLaVA-Rad drops them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cxrio import (
    atomic_path,
    atomic_write_json,
    atomic_write_parquet,
    clean_stale_temps,
    read_json,
    scratch_dir,
)
from schemas.errors import UserError
from schemas.labels import LABEL_COLUMNS
from schemas.manifest import DROP_SCHEMA, FRONTAL_VIEWS, REPORT_SECTIONS
from schemas.sample_json import SOURCE_LABEL_SEP
from schemas.shards import RULE_BASED, SPLITS, SYNTHESIZED, ValidateConfig, target_rank
from tasks.phi_engine import FLAGGED as PHI_FLAGGED
from tasks.phi_engine import flagged_categories
from tasks.reports.sections import PARSER_METHOD

STAGE = "validate"
NO_FINDINGS = "no findings"

# The PHI backstop is the report scrub's own engine (tasks/phi_engine.py), run again on every text column: a row
# is quarantined for each category it still finds (docs/reports.md). Beside it, not PHI but checked the same way:
# NUL and other control bytes must not reach a shard's .txt (a regex, Python `re`).
CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
PHI_CHECKS: tuple[str, ...] = (*PHI_FLAGGED, "control character")

# Text that ends up in shards (the .txt and every field of the .json, incl. a structured report's indication).
TEXT_COLUMNS: tuple[str, ...] = ("findings_text", "other_findings", "indication_text", "report_text") + tuple(
    s for s in REPORT_SECTIONS if s != "findings"
)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "image_key",
    "subject_id",
    "study_id",
    "image_id",
    "split",
    "image_path",
    "image_sha256",
    "width",
    "height",
    "image_file_bytes",
)

ROW_INDEX = "_row"
# Rows per batch, for assembling the samples and for the GX row suite: the per-row Python objects, the derived
# pandas frame and GX's evaluation of ~50 expectations were the stage's peak; they now see a bounded slice of
# the archive at a time (BENCHMARKS.md, issue 28: at 60K images the row suite peaked at 617 MiB with 25,000-row
# batches, 534 with 5,000).
BATCH_ROWS = 5_000

# K.json joins the source labels with SOURCE_LABEL_SEP (schemas/sample_json.py): a label that is empty or holds
# it would not split back, so its row is quarantined here rather than stopping the shard stage.
SOURCE_LABELS_UNJOINABLE = "source_labels__unjoinable"


def _ingest_hints(summary: dict) -> list[str]:
    """The ingest summary's hints (a source emptied by the view policy: why, and what to pass), one source's or
    a mixture's per source."""
    hints = [(summary.get("notes") or {}).get("hint")]
    per_source = (summary.get("per_source") or {}).items()
    hints += [f"{name}: {s['hint']}" for name, s in per_source if s.get("hint")]
    return [h for h in hints if h]


class ValidationFailed(UserError):
    """A dataset-level defect (split leakage, row-count collapse): the run stops, nothing is sharded. A
    UserError: the input has to be fixed, so the CLI reports it in one line (exit 2)."""


@dataclass
class ValidationResult:
    """`accepted_path`: OUT/validation/accepted.parquet, which the stages after validation read in batches
    (tasks/accepted_rows.py): the accepted rows are handed on as the file, never as one frame."""

    accepted_path: Path
    filtered: list[dict]
    quarantined: list[dict]
    expectations: list[dict]
    docs_url: str | None
    counts: dict = field(default_factory=dict)

    @property
    def accepted(self) -> pl.DataFrame:
        """The accepted rows read whole: for tests and small callers, not for the stages."""
        return pl.read_parquet(self.accepted_path)


# ---------------------------------------------------------------- inputs


def _report_method(row: dict) -> str | None:
    """Name a structured-report version: rules backends keep the rule names, LLMs are '<backend>:<model>'."""
    if row.get("method"):
        return str(row["method"])
    backend, model, op = row.get("backend"), row.get("model"), str(row.get("operation") or "")
    if backend in (None, "", "rules"):
        return SYNTHESIZED if "synth" in op else RULE_BASED
    return f"{backend}:{model}" if model else str(backend)


def _clean(text) -> str | None:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    text = str(text).strip()
    return text or None


def _group_reports(df: pl.DataFrame) -> dict[str, list[dict]]:
    """reports.parquet's rows as each image's findings versions."""
    out: dict[str, list[dict]] = {}
    for row in df.iter_rows(named=True):
        # A row the structure stage quarantined has no usable answer; its rules version (below) still counts.
        usable = row.get("status") in (None, "ok", "cached", "success")
        findings = _clean(row.get("findings")) if usable else None
        # a released record without findings still says which texts this image has (none of its own)
        released = row.get("operation") == "annotations"
        if findings is not None or released:
            # a released record's reason goes to the prompt as written (LLaVA-Rad's loader tests only `is None`
            # and the prompt format does the rest); other indications are cleaned
            indication = row.get("indication") if released else _clean(row.get("indication"))
            out.setdefault(row["image_key"], []).append(
                {
                    "method": _report_method(row),
                    "findings": findings,
                    "indication": indication,
                    "released": released,
                }
            )
        # The rules version the structure stage ran beside an LLM (used when the manifest has none).
        rule = _clean(row.get("rule_findings"))
        if rule is not None:
            out.setdefault(row["image_key"], []).append(
                {"method": RULE_BASED, "findings": rule, "indication": None}
            )
    return out


EXTRA_SCHEMA = {
    "targets_json": pl.String,
    "findings_text": pl.String,
    "primary_method": pl.String,
    "other_findings": pl.String,
    "indication_text": pl.String,
    "image_file_bytes": pl.Int64,
}


def assemble_samples(data_dir: Path, cfg: ValidateConfig) -> tuple[pl.DataFrame, list[dict]]:
    """Manifest rows joined with every findings version, whole (tests and small callers; validation itself
    walks `sample_batches`); rows with none allowed are filtered."""
    filtered: list[dict] = []
    parts = list(sample_batches(data_dir, cfg, filtered))
    return pl.concat(parts, how="vertical").with_row_index(ROW_INDEX), filtered


def sample_batches(data_dir: Path, cfg: ValidateConfig, filtered: list[dict]) -> Iterator[pl.DataFrame]:
    """The samples, one manifest slice of BATCH_ROWS rows at a time (at least one frame, empty for an empty
    manifest): each slice reads only its own manifest rows and looks up only its own rows of reports.parquet
    (a polars scan filtered on the slice's keys), so neither file nor the per-row Python objects (row dicts,
    versions) are ever held for the whole archive. Rows with no allowed findings go to FILTERED."""
    data_dir = Path(data_dir)
    manifest = pl.scan_parquet(data_dir / "manifest.parquet")
    n = manifest.select(pl.len()).collect().item()
    reports = _scan_report_rows(data_dir)
    if n == 0:
        yield pl.concat([manifest.collect(), pl.DataFrame(schema=EXTRA_SCHEMA)], how="horizontal")
        return
    for start in range(0, n, BATCH_ROWS):
        rows = manifest.slice(start, BATCH_ROWS).collect()
        grouped: dict[str, list[dict]] = {}
        if reports is not None:
            keys = rows.get_column("image_key")
            grouped = _group_reports(reports.filter(pl.col("image_key").is_in(keys.implode())).collect())
        keep, extra = _assemble_slice(rows, grouped, data_dir, cfg, filtered)
        yield pl.concat([rows.filter(pl.Series(keep, dtype=pl.Boolean)), extra], how="horizontal")


def _scan_report_rows(data_dir: Path) -> pl.LazyFrame | None:
    """reports.parquet (structure stage) as a lazy scan; None when absent (no extra versions)."""
    path = Path(data_dir) / "reports.parquet"
    if not path.exists():
        return None
    scan = pl.scan_parquet(path)
    columns = scan.collect_schema().names()
    if "image_key" not in columns or "findings" not in columns:
        raise ValueError(f"{path}: expected columns image_key and findings, got {columns}")
    return scan


def _assemble_slice(
    rows: pl.DataFrame,
    reports: dict[str, list[dict]],
    data_dir: Path,
    cfg: ValidateConfig,
    filtered: list,
) -> tuple[list[bool], pl.DataFrame]:
    """One manifest slice: which rows have an allowed findings version (the others go to FILTERED), and the
    kept rows' derived columns."""
    extra_rows: list[dict] = []
    keep = []
    for row in rows.iter_rows(named=True):
        versions: list[dict] = []
        own = _clean(row.get("findings"))
        released = [rep for rep in reports.get(row["image_key"], []) if rep.get("released")]
        if released:  # the released LLaVA-Rad texts are this image's versions, its indication their reason
            own = None
        if own is not None:
            method = row.get("report_method") or RULE_BASED
            if method == PARSER_METHOD:  # the section parser's text is LLaVA-Rad's "rule-based" version
                method = RULE_BASED
            if row.get("report_origin") == "labels" and method == RULE_BASED:
                method = SYNTHESIZED
            versions.append({"method": method, "findings": own})
        indication = _clean(row.get("indication")) if not released else released[0]["indication"]
        for rep in released or reports.get(row["image_key"], []):
            if rep["findings"] is None or rep["method"] in {v["method"] for v in versions}:
                continue
            versions.append({"method": rep["method"], "findings": rep["findings"]})
            if indication is None:
                indication = rep["indication"]
        if row.get("split") == "test":
            versions = [v for v in versions if v["method"] in cfg.test_methods]
        elif cfg.train_methods is not None:
            versions = [v for v in versions if v["method"] in cfg.train_methods]
        versions.sort(key=lambda v: (target_rank(v["method"]), v["method"]))
        if not versions:
            filtered.append(_drop(row, NO_FINDINGS))
            keep.append(False)
            continue
        keep.append(True)
        path = data_dir / str(row.get("image_path") or "")
        size = path.stat().st_size if row.get("image_path") and path.is_file() else None
        extra_rows.append(
            {
                "targets_json": json.dumps(versions, ensure_ascii=False, sort_keys=True),
                "findings_text": versions[0]["findings"],
                "primary_method": versions[0]["method"],
                "other_findings": "\n".join(v["findings"] for v in versions[1:]) or None,
                "indication_text": indication,
                "image_file_bytes": size,
            }
        )
    return keep, pl.DataFrame(extra_rows, schema=EXTRA_SCHEMA)


def _drop(row: dict, reason: str) -> dict:
    return {
        "source": row.get("source") or "unknown",
        "source_path": row.get("source_path") or "",
        "stage": STAGE,
        "reason": reason,
        "image_key": row.get("image_key"),
    }


# ---------------------------------------------------------------- GX


_CONTEXTS: dict[str, object] = {}


def gx_context(artifacts_root: Path):
    """One file data context per artifacts root (GX is slow to set up; reuse it within a process)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = str(Path(artifacts_root).resolve())
    if root not in _CONTEXTS:
        Path(root).mkdir(parents=True, exist_ok=True)
        ctx = gx.get_context(mode="file", project_root_dir=root)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
        _CONTEXTS[root] = ctx
    return _CONTEXTS[root]


def _row_expectations(cfg: ValidateConfig, columns: list[str]) -> list:
    import great_expectations as gx

    E = gx.expectations
    exps = []
    for col in REQUIRED_COLUMNS:
        exps.append(
            E.ExpectColumnValuesToNotBeNull(
                column=col,
                meta={"check": "image file present" if col == "image_file_bytes" else f"{col} present"},
            )
        )
    # Text columns reach GX only as derived columns (see gx_frame): a failing row's text never lands in GX's
    # results or Data Docs, only its ids and the expectation.
    exps.append(
        E.ExpectColumnValuesToNotBeNull(
            column=_chars("findings_text"), meta={"check": "findings present for report-bearing rows"}
        )
    )
    exps.append(
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS), meta={"check": "split value"})
    )
    if cfg.frontal_only:
        exps.append(
            E.ExpectColumnValuesToBeInSet(
                column="view", value_set=list(FRONTAL_VIEWS), meta={"check": "frontal view"}
            )
        )
    for col in LABEL_COLUMNS:
        if col in columns:
            exps.append(
                E.ExpectColumnValuesToBeInSet(
                    column=col, value_set=[1, 0, -1], meta={"check": f"{col} in 1/0/-1"}
                )
            )
    if "source_labels" in columns:  # gx_frame derives SOURCE_LABELS_UNJOINABLE from it
        exps.append(
            E.ExpectColumnValuesToBeInSet(
                column=SOURCE_LABELS_UNJOINABLE,
                value_set=[False],
                meta={
                    "check": "source labels joinable",
                    "rule": f"none empty, none holding {SOURCE_LABEL_SEP!r}",
                },
            )
        )
    exps.append(E.ExpectColumnValuesToBeUnique(column="image_key", meta={"check": "image_key unique"}))
    exps.append(
        E.ExpectColumnValuesToMatchRegex(
            column="image_key",
            regex=r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,89}$",
            meta={"check": "image_key dot-free"},
        )
    )
    exps.append(
        E.ExpectCompoundColumnsToBeUnique(
            column_list=["source", "study_id", "image_id"], meta={"check": "study+image unique"}
        )
    )
    exps.append(
        E.ExpectColumnValuesToBeBetween(
            column=_chars("findings_text"),
            min_value=cfg.findings_min_chars,
            max_value=cfg.findings_max_chars,
            meta={"check": "findings length"},
        )
    )
    for col in ("width", "height"):
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column=col, min_value=cfg.min_side, max_value=cfg.max_side, meta={"check": f"{col} bounds"}
            )
        )
    exps.append(
        E.ExpectColumnValuesToBeBetween(
            column="image_file_bytes", min_value=1, meta={"check": "image file non-empty"}
        )
    )
    for col in TEXT_COLUMNS:
        if col not in columns:
            continue
        for name in PHI_CHECKS:
            found_by = CONTROL_CHARACTERS if name == "control character" else "tasks/phi_engine.py"
            exps.append(
                E.ExpectColumnValuesToBeInSet(
                    column=_has(col, name),
                    value_set=[False],
                    meta={"check": f"no {name} in {col}", "found by": found_by},
                )
            )
    return exps


def _chars(col: str) -> str:
    return f"{col}__chars"


def _has(col: str, name: str) -> str:
    return f"{col}__has_{name.replace(' ', '_').replace('-', '_')}"


def gx_frame(samples: pl.DataFrame):
    """The rows as GX sees them: each text column replaced by its length and one flag per PHI category the
    engine still finds (and one for control characters)."""
    import pandas as pd

    texts = [c for c in TEXT_COLUMNS if c in samples.columns]
    # The texts never reach pandas whole: one column at a time becomes its derived columns and is let go
    # (the whole-frame conversion kept a pandas copy of every report text alive while GX ran).
    pdf = samples.drop(texts).to_pandas()
    derived = {}  # joined once: column-by-column inserts fragment the frame (pandas PerformanceWarning per column)
    if "source_labels" in samples.columns:
        derived[SOURCE_LABELS_UNJOINABLE] = (
            samples.select(
                pl.col("source_labels")
                .list.eval(pl.element().str.contains(SOURCE_LABEL_SEP, literal=True) | (pl.element() == ""))
                .list.any()
                .fill_null(False)
            )
            .to_series()
            .to_numpy()
        )
    for c in texts:
        text = samples.get_column(c).to_pandas()
        derived[_chars(c)] = text.str.len()
        text = text.fillna("").astype(str)
        # The engine's word lists are English: a report kept in its own language (PadChest's Spanish
        # report_text) is checked for the categories that do not depend on them (phi_engine.find_phi).
        english = [True] * len(text)
        if c == "report_text" and "report_language" in samples.columns:
            english = [lang in (None, "en") for lang in samples.get_column("report_language").to_list()]
        found = [flagged_categories(t, en) if t else frozenset() for t, en in zip(text, english, strict=True)]
        for name in PHI_FLAGGED:
            derived[_has(c, name)] = [name in f for f in found]
        derived[_has(c, "control character")] = text.str.contains(CONTROL_CHARACTERS, regex=True)
        del text, found
    return pd.concat([pdf, pd.DataFrame(derived, index=pdf.index)], axis=1)


def _run_suite(ctx, name: str, df, expectations: list, index_columns: list[str] | None):
    """Run one suite through a checkpoint (which stores the validation result for Data Docs)."""
    return _run_checkpoint(_checkpoint(ctx, name, expectations, index_columns), df)


def _run_checkpoint(cp, df):
    run = cp.run(batch_parameters={"dataframe": df})
    return next(iter(run.run_results.values()))


def _checkpoint(ctx, name: str, expectations: list, index_columns: list[str] | None):
    """The suite NAME (replaced) and a checkpoint that runs it on a dataframe given at run time."""
    import great_expectations as gx

    # Replace rather than add_or_update: the latter diffs expectations pairwise (quadratic, seconds here).
    try:
        ctx.suites.delete(name)
    except Exception:  # noqa: BLE001 - GX raises different errors for "no such suite" across 1.x releases
        pass
    suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    try:
        source = ctx.data_sources.get(name)
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas(name)
    try:
        asset = source.get_asset("rows")
    except LookupError:
        asset = source.add_dataframe_asset("rows")
    try:
        batch_def = asset.get_batch_definition("all")
    except (KeyError, LookupError):
        batch_def = asset.add_batch_definition_whole_dataframe("all")
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
    )
    result_format: dict = {"result_format": "COMPLETE"}
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    return ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[vd],
            actions=[],  # Data Docs are built once per run, after all suites (run_validation)
            result_format=result_format,
        )
    )


def _describe(suite: str, r, scope: str) -> dict:
    cfg = r.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
    if r.exception_info and r.exception_info.get("raised_exception"):
        raise RuntimeError(
            f"GX expectation {cfg.type}({column}) raised: {r.exception_info['exception_message']}"
        )
    return {
        "suite": suite,
        "expectation": cfg.type,
        "column": column or None,
        "check": (cfg.meta or {}).get("check"),
        "scope": scope,
        "success": bool(r.success),
        "unexpected_count": int(r.result.get("unexpected_count") or 0) if r.result else 0,
        "observed_value": _jsonable(r.result.get("observed_value")) if r.result else None,
    }


def _jsonable(v):
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    return str(v)


# ---------------------------------------------------------------- the row suite, in batches

UNIQUE_IMAGE_KEY = "expect_column_values_to_be_unique"
UNIQUE_COMPOUND = "expect_compound_columns_to_be_unique"


def _duplicate_rows(samples: pl.LazyFrame) -> dict[str, set[int]]:
    """The rows GX's two uniqueness expectations fail over the WHOLE archive, from a scan of the key columns
    alone: a batch sees only its own rows, so a duplicate split across two batches is found here. Same
    semantics as GX's pandas engine: nulls are skipped by a column's uniqueness, a compound key is skipped only
    when all its values are missing, and every occurrence of a duplicate fails (`duplicated(keep=False)`)."""
    keys = ["source", "study_id", "image_id"]
    all_missing = pl.all_horizontal(pl.col(k).is_null() for k in keys)
    flags = (
        samples.select(
            pl.col(ROW_INDEX),
            (pl.col("image_key").is_not_null() & pl.col("image_key").is_duplicated()).alias("key"),
            (pl.struct(keys).is_duplicated() & ~all_missing).alias("compound"),
        )
        .filter(pl.col("key") | pl.col("compound"))
        .collect()
    )
    return {
        UNIQUE_IMAGE_KEY: set(flags.filter(pl.col("key")).get_column(ROW_INDEX).to_list()),
        UNIQUE_COMPOUND: set(flags.filter(pl.col("compound")).get_column(ROW_INDEX).to_list()),
    }


def _row_suite(
    ctx, samples: pl.LazyFrame, total: int, cfg: ValidateConfig
) -> tuple[list[dict], dict[int, list[str]]]:
    """`cxrflow-samples` over BATCH_ROWS rows of SAMPLES (the spilled samples, TOTAL rows) at a time. Per
    expectation the batches' unexpected counts add up and it succeeds only if every batch did; the uniqueness
    expectations take their failing rows from `_duplicate_rows` (whole archive). Returns the records (one per
    expectation, as one whole-frame run gives) and each failing row's labels, in the suite's order."""
    columns = samples.collect_schema().names()
    cp = _checkpoint(ctx, "cxrflow-samples", _row_expectations(cfg, columns), [ROW_INDEX, "image_key"])
    duplicates = _duplicate_rows(samples)
    merged: dict[tuple, dict] = {}  # per expectation, in the suite's order (dicts keep insertion order)
    failing: dict[tuple, list[int]] = {}
    for start in range(0, total, BATCH_ROWS):
        pdf = gx_frame(samples.slice(start, BATCH_ROWS).collect())
        res = _run_checkpoint(cp, pdf)
        del pdf  # not held through the next batch, Data Docs and the writes
        for r in res.results:
            rec = _describe("cxrflow-samples", r, "row")
            key = (rec["expectation"], rec["column"], rec["check"])
            found = [] if r.success else (r.result.get("unexpected_index_list") or [])
            rows = [int(d[ROW_INDEX]) for d in found]
            dup = duplicates.get(rec["expectation"])
            if dup is not None and not set(rows) <= dup:  # the polars semantics must be GX's own
                raise RuntimeError(
                    f"{key}: GX flagged rows {sorted(set(rows) - dup)[:5]} the duplicate scan did not"
                )
            if key not in merged:
                merged[key], failing[key] = rec, rows
                continue
            m = merged[key]
            m["success"] = m["success"] and rec["success"]
            m["unexpected_count"] += rec["unexpected_count"]
            if m["observed_value"] != rec["observed_value"]:  # a batch's own observation is not the run's
                m["observed_value"] = None
            failing[key].extend(rows)
    bad: dict[int, list[str]] = {}
    for key, rec in merged.items():
        rows = failing[key]
        if rec["expectation"] in duplicates:
            rows = sorted(duplicates[rec["expectation"]])
            rec["unexpected_count"], rec["success"] = len(rows), not rows
        label = f"{rec['expectation']}({rec['column']})" + (f": {rec['check']}" if rec["check"] else "")
        for idx in rows:
            bad.setdefault(idx, []).append(label)
    return list(merged.values()), bad


def _spill_samples(data_dir: Path, cfg: ValidateConfig, spill: Path) -> tuple[pl.LazyFrame, int, list[dict]]:
    """Every manifest slice's samples, numbered (ROW_INDEX) and written to SPILL as one parquet file each:
    the row suite, the quarantine and accepted.parquet then read them back in batches (a lazy scan). Returns
    the scan, the number of samples and the filtered rows."""
    filtered: list[dict] = []
    paths, total = [], 0
    for i, part in enumerate(sample_batches(data_dir, cfg, filtered)):
        path = spill / f"{i:06d}.parquet"
        part.with_row_index(ROW_INDEX, offset=total).write_parquet(path)
        paths.append(path)
        total += part.height
    return pl.scan_parquet(paths), total, filtered


def _write_accepted(path: Path, spill: Path, samples: pl.LazyFrame, total: int, bad: dict[int, list[str]]) -> None:
    """accepted.parquet: each spilled slice minus its quarantined rows, appended as row groups of at most
    BATCH_ROWS rows by pyarrow's ParquetWriter, so one slice is held at a time. polars' streaming sink of the
    whole scan held more the more slices there were (41.5K samples: +130 MiB, 10K: +60; BENCHMARKS.md issue
    28). The rows, their order and the schema are the whole frame's. Zero samples keep their ROW_INDEX
    column, as the whole-frame write did."""
    schema = samples.collect_schema()
    with atomic_path(path) as tmp:
        if not total:
            samples.sink_parquet(tmp, compression="zstd", statistics=True)
            return
        kept = ~pl.col(ROW_INDEX).is_in(list(bad))  # built once, not per slice
        writer = None
        try:
            for part in sorted(spill.glob("*.parquet")):
                rows = pl.read_parquet(part).cast(dict(schema))
                table = rows.filter(kept).drop(ROW_INDEX).to_arrow()
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


# ---------------------------------------------------------------- the gate


VALIDATION_STEPS = (
    "assembling samples",
    "GX: patient-level splits",
    "GX: row count",
    "GX: sample expectations",
    "Data Docs",
)


def run_validation(
    data_dir: Path, out_dir: Path, artifacts_root: Path, cfg: ValidateConfig, progress=None
) -> ValidationResult:
    """Validate DATA; write OUT/validation/{accepted,quarantine,filtered}.parquet and expectations.json.
    `progress(done, total, step)` is called before each of VALIDATION_STEPS and once all are done (GX runs a
    suite in one call and reports nothing inside it, so the steps are the grain).

    Raises ValidationFailed for leakage or a row-count collapse (after Data Docs are built, so the failing
    expectation can be inspected)."""
    import great_expectations as gx
    import pandas as pd

    def step(i: int) -> None:
        if progress is not None:
            progress(i, len(VALIDATION_STEPS), VALIDATION_STEPS[i] if i < len(VALIDATION_STEPS) else "done")

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    vdir = out_dir / "validation"
    vdir.mkdir(parents=True, exist_ok=True)
    manifest_rows = pl.scan_parquet(data_dir / "manifest.parquet").select(pl.len()).collect().item()
    ingest = read_json(data_dir / "summary.json") if (data_dir / "summary.json").exists() else {}
    found = int(ingest.get("found", manifest_rows))

    clean_stale_temps(vdir)  # the sample spill of a killed run
    # the samples spill beside the outputs (same file system), named as cxrio's temporaries so a killed run's
    # is cleaned; removed when validation ends, failed or not
    with scratch_dir(vdir, "samples") as spill:
        step(0)
        samples, total, filtered = _spill_samples(data_dir, cfg, spill)
        ctx = gx_context(artifacts_root)
        E = gx.expectations
        records: list[dict] = []
        fatal: list[str] = []

        # Patient-level leakage, expressed as uniqueness of subject_id over the distinct (subject, split) pairs.
        # (a scan of the two key columns)
        pairs = (
            pl.scan_parquet(data_dir / "manifest.parquet")
            .select("subject_id", "split")
            .unique()
            .sort(["subject_id", "split"])
            .collect()
        )
        step(1)
        res = _run_suite(
            ctx,
            "cxrflow-patient-splits",
            pairs.to_pandas(),
            [E.ExpectColumnValuesToBeUnique(column="subject_id", meta={"check": "each patient in one split"})],
            ["subject_id"],
        )
        for r in res.results:
            records.append(_describe("cxrflow-patient-splits", r, "run"))
            if not r.success:
                leaked = sorted({d["subject_id"] for d in r.result.get("unexpected_index_list") or []})
                fatal.append(
                    f"patient-level split leakage: {len(leaked)} patient(s) appear in more than one split "
                    f"(e.g. {leaked[:5]}); fix the split assignment before sharding"
                )

        floor = math.ceil(cfg.min_rows_fraction_of_found * found)
        step(2)
        res = _run_suite(
            ctx,
            "cxrflow-manifest-table",
            pd.DataFrame(index=pd.RangeIndex(manifest_rows)),  # the rows' count is all the suite reads
            [
                E.ExpectTableRowCountToBeBetween(
                    min_value=floor, meta={"check": "row-count floor vs ingest found"}
                )
            ],
            None,
        )
        for r in res.results:
            records.append(_describe("cxrflow-manifest-table", r, "run"))
            if not r.success:
                fatal.append(
                    f"row-count collapse: manifest has {manifest_rows} rows, below the floor {floor} "
                    f"({cfg.min_rows_fraction_of_found:.0%} of {found} found at ingest)"
                    + "".join(f"; ingest: {h}" for h in _ingest_hints(ingest))
                )

        quarantined: list[dict] = []
        step(3)
        row_records, bad = _row_suite(ctx, samples, total, cfg) if total else ([], {})
        records.extend(row_records)
        if bad:
            who = (
                samples.filter(pl.col(ROW_INDEX).is_in(list(bad)))
                .select([ROW_INDEX, "source", "source_path", "image_key"])
                .collect()
            )
            by_row = {row[ROW_INDEX]: row for row in who.iter_rows(named=True)}
            quarantined = [_drop(by_row[idx], "; ".join(bad[idx])) for idx in sorted(bad)]
        if total and manifest_rows and len(quarantined) > cfg.max_quarantine_fraction * manifest_rows:
            fatal.append(
                f"row-count collapse: {len(quarantined)} of {manifest_rows} rows failed row expectations "
                f"(limit {cfg.max_quarantine_fraction:.0%}); see {vdir / 'quarantine.parquet'}"
            )

        step(4)
        ctx.build_data_docs()
        docs = ctx.get_docs_sites_urls()
        docs_url = docs[0]["site_url"] if docs else None
        counts = {
            "manifest_rows": manifest_rows,
            "ingest_found": found,
            "ingest_filtered": int(ingest.get("filtered", 0)),
            "ingest_quarantined": int(ingest.get("quarantined", 0)),
            "filtered": len(filtered),
            "quarantined": len(quarantined),
            "accepted": total - len(bad),
        }
        atomic_write_parquet(vdir / "quarantine.parquet", pa.Table.from_pylist(quarantined, schema=DROP_SCHEMA))
        atomic_write_parquet(vdir / "filtered.parquet", pa.Table.from_pylist(filtered, schema=DROP_SCHEMA))
        atomic_write_json(
            vdir / "expectations.json", {"expectations": records, "counts": counts, "data_docs": docs_url}
        )
        step(len(VALIDATION_STEPS))
        if fatal:
            (vdir / "accepted.parquet").unlink(missing_ok=True)
            raise ValidationFailed(
                "validation failed: " + " | ".join(fatal),
                f"every expectation's result is in {vdir / 'expectations.json'} and the Data Docs",
            )
        _write_accepted(vdir / "accepted.parquet", spill, samples, total, bad)
        return ValidationResult(vdir / "accepted.parquet", filtered, quarantined, records, docs_url, counts)
