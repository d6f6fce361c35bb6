"""What the stage flows publish and write, as plain functions (issue 24: flows only wire): the rows and
markdown of their Prefect artifacts, their one-line console reports, the shard stage's final summary.json
with its reconciliation check, and the pipeline's result file. Inputs are the stages' typed summaries
(schemas/stages.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cxrio import atomic_write_json
from schemas.stages import (
    IngestSummary,
    MixtureSummary,
    PipelineResult,
    ShardSummary,
    StageRecord,
    StructureSummary,
    Work,
)

# ------------------------------------------------------------------------------------------ ingest

COUNTS = ("found", "kept", "filtered", "quarantined", "decoded", "reused")


def ingest_rows(s: IngestSummary) -> list[dict]:
    return ([{"measure": k, "value": getattr(s, k)} for k in COUNTS]
            + [{"measure": f"filtered: {k}", "value": v} for k, v in s.filtered_by_reason.items()]
            + [{"measure": f"quarantined: {k}", "value": v} for k, v in s.quarantined_by_reason.items()])


def ingest_lines(s: IngestSummary) -> list[str]:
    lines = [f"ingest {s.source}: found {s.found} = kept {s.kept} + filtered {s.filtered} + quarantined "
             f"{s.quarantined} (decoded {s.decoded}, reused {s.reused})"]
    return lines + ([f"note: {s.source}: {s.hint}"] if s.hint else [])


def mixture_rows(s: MixtureSummary) -> list[dict]:
    return [{"source": name, **{k: v[k] for k in ("found", "kept", "filtered", "quarantined")}}
            for name, v in s.per_source.items()]


def mixture_line(s: MixtureSummary) -> str:
    return (f"mixture {', '.join(s.sources)}: found {s.found} = kept {s.kept} + filtered {s.filtered} + "
            f"quarantined {s.quarantined}")


# ------------------------------------------------------------------------------------------ structure

_TOTALS = ("reports", "ok", "quarantined", "requests", "http_attempts", "cache_hits", "prompt_tokens",
           "completion_tokens", "estimated_cost_usd")


def structure_totals(s: StructureSummary) -> list[dict]:
    d = s.model_dump()
    rows = [{"measure": k, "value": d.get(k)} for k in _TOTALS]
    if s.estimated_cost_note:
        rows.append({"measure": "estimated_cost_usd note", "value": s.estimated_cost_note})
    return rows + [{"measure": f"quarantined: {k}", "value": v} for k, v in s.quarantined_by_reason.items()]


def structure_comparison(s: StructureSummary) -> list[dict]:
    return [{"measure": k, "value": v} for k, v in s.comparison.items()]


def structure_backend(s: StructureSummary) -> str:
    return s.backend if s.backend == "rules" else f"{s.backend}:{s.model}"


def structure_line(s: StructureSummary) -> str:
    return (f"structure: {s.reports} reports, {s.quarantined} quarantined, {s.requests} requests, "
            f"{s.cache_hits} cache hits")


# ------------------------------------------------------------------------------------------ validate + shard


def read_validation(out: Path) -> dict | None:
    """OUT/validation/expectations.json (written by tasks/validate.py, also when validation fails)."""
    path = Path(out) / "validation" / "expectations.json"
    return json.loads(path.read_text()) if path.exists() else None


def expectation_rows(report: dict) -> list[dict]:
    return [
        {
            "suite": r["suite"],
            "expectation": r["expectation"],
            "column": r["column"] or "",
            "check": r["check"] or "",
            "scope": r["scope"],
            "result": "pass" if r["success"] else "FAIL",
            "unexpected": r["unexpected_count"],
        }
        for r in report["expectations"]
    ]


def validation_markdown(report: dict) -> str:
    """The validation results as Data Docs show them, rendered into the UI (a file:// link to the HTML site
    does not open from a browser tab served over http)."""
    counts = report.get("counts", {})
    failed = sum(not r["success"] for r in report["expectations"])
    lines = [
        "# Great Expectations validation",
        "",
        f"{len(report['expectations'])} expectations, {failed} failed. "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
    ]
    suites: dict[str, list[dict]] = {}
    for r in report["expectations"]:
        suites.setdefault(r["suite"], []).append(r)
    for suite, rows in suites.items():
        lines += [
            f"## `{suite}`",
            "",
            "| status | expectation | column | check | unexpected | observed |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            status = "✅ pass" if r["success"] else "❌ FAIL"
            observed = "" if r.get("observed_value") is None else str(r["observed_value"])
            lines.append(
                f"| {status} | `{r['expectation']}` | {r['column'] or ''} | {r['check'] or ''} | "
                f"{r['unexpected_count']} | {observed} |"
            )
        lines.append("")
    if report.get("data_docs"):
        lines.append(f"HTML Data Docs on the machine that ran the validation: `{report['data_docs']}`")
    return "\n".join(lines)


def finish_shards(out: Path, summary: dict, llava_records, read_back: dict) -> ShardSummary:
    """The shard stage's summary.json with the LLaVA export and read-back results; raises when the counts do
    not reconcile (found = sharded + filtered + quarantined)."""
    if llava_records is not None:
        summary["llava_records"] = llava_records
    summary["read_back"] = read_back
    atomic_write_json(Path(out) / "summary.json", summary)
    s = ShardSummary.model_validate(summary)
    if not s.reconciliation.balanced:
        raise RuntimeError(f"counts do not reconcile: {s.reconciliation.model_dump()}")
    return s


def shard_markdown(s: ShardSummary) -> str:
    rec = s.reconciliation
    return "\n".join([
        "| split | samples | shards | bytes |",
        "|---|---|---|---|",
        *[f"| {name} | {v.samples} | {v.shards} | {v.bytes} |" for name, v in s.splits.items()],
        "",
        f"found {rec.found} = sharded {rec.sharded} + filtered {rec.filtered} + quarantined {rec.quarantined}",
    ])


# ------------------------------------------------------------------------------------------ pipeline


def stages_markdown(name: str, stages: dict[str, StageRecord], work: Work,
                    link: Callable[[str | None, str | None], str]) -> str:
    """Each stage: ran here or reused, with a link (`link(flow_run_id, name)`) to the run that produced it."""
    lines = [
        f"# Pipeline `{name}`",
        "",
        "| stage | status | produced by | seconds | dir |",
        "|---|---|---|---|---|",
    ]
    for s, v in stages.items():
        by = link(v.flow_run_id, v.flow_run_name)
        if v.status == "reused" and not v.flow_run_id:
            by = "a run that recorded no flow run id"
        lines.append(f"| {s} | {v.status} | {by} | {v.seconds} | `{v.dir}` |")
    lines += [
        "",
        f"Work this run: {work.decoded} images decoded, {work.llm_requests} LLM requests, "
        f"{work.train_steps} training steps.",
    ]
    return "\n".join(lines)


def write_result(out: Path, slug_name: str, result: PipelineResult) -> dict:
    """OUT/runs/<name>.json: the run's result (what `cxrflow pipeline` prints), returned as the flow's dict."""
    data = result.model_dump(mode="json")
    atomic_write_json(Path(out) / "runs" / f"{slug_name}.json", data)
    return data


def write_comparison(out_dir: Path, png: bytes, rows: list[dict], significance: dict) -> Path:
    """An ablation's comparison files: chart.png, leaderboard.json, significance.json."""
    from cxrio import atomic_write_bytes

    atomic_write_bytes(out_dir / "chart.png", png)
    atomic_write_json(out_dir / "leaderboard.json", rows)
    atomic_write_json(out_dir / "significance.json", significance)
    return out_dir
