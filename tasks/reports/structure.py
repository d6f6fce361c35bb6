"""The report-structuring stage: manifest in, DIR/reports.parquet + DIR/structure-summary.json out.

Every manifest row comes out as one reports row (ok or quarantined with a reason): reports = ok +
quarantined. Which operation a row gets is explicit (config) or per row (`default_operation`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cxrio import atomic_path, atomic_write_json
from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.llm import REPORTS_SCHEMA, LLMConfig, StructureConfig
from tasks.llm.ledger import Ledger
from tasks.llm.operation import WorkItem
from tasks.llm.runner import ItemResult, RunResult, run_operation
from tasks.lock import holds_output_lock
from tasks.reports.operations import STRUCTURE, get_operation
from tasks.sources.base import reason_category

log = logging.getLogger("cxrflow.structure")
_OUTPUT_FIELDS = ("examination", "indication", "findings", "impression", "translation", "comparison_sentences_removed")


def default_operation(row: dict[str, Any], backend: str = "rules") -> str:
    """Non-English text is translated when an LLM backend is configured; offline (rules) a report is
    synthesized from the labels instead, and recorded as such. Label-only rows get a report written; the
    rest are structured."""
    foreign = (row.get("report_language") or "en").lower()[:2] != "en" and bool(row.get("report_text"))
    if foreign and backend != "rules":
        return "translate"
    if row.get("report_origin") == "labels" or foreign:
        return "synthesize"
    return "structure"


def payload_for(operation: str, row: dict[str, Any]) -> dict[str, Any]:
    if operation == "synthesize":
        labels = {name: row.get(label_column(name)) for name in CHEXPERT_LABELS}
        payload = {"labels": {k: int(v) for k, v in labels.items() if v is not None}, "view": row.get("view")}
        if row.get("source_labels"):
            payload["source_labels"] = list(row["source_labels"])
        return payload
    return {"report_text": row.get("report_text") or ""}


def method_name(operation: str, cfg: LLMConfig) -> str:
    if cfg.backend == "rules":
        return {"structure": "rule-based", "synthesize": "synthesized-rules"}.get(operation, f"rules-{operation}")
    return f"{cfg.backend}:{cfg.model}"


def compare_findings(pairs: list[tuple[str, str]], removed: int) -> dict[str, Any]:
    """BLEU-4 (sacrebleu, corpus) and ROUGE-L F1 (rouge-score, no stemming, mean) of LLM vs rule-based."""
    comparison = Comparison()
    comparison.add(pairs)
    return comparison.result(removed)


@dataclass
class Comparison:
    """`compare_findings` over pairs given a batch at a time, holding sums rather than the pairs (issue 28: at
    700K images the texts of every pair were the structure stage's growth): corpus BLEU is computed from the
    sum of its sentence statistics, as sacrebleu's corpus_score does, the ROUGE-L mean from a running sum."""

    pairs: int = 0
    bleu_stats: list[int] | None = None
    rouge_sum: float = 0.0
    differing: int = 0

    def add(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        from rouge_score import rouge_scorer
        from sacrebleu.metrics import BLEU

        hyps = [llm for _, llm in pairs]
        refs = [rule for rule, _ in pairs]
        stats = BLEU()._extract_corpus_statistics(hyps, [refs])  # corpus_score's own first step
        batch = [sum(col) for col in zip(*stats, strict=True)]
        self.bleu_stats = batch if self.bleu_stats is None else [a + b for a, b in zip(self.bleu_stats, batch,
                                                                                          strict=True)]
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        for r, h in zip(refs, hyps, strict=True):
            self.rouge_sum += scorer.score(r, h)["rougeL"].fmeasure
        self.differing += sum(r.strip() != h.strip() for r, h in pairs)
        self.pairs += len(pairs)

    def result(self, removed: int) -> dict[str, Any]:
        if not self.pairs:
            return {"status": "not computed: no report has findings from both rules and the LLM",
                    "comparison_sentences_removed": removed}
        from sacrebleu.metrics import BLEU

        return {
            "status": "computed",
            "pairs": self.pairs,
            "bleu4": round(BLEU()._compute_score_from_stats(self.bleu_stats).score, 4),
            "rougeL": round(100 * self.rouge_sum / self.pairs, 4),
            "share_differing": round(self.differing / self.pairs, 6),
            "comparison_sentences_removed": removed,
        }


STREAM_ROWS = 2048  # manifest rows structured at a time (issue 28); also the reports file's row-group size


def _manifest_batches(path: Path, rows: int) -> Iterator[list[dict[str, Any]]]:
    """The manifest `rows` rows at a time (pyarrow record batches), so the stage never holds the whole
    archive as Python rows."""
    f = pq.ParquetFile(path)  # the reader holds one row group decoded (ingest writes 16,384 rows a group)
    yield from (batch.to_pylist() for batch in f.iter_batches(batch_size=max(1, rows)))


def load_released(manifest: Path, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Released LLaVA-Rad texts written by ingest beside the manifest, by image_key, for `keys` only (one
    batch's images: the file is filtered as it is read); empty when there are none."""
    from tasks.reports.annotations import FILE_NAME

    path = Path(manifest).parent / FILE_NAME
    if not path.exists() or not keys:
        return {}
    import polars as pl

    # A polars scan decodes the key column, then only the matching rows' texts; pyarrow's filtered read
    # decoded every text of the file per batch (ingest writes it unsorted, one row group): O(batches x
    # file): 80K images (2 records each, 2,048-row batches) 4.9 s, now 0.7 s (a shared machine).
    scan = pl.scan_parquet(path).filter(pl.col("image_key").is_in(pl.Series(keys, dtype=pl.String).implode()))
    records = scan.collect().to_dicts()
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        out.setdefault(rec["image_key"], []).append(rec)
    return out


@holds_output_lock("structure")
def run_structure(cfg: StructureConfig, progress: Any = None, batch_rows: int | None = None) -> dict[str, Any]:
    """`progress(done, total, cost_usd_so_far)` per operation as answers arrive. The manifest is structured
    `batch_rows` rows at a time (STREAM_ROWS), each batch's reports appended to reports.parquet as one row
    group; an LLM backend in batch mode takes the whole manifest at once (one provider batch, not one per
    slice, each of which could wait hours)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / "ledger.jsonl")
    total = pq.ParquetFile(cfg.manifest).metadata.num_rows
    rows = total if cfg.llm.batch and cfg.llm.backend != "rules" else (batch_rows or STREAM_ROWS)
    try:
        return _run(cfg, ledger, out, total, rows, progress)
    finally:
        ledger.close()


def _released_records(row: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One reports row per released record; a record without findings is quarantined with that reason."""
    from tasks.reports.annotations import BACKEND, MODEL, OPERATION

    out = []
    for rec in records:
        ok = rec["findings"] is not None and bool(rec["findings"].strip())
        out.append({
            "image_key": row["image_key"], "source": row["source"], "subject_id": row.get("subject_id"),
            "study_id": row.get("study_id"), "split": row.get("split"), "view": row.get("view"),
            "report_origin": row.get("report_origin"), "report_text": row.get("report_text"),
            "operation": OPERATION, "backend": BACKEND, "model": MODEL, "prompt_version": rec["annotation_file"],
            "parameters": json.dumps({"record_id": rec["record_id"]}), "method": rec["generate_method"],
            "status": "ok" if ok else "quarantined",
            "reason": None if ok else f"released {rec['generate_method']} record has no findings",
            "raw_answer": None, "cache_hit": False, "examination": None,
            # LLaVA-Rad's prompt takes the record's `reason` as the indication
            "indication": rec["reason"], "findings": rec["findings"] if ok else None,
            "impression": rec["impression"], "translation": None, "comparison_sentences_removed": None,
            "rule_findings": None, "rule_impression": None,
        })
    return out


@dataclass
class _Totals:
    """What the summary needs of every batch, kept as counts and the comparisons' running sums: never the
    reports, nor the text pairs compared."""

    rows: int = 0  # manifest rows done (the progress bar's count)
    reports: int = 0
    quarantined: Counter = field(default_factory=Counter)  # by reason category, in first-seen order
    cache_hits: int = 0
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: Comparison = field(default_factory=Comparison)  # LLM vs rules findings (LLM backends only)
    removed: int = 0
    structured: bool = False  # any row took the structure operation
    released_images: int = 0
    released_records: int = 0
    released_ok: Counter = field(default_factory=Counter)
    released_methods: set[str] = field(default_factory=set)
    released_pairs: Comparison = field(default_factory=Comparison)  # released rule-based vs GPT-4

    def add_run(self, name: str, run: RunResult) -> None:
        s = run.summary()
        op = self.operations.setdefault(name, {"prompt_version": s["prompt_version"], "parameters": s["parameters"],
                                               "reports": 0, "ok": 0, "quarantined": 0, "cache_hits": 0})
        for k in ("reports", "ok", "quarantined", "cache_hits"):
            op[k] += s[k]
        self.cache_hits += run.cache_hits


def _run(cfg: StructureConfig, ledger: Ledger, out: Path, total: int, batch_rows: int,
         progress: Any = None) -> dict[str, Any]:
    llm = cfg.llm
    tot = _Totals()
    # Appended batch by batch (one row group each), renamed into place when complete.
    with atomic_path(out / "reports.parquet") as tmp, pq.ParquetWriter(tmp, REPORTS_SCHEMA) as writer:
        for rows in _manifest_batches(cfg.manifest, batch_rows):
            records = _structure_batch(cfg, rows, ledger, tot, total, progress)
            writer.write_table(pa.Table.from_pylist(records, schema=REPORTS_SCHEMA), row_group_size=len(records) or 1)
        if not tot.reports:
            writer.write_table(REPORTS_SCHEMA.empty_table())

    quarantined = sum(tot.quarantined.values())
    summary: dict[str, Any] = {
        "manifest": str(cfg.manifest),
        "backend": llm.backend,
        "model": "rules" if llm.backend == "rules" else llm.model,
        "mode": "batch" if llm.batch else "sync",
        "reports": tot.reports,
        "ok": tot.reports - quarantined,
        "quarantined": quarantined,
        "quarantined_by_reason": dict(tot.quarantined),
        "cache_hits": tot.cache_hits,
        **ledger.totals(),
        "operations": dict(sorted(tot.operations.items())),
        "released": _released_summary(tot),
        "comparison": tot.pairs.result(tot.removed) if (llm.backend != "rules" and tot.structured) else
        {"status": "not computed: needs an LLM backend beside the rules baseline",
         "comparison_sentences_removed": tot.removed},
    }
    atomic_write_json(out / "structure-summary.json", summary)
    log.info("structure: %d reports, %d quarantined, %d requests, %d cache hits", summary["reports"],
             summary["quarantined"], summary["requests"], summary["cache_hits"])
    return summary


def _structure_batch(cfg: StructureConfig, rows: list[dict[str, Any]], ledger: Ledger, tot: _Totals, total: int,
                     progress: Any = None) -> list[dict[str, Any]]:
    """One manifest batch's reports rows (in manifest order), its counts added to `tot`."""
    llm = cfg.llm
    done = tot.rows
    released = load_released(cfg.manifest, [r["image_key"] for r in rows])
    # Rows with released texts are never sent to a model: those texts are the report processing.
    ops = {r["image_key"]: "annotations" if r["image_key"] in released else
           cfg.operation or default_operation(r, llm.backend) for r in rows}
    results: dict[str, ItemResult] = {}
    runs: dict[str, RunResult] = {}
    for op_name in sorted(set(ops.values()) - {"annotations"}):
        op = get_operation(op_name)
        items = []
        for r in rows:
            if ops[r["image_key"]] != op_name:
                continue
            payload = payload_for(op_name, r)
            empty = _empty_input(op_name, payload)
            if empty:  # never sent, never cached: nothing to ask about
                results[r["image_key"]] = ItemResult(r["image_key"], "quarantined", None, reason=empty)
            else:
                items.append(WorkItem(r["image_key"], r["source"], payload))
        base = done + len(results)  # one bar over all operations: reports done of all rows
        tick = (lambda d, _t, cost, base=base: progress(base + d, total, cost)) if progress else None
        run = run_operation(op, items, llm, ledger=ledger, progress=tick)
        runs[op_name] = run
        results.update(run.results)
        tot.add_run(op_name, run)
    tot.rows = done + len(rows)

    # The rule-based version beside an LLM's, for the comparison artifact (and as a second training target).
    rule_out: dict[str, dict[str, Any]] = {}
    structured = [r for r in rows if ops[r["image_key"]] == "structure"]
    tot.structured = tot.structured or bool(structured)
    if cfg.compare_rules and llm.backend != "rules" and structured:
        items = [WorkItem(r["image_key"], r["source"], payload_for("structure", r)) for r in structured
                 if r.get("report_text")]
        rule_run = run_operation(STRUCTURE, items, LLMConfig(backend="rules"))
        rule_out = {k: v.output for k, v in rule_run.results.items() if v.status == "ok"}

    records = []
    for r in rows:
        key = r["image_key"]
        op_name = ops[key]
        if op_name == "annotations":
            records += _released_records(r, released[key])
            continue
        run = runs[op_name]
        res = results[key]
        output = res.output or {}
        rule = rule_out.get(key) or {}
        records.append({
            "image_key": key, "source": r["source"], "subject_id": r.get("subject_id"), "study_id": r.get("study_id"),
            "split": r.get("split"), "view": r.get("view"), "report_origin": r.get("report_origin"),
            "report_text": r.get("report_text"), "operation": op_name, "backend": run.backend, "model": run.model,
            "prompt_version": run.version, "parameters": json.dumps(run.params, sort_keys=True),
            "method": method_name(op_name, llm), "status": res.status, "reason": res.reason,
            "raw_answer": res.raw, "cache_hit": res.cache_hit,
            **{f: output.get(f) for f in _OUTPUT_FIELDS},
            "rule_findings": rule.get("findings"), "rule_impression": rule.get("impression"),
        })

    tot.reports += len(records)
    tot.quarantined.update(reason_category(rec["reason"]) for rec in records if rec["status"] != "ok")
    if llm.backend == "rules":
        tot.removed += sum(int(rec["comparison_sentences_removed"] or 0) for rec in records)
    else:
        tot.removed += sum(int(v.get("comparison_sentences_removed") or 0) for v in rule_out.values())
        tot.pairs.add([(rec["rule_findings"], rec["findings"]) for rec in records
                       if rec["status"] == "ok" and rec["rule_findings"] and rec["findings"]])
    _add_released(tot, records)
    return records


def _add_released(tot: _Totals, records: list[dict[str, Any]]) -> None:
    """A batch's released rows into the totals (an image's records are all in its manifest row's batch)."""
    rel = [rec for rec in records if rec["operation"] == "annotations"]
    texts: dict[str, dict[str, str]] = {}
    for rec in rel:
        tot.released_methods.add(rec["method"])
        if rec["status"] == "ok":
            tot.released_ok[rec["method"]] += 1
            texts.setdefault(rec["image_key"], {})[rec["method"]] = rec["findings"]
    tot.released_images += len({rec["image_key"] for rec in rel})
    tot.released_records += len(rel)
    tot.released_pairs.add([(t["rule-based"], t["gpt4"]) for t in texts.values() if "rule-based" in t and "gpt4" in t])


def _released_summary(tot: _Totals) -> dict[str, Any]:
    """Rows answered from the released LLaVA-Rad annotations (no request sent), and how the released GPT-4
    findings compare with the released rule-based ones of the same image (the paper reports this on test)."""
    comparison = (tot.released_pairs.result(0) if tot.released_records else
                  {"status": "not computed: no released annotations"})
    comparison.pop("comparison_sentences_removed", None)
    return {"images": tot.released_images, "records": tot.released_records,
            "ok": {m: tot.released_ok[m] for m in sorted(tot.released_methods)},
            "gpt4_vs_rule_based": comparison}


def _empty_input(operation: str, payload: dict[str, Any]) -> str | None:
    if operation == "synthesize":
        return None if payload["labels"] else "no labels to write a report from (all blank)"
    return None if payload["report_text"].strip() else "no report text"


