"""A training run: config + data lineage + the requested stages + loss curve, all under cfg.out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cxrio import atomic_write_json, sha256_file
from schemas.shards import index_name
from schemas.train import TrainConfig
from training.checkpoint import clean_stale_temps
from training.data import Example, build_examples, open_shards, read_index
from training.loop import train_stage
from training.plots import write_loss_curve
from training.stage import build_stage, final_dir

log = logging.getLogger("cxrflow.training")


def lineage(cfg: TrainConfig) -> dict:
    """What data this run saw: hashes of the shard index files (and the shard list of the split)."""
    files = sorted(p for p in cfg.shards.glob("*.index.json")) + [
        p for p in (cfg.shards / "shards.parquet", cfg.shards / "summary.json") if p.exists()
    ]
    return {"shards_dir": str(cfg.shards.resolve()), "split": cfg.split,
            "index_sha256": {p.name: sha256_file(p) for p in files},
            "shardlist": read_index(cfg.shards, cfg.split), "encoder": encoder_lineage(cfg)}


def encoder_lineage(cfg: TrainConfig) -> dict | None:
    """Which encoder run the vision tower came from: the record the encoder stage leaves in its open_clip dir
    (its config hash, the weights' hash, the shard index hashes it trained on); None without a vision_path."""
    if cfg.vision_path is None:
        return None
    path = Path(cfg.vision_path)
    record = path / "encoder-run.json"
    if not record.exists():
        return {"vision_path": str(path.resolve()), "encoder_run": "none (weights not trained by cxrflow)"}
    r = json.loads(record.read_text())
    return {"vision_path": str(path.resolve()), "encoder_key": r.get("key"), "weights_sha256": r.get("weights_sha256"),
            "init": r.get("init"), "epochs": r.get("config", {}).get("epochs"), "shards_dir": r.get("shards_dir"),
            "index_sha256": r.get("index_sha256"), "data": r.get("data")}


def prepare_data(cfg: TrainConfig, run_dir: Path):
    """wids dataset + examples; the example list is cached in the run dir keyed by the index hash."""
    shardlist = read_index(cfg.shards, cfg.split)
    ds = open_shards(shardlist, run_dir / ".wids")
    # "-s": rows carry the study id (the shuffle control's derangement depends on it); older caches are rebuilt
    key = sha256_file(cfg.shards / index_name(cfg.split))[:16] + f"-{int(cfg.expand_targets)}-s"
    cache = run_dir / f"examples-{cfg.split}.json"
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        data = json.loads(cache.read_text())
        return ds, [Example(*e) for e in data["examples"]], data["summary"]
    examples, summary = build_examples(ds, cfg.expand_targets)
    rows = [[e.index, e.target, e.study] for e in examples]
    atomic_write_json(cache, {"key": key, "summary": summary, "examples": rows})
    return ds, examples, summary


def write_run_header(cfg: TrainConfig) -> None:
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = TrainConfig.model_validate_json(cfg_path.read_text())
        if old.fingerprint() != cfg.fingerprint():
            raise ValueError(f"{out} holds a run with a different training config; use a new --out")
    atomic_write_json(cfg_path, cfg.model_dump(mode="json"))
    atomic_write_json(out / "lineage.json", lineage(cfg))


def stage_done(run_dir: Path, stage: int) -> bool:
    return (final_dir(run_dir) / f"stage{stage}-trainable.safetensors").exists()


def run_training(cfg: TrainConfig, stop_at: tuple[int, int] | None = None, accelerator=None,
                 on_step=None) -> dict:
    """Run (or resume) every requested stage; finished stages are skipped. `stop_at=(stage, step)` stops
    right after that step, as a kill would (tests, smoke runs). `on_step(row)` sees every optimizer step's
    metrics (progress). Returns a summary whose `stopped` says, per stage, how many steps and why."""
    write_run_header(cfg)
    for stale in clean_stale_temps(cfg.out):
        log.info("removed %s (left by a killed save)", stale.name)
    ds, examples, data_summary = prepare_data(cfg, cfg.out)
    summary: dict = {"run_dir": str(cfg.out), "data": data_summary, "stages": {}}
    for stage in sorted(cfg.stages):
        if stage_done(cfg.out, stage):
            summary["stages"][stage] = {"skipped": "already finished"}
            continue
        parts = build_stage(cfg, stage, (ds, examples), accelerator)
        result = train_stage(parts, stop_at[1] if stop_at and stop_at[0] == stage else None, on_step)
        summary["stages"][stage] = result
        log.info("stage %d: %d optimizer steps, stopped: %s", stage, result["steps"], result["stopped"])
        if not result["finished"]:
            break  # stopped early (simulated kill / step cap): later stages wait for a resume
    summary["stopped"] = {
        f"stage{k}": (f"{v['steps']} steps: {v['stopped']}" if "steps" in v else f"skipped: {v['skipped']}")
        for k, v in summary["stages"].items()}
    png = write_loss_curve(cfg.out / "metrics.jsonl", cfg.out / "loss.png")
    summary["loss_png"] = str(png) if png else None
    atomic_write_json(cfg.out / "summary.json",
                      {**summary, "stages": {k: {kk: vv for kk, vv in v.items() if kk != "losses"}
                                             for k, v in summary["stages"].items()}})
    return summary
