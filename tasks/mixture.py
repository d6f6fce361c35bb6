"""Several sources into one manifest: every layout is checked before any work, each source is ingested
into OUT/sources/<name>/, then the parts are merged into OUT/manifest.parquet (image paths rebased onto OUT)
with a per-source and total reconciliation in OUT/summary.json."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import polars as pl

from cxrio import atomic_write_json, atomic_write_parquet, read_json
from schemas.config import IngestConfig, MixtureConfig, SourceSpec
from schemas.manifest import DROP_SCHEMA, MANIFEST_SCHEMA
from tasks.lock import holds_output_lock
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError

# The fields of an ingest summary a user reads first: the accounting (found = kept + filtered + quarantined),
# by reason, and the work done. The CLI prints these; a mixture's per-source summaries keep them.
SUMMARY_FIELDS = (
    "found", "kept", "filtered", "quarantined", "filtered_by_reason", "quarantined_by_reason", "decoded", "reused",
)
COUNT_FIELDS = tuple(k for k in SUMMARY_FIELDS if not k.endswith("_by_reason"))  # the counts (summed over sources)


def check_sources(cfg: MixtureConfig) -> None:
    """Fail before any work when a source is unknown, repeated, missing or malformed, naming what is wrong."""
    seen = Counter(spec.name for spec in cfg.sources)
    repeated = [name for name, n in seen.items() if n > 1]
    if repeated:
        raise SourceLayoutError(f"source listed more than once in the mixture: {', '.join(repeated)}")
    for spec in cfg.sources:
        try:
            get_adapter(spec.name).check(Path(spec.root), spec.options or None)
        except SourceLayoutError as exc:
            raise SourceLayoutError(f"{spec.name}: {exc.message}", exc.hint) from exc


def _apply_policy(df: pl.DataFrame, policy: str) -> pl.DataFrame:
    if policy == "synthesize":
        # Reports are written from labels; the source text stays in report_text for audit.
        return df.with_columns(pl.lit("labels").alias("report_origin"))
    return df


def merge(cfg: MixtureConfig) -> dict:
    out = Path(cfg.out)
    manifests, quarantines, filtered, per_source = [], [], [], {}
    for spec in cfg.sources:
        part = cfg.source_out(spec)
        rel = part.relative_to(out).as_posix()
        m = pl.read_parquet(part / "manifest.parquet")
        m = m.with_columns((pl.lit(rel + "/") + pl.col("image_path")).alias("image_path"))
        manifests.append(_apply_policy(m, spec.report_policy))
        quarantines.append(pl.read_parquet(part / "quarantine.parquet"))
        filtered.append(pl.read_parquet(part / "filtered.parquet"))
        per_source[spec.name] = read_json(part / "summary.json")
    manifest = pl.concat(manifests, how="vertical").sort("image_key")
    if manifest["image_key"].n_unique() != manifest.height:
        raise ValueError("image keys collide across sources")  # keys carry the source name: a bug if hit
    _write(out / "manifest.parquet", manifest, MANIFEST_SCHEMA)
    _write(out / "quarantine.parquet", pl.concat(quarantines), DROP_SCHEMA)
    _write(out / "filtered.parquet", pl.concat(filtered), DROP_SCHEMA)
    totals = {k: sum(s[k] for s in per_source.values()) for k in COUNT_FIELDS}
    summary = {
        "sources": [spec.name for spec in cfg.sources],
        **totals,
        "filtered_by_reason": _sum_reasons(per_source, "filtered_by_reason"),
        "quarantined_by_reason": _sum_reasons(per_source, "quarantined_by_reason"),
        "splits": dict(sorted(Counter(manifest["split"].to_list()).items())),
        "per_source": {
            name: {
                k: s[k]
                for k in SUMMARY_FIELDS
            }
            | ({"hint": s["notes"]["hint"]} if s.get("notes", {}).get("hint") else {})
            for name, s in per_source.items()
        },
        "report_policy": {spec.name: spec.report_policy for spec in cfg.sources},
    }
    for name, s in summary["per_source"].items():
        if s["found"] != s["kept"] + s["filtered"] + s["quarantined"]:
            raise AssertionError(f"reconciliation failed for {name}: {s}")
    atomic_write_json(out / "summary.json", summary)
    return summary


def _sum_reasons(per_source: dict, field: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for s in per_source.values():
        total.update(s[field])
    return dict(sorted(total.items()))


def _write(path: Path, df: pl.DataFrame, schema) -> None:
    atomic_write_parquet(path, df.to_arrow().cast(schema))


def ingest_mixture(
    cfg: MixtureConfig,
    ingest_source: Callable[[SourceSpec, IngestConfig], dict],
    step: Callable | None = None,
) -> dict:
    """The mixture plan, written once: check every source, ingest each into its own folder, merge.
    `ingest_source` and `step(name, fn, *args)` say where the work runs (run_mixture below: here, with the
    local pool; flows/ingest.py: an ingest subflow per source and a merge task run)."""
    check_sources(cfg)
    for spec in cfg.sources:
        ingest_source(spec, cfg.ingest_config(spec))
    return step("merge", merge, cfg) if step else merge(cfg)


@holds_output_lock("ingest mixture")
def run_mixture(cfg: MixtureConfig, dask_address: str | None = None) -> dict:
    """Ingest every source without Prefect, on the local process pool or on the Dask cluster at
    `dask_address` (tasks/dask_runner.py), then merge."""
    from tasks.ingest import run_ingest

    if dask_address is None:
        return ingest_mixture(cfg, lambda spec, source_cfg: run_ingest(source_cfg))
    from tasks.dask_runner import DaskRunner, connect

    with connect(dask_address) as client:
        runner = DaskRunner(client)
        return ingest_mixture(cfg, lambda spec, source_cfg: run_ingest(source_cfg, runner=runner))
