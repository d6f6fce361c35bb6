"""The encoder stage's evaluation and its summaries as plain functions (the `encoder` flow wraps and publishes
them): retrieval/zero-shot metrics of a model dir, the trained-vs-start table, the run description."""

from __future__ import annotations

from pathlib import Path

from schemas.encoder import EncoderConfig
from schemas.evaluation import MetricResult


def retrieval(cfg: EncoderConfig, model_dir: Path, out: Path, experiment: str) -> dict:
    """Retrieval Recall@K and zero-shot AUROC of `model_dir` on cfg.eval_split, written under `out`."""
    from tasks.evaluate.retrieval import evaluate_encoder

    metrics, notes = evaluate_encoder(
        model_dir,
        cfg.shards,
        cfg.eval_split,
        out,
        experiment,
        n_bootstrap=cfg.n_bootstrap,
        zero_shot=cfg.zero_shot,
        init_seed=cfg.seed,
    )
    return {"metrics": metrics.model_dump(mode="json"), "notes": notes}


def record_retrieval(cfg: EncoderConfig, record: dict, trained: dict) -> dict:
    """The run record (ENC/encoder-run.json) with where the trained model's retrieval metrics are."""
    from cxrio import atomic_write_json
    from tasks.encoder.train import RUN_RECORD

    record = {
        **record,
        "retrieval": {"dir": str(cfg.out / "retrieval"), "samples": trained["notes"].get("samples")},
    }
    atomic_write_json(cfg.out / RUN_RECORD, record)
    return record


def retrieval_rows(trained: dict, start: dict | None) -> list[dict]:
    """One row per metric: the trained model's value with its CI, chance, ratio to chance, the start's value."""
    rows = []
    for name, raw in trained["metrics"]["metrics"].items():
        r = MetricResult.model_validate(raw)
        note = trained["notes"].get("retrieval", {}).get(name, {})
        row = {
            "metric": name,
            "value": r.display(),
            "chance": round(note["chance"], 2) if note else None,
            "ratio_to_chance": round(note["ratio_to_chance"], 2) if note else None,
        }
        if start is not None and name in start["metrics"]["metrics"]:
            row["start"] = MetricResult.model_validate(start["metrics"]["metrics"][name]).display()
        rows.append(row)
    return rows


def run_markdown(cfg: EncoderConfig, record: dict) -> str:
    """The run record as markdown: start model and recipe, data by source, engine, output, lineage."""
    data = record["data"]
    lines = [
        f"# Encoder `{cfg.out}`",
        "",
        f"- start: `{cfg.init}`, epochs {cfg.epochs}, batch {cfg.batch_size} "
        f"x {cfg.nproc} process(es), lr {cfg.lr}",
        f"- data: {data['samples']} samples in {data['shards']} shards; by source {data['samples_by_source']};"
        f" excluded {data['excluded_by_source']}",
        f"- engine: {record['engine']}",
        f"- output: `{record['open_clip_dir']}`",
        "",
        "Shard index hashes:",
    ]
    lines += [f"- `{k}` {v}" for k, v in record["index_sha256"].items()]
    return "\n".join(lines)
