"""Flow `pipeline`: ingest -> structure -> validate_and_shard -> [encoder] -> train -> evaluate, each stage a
subflow. The optional encoder stage trains the image encoder contrastively on the shards (flows/encoder.py);
its open_clip dir is then the LLaVA run's vision tower and its retrieval metrics join the evaluation's.

Each stage writes under OUT/stages/<stage>-<key>, where the key hashes that stage's config section plus every
upstream key (schemas/pipeline.py). A stage that finished writes `_complete.json` beside its outputs; a later
run with the same key finds it and skips the subflow. So a variant that only changes training reuses the data
outputs, one that only changes evaluation reuses the checkpoint, and a rerun with nothing changed decodes no
image, sends no LLM request and takes no training step. Config hashes, not data frames, are the cache keys
(docs/pitfalls.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from schemas.pipeline import PipelineConfig, slug
from tasks.io import atomic_write_json
from tasks.llm.guard import binding_source
from tasks.lock import holds_output_lock

MARKER = "_complete.json"
# A marker only counts when the stage's main output is still there.
REQUIRED = {
    "ingest": "manifest.parquet",
    "structure": "reports.parquet",
    "shard": "summary.json",
    "encoder": "open_clip/open_clip_pytorch_model.bin",
    "train": "final/stage1-projector.safetensors",
    "evaluate": "metrics.json",
}


def read_marker(stage: str, d: Path, key: str) -> dict | None:
    path = d / MARKER
    if not path.exists() or not (d / REQUIRED[stage]).exists():
        return None
    marker = json.loads(path.read_text())
    return marker if marker.get("key") == key else None


def write_marker(stage: str, d: Path, key: str, summary: Any, seconds: float,
                 run: tuple[str | None, str | None] = (None, None)) -> None:
    """`run`: (id, name) of the pipeline flow run that produced the stage, so reusers can link to it."""
    atomic_write_json(d / MARKER, {"stage": stage, "key": key, "seconds": round(seconds, 3),
                                   "flow_run_id": run[0], "flow_run_name": run[1], "summary": summary})


def stage_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """The existing stages' own config models, pointed at the content-addressed stage dirs."""
    from schemas.config import IngestConfig, MixtureConfig
    from schemas.encoder import EncoderConfig
    from schemas.evaluation import EvaluateParams
    from schemas.llm import LLMConfig, LLMEndpoint, StructureConfig
    from schemas.shards import ValidateShardParams
    from schemas.train import default_config

    d = cfg.stage_dirs()
    data = cfg.data
    ingest = IngestConfig(source=data.source, root=data.root or d["ingest"], out=d["ingest"],
                          frontal_only=data.frontal_only, image=data.image, workers=cfg.workers,
                          batch_size=data.batch_size, limit=data.limit, options=data.options,
                          annotations=data.annotations)
    mixture = MixtureConfig(sources=data.sources, out=d["ingest"], frontal_only=data.frontal_only, image=data.image,
                            workers=cfg.workers, batch_size=data.batch_size) if data.sources else None
    s = cfg.structure
    llm = LLMConfig(**s.model_dump(include=set(LLMEndpoint.model_fields)), cache_dir=Path(cfg.out) / "llm-cache")
    structure = StructureConfig(manifest=d["ingest"] / "manifest.parquet", out=d["structure"], llm=llm,
                                compare_rules=s.compare_rules)
    shard = ValidateShardParams(data=d["structure"], out=d["shard"], artifacts=Path(cfg.out) / "artifacts",
                                validate_cfg=cfg.validate_cfg, shard=cfg.shard)
    encoder = None
    if cfg.encoder is not None:
        encoder = EncoderConfig(**cfg.encoder.model_dump(), shards=d["shard"], out=d["encoder"],
                                key=cfg.stage_hashes()["encoder"])
    t = cfg.train
    vision_path = d["encoder"] / "open_clip" if encoder is not None else t.vision_path
    train = default_config(t.preset, d["shard"], d["train"], stages=t.stages, max_steps=t.max_steps, epochs=t.epochs,
                           seed=t.seed, image_size=t.image_size, image_resize=t.image_resize,
                           shuffle_images=t.shuffle_images, vision_path=vision_path,
                           lm_path=t.lm_path, deployment=t.deployment)
    train = train.model_copy(update={"stage1": train.stage1.model_copy(update=t.stage1),
                                     "stage2": train.stage2.model_copy(update=t.stage2)})
    train = type(train).model_validate(train.model_dump())  # re-validate the overridden stages
    e = cfg.evaluate
    evaluate = EvaluateParams(out=str(d["evaluate"]), experiment=cfg.name, run=str(d["train"]),
                              shards=str(d["shard"]), split=e.split, batch_size=e.batch_size,
                              max_new_tokens=e.max_new_tokens, limit=e.limit, n_bootstrap=e.n_bootstrap,
                              seed=e.seed, device=e.device, source=binding_source(data.source_names()), llm=e.llm,
                              bootstrap_scheme=e.bootstrap_scheme, chexprompt_protocol=e.chexprompt_protocol,
                              encoder_metrics=str(d["encoder"] / "retrieval" / "metrics.json") if encoder else None)
    return {"ingest": ingest, "mixture": mixture, "structure": structure, "shard": shard, "encoder": encoder,
            "train": train, "evaluate": evaluate}


def checked_stage_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """stage_configs, with user mistakes as one-line UserErrors (a misspelt stage override names the
    closest key) and the data root and output folder checked before any work."""
    from pydantic import ValidationError

    from schemas.errors import validation_message
    from schemas.train import StageConfig, TrainConfig, stage1_defaults
    from tasks import preflight

    for name in ("stage1", "stage2"):  # partial overrides: model_copy(update=...) would not check the keys
        try:
            StageConfig.model_validate({**stage1_defaults().model_dump(), **getattr(cfg.train, name)})
        except ValidationError as exc:
            raise validation_message(exc, StageConfig, f"train.{name}.") from None
    try:
        confs = stage_configs(cfg)
    except ValidationError as exc:
        raise validation_message(exc, TrainConfig, "train.") from None
    preflight.check_out_dir(Path(cfg.out), "out")
    if confs["mixture"] is not None:
        from tasks.mixture import check_sources

        check_sources(confs["mixture"])
    elif read_marker("ingest", cfg.stage_dirs()["ingest"], cfg.stage_hashes()["ingest"]) is None:
        preflight.check_source(cfg.data.source)  # a reused ingest needs no root
        preflight.check_root(cfg.data.source, cfg.data.root)
    return confs


def link_ingest_outputs(ingest_dir: Path, structure_dir: Path) -> None:
    """validate_and_shard reads one data dir (manifest, ingest summary, images, reports): give the structure
    dir relative links to the ingest outputs instead of copying images."""
    structure_dir.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.parquet", "summary.json", "images", "sources"):
        link = structure_dir / name
        if link.is_symlink() or link.exists() or not (ingest_dir / name).exists():
            continue
        link.symlink_to(os.path.relpath(ingest_dir / name, structure_dir))


def _run_stage(stage: str, cfg: PipelineConfig, confs: dict[str, Any]) -> Any:
    from flows.evaluate import evaluate
    from flows.ingest import ingest_flow, ingest_mixture_flow
    from flows.runners import ingest_runner
    from flows.structure import structure
    from flows.train import train
    from flows.validate_shard import validate_and_shard

    name = {"flow_run_name": f"{slug(cfg.name)}-{stage}"}  # readable rows in the UI, not random names
    if stage == "ingest" and confs["mixture"] is not None:
        return ingest_mixture_flow.with_options(**name)(confs["mixture"])
    if stage == "ingest":
        runner = ingest_runner(confs["ingest"], cfg.dask_address)
        return ingest_flow.with_options(task_runner=runner, **name)(confs["ingest"])
    if stage == "structure":
        link_ingest_outputs(confs["ingest"].out, confs["structure"].out)
        return structure.with_options(**name)(confs["structure"])
    if stage == "shard":
        return validate_and_shard.with_options(**name)(confs["shard"])
    if stage == "encoder":
        from flows.encoder import encoder

        return encoder.with_options(**name)(confs["encoder"], experiment=cfg.name)
    if stage == "train":
        summary = train.with_options(**name)(confs["train"])
        if "dispatched" in summary and summary.get("state") != "Completed":
            raise RuntimeError(f"training run {summary['flow_run_id']} ended {summary['state']}")
        return summary
    return evaluate.with_options(**name)(confs["evaluate"])


def metrics_table(eval_dir: Path) -> list[dict]:
    from schemas.evaluation import EvaluationMetrics

    m = EvaluationMetrics.model_validate_json((Path(eval_dir) / "metrics.json").read_text())
    return [{"metric": k, "value": r.value, "ci_low": r.ci[0] if r.ci else None,
             "ci_high": r.ci[1] if r.ci else None, "bootstrap_median": r.bootstrap_median, "n": r.n,
             "display": r.display()}
            for k, r in m.metrics.items()]


@flow(name="pipeline", log_prints=True)
@holds_output_lock("pipeline")
def pipeline(cfg: PipelineConfig) -> dict:
    """The whole system for one config. Returns where every stage's outputs are, which stages ran or were
    reused, the work done (images decoded, LLM requests, training steps) and the metrics table."""
    from flows.ui import current_run, stage_scope, tag_value

    logger = get_run_logger()
    run_id, run_name, run_tags = current_run()
    variant = tag_value(run_tags, "variant") or cfg.name
    confs = checked_stage_configs(cfg)  # the CLI's checks: a deployment run fails with the same message
    keys, dirs = cfg.stage_hashes(), cfg.stage_dirs()
    stages: dict[str, dict] = {}
    work = {"decoded": 0, "llm_requests": 0, "train_steps": 0}
    for stage in keys:
        d, key = dirs[stage], keys[stage]
        marker = read_marker(stage, d, key)
        if marker is not None:
            stages[stage] = {"dir": str(d), "key": key, "status": "reused", "seconds": 0.0,
                             "flow_run_id": marker.get("flow_run_id"), "flow_run_name": marker.get("flow_run_name")}
            logger.info("%s: reused %s", stage, d)
            continue
        start = time.perf_counter()
        with stage_scope(cfg.name, stage, variant):
            summary = _run_stage(stage, cfg, confs)
        seconds = time.perf_counter() - start
        if stage == "ingest":
            work["decoded"] += int(summary.get("decoded", 0))
        elif stage == "structure":
            work["llm_requests"] += int(summary.get("requests", 0))
        elif stage == "train":
            work["train_steps"] += sum(int(s.get("steps", 0)) for s in summary.get("stages", {}).values())
        write_marker(stage, d, key, summary, seconds, (run_id, run_name))
        stages[stage] = {"dir": str(d), "key": key, "status": "ran", "seconds": round(seconds, 2),
                         "flow_run_id": run_id, "flow_run_name": run_name}
    table = metrics_table(dirs["evaluate"])
    name = slug(cfg.name)
    create_table_artifact(key=f"pipeline-metrics-{name}", table=table,
                          description=f"Metrics of pipeline {cfg.name} (95% CIs)")
    create_markdown_artifact(key=f"pipeline-stages-{name}", markdown=stages_markdown(cfg, stages, work),
                             description=f"Stages of pipeline {cfg.name}: reused or ran, by which run, and where")
    result = {"name": cfg.name, "flow_run_id": run_id, "out": str(cfg.out), "stages": stages, "work": work,
              "metrics_json": str(dirs["evaluate"] / "metrics.json"),
              "checkpoint": str(dirs["train"] / "final"), "shards": str(dirs["shard"]), "metrics": table}
    atomic_write_json(Path(cfg.out) / "runs" / f"{name}.json", result)
    print(render_text(result))
    return result


def stages_markdown(cfg: PipelineConfig, stages: dict, work: dict) -> str:
    """Each stage: ran here or reused, with a link to the run that produced its outputs."""
    from flows.ui import run_link

    lines = [f"# Pipeline `{cfg.name}`", "", "| stage | status | produced by | seconds | dir |", "|---|---|---|---|---|"]
    for s, v in stages.items():
        by = run_link(v.get("flow_run_id"), v.get("flow_run_name"))
        if v["status"] == "reused" and not v.get("flow_run_id"):
            by = "a run that recorded no flow run id"
        lines.append(f"| {s} | {v['status']} | {by} | {v['seconds']} | `{v['dir']}` |")
    lines += ["", f"Work this run: {work['decoded']} images decoded, {work['llm_requests']} LLM requests, "
              f"{work['train_steps']} training steps."]
    return "\n".join(lines)


def render_text(result: dict) -> str:
    """The metrics table and where everything is, for terminals; metrics that could not be computed collapse
    into one line that says why."""
    from tasks.evaluate.learning import collapse_not_computed

    width = max((len(r["metric"]) for r in result["metrics"]), default=6)
    lines = [f"pipeline {result['name']}: metrics", f"{'metric':<{width}}  value [95% CI]"]
    lines += [f"{r['metric']:<{width}}  {r['display']}" for r in result["metrics"] if r["value"] is not None]
    missing = collapse_not_computed({r["metric"]: None if r["value"] is not None else r["display"]
                                     for r in result["metrics"]})
    lines += [missing] if missing else []
    lines += ["", "stages:"]
    lines += [f"  {s:<9} {v['status']:<6} {v['dir']}" for s, v in result["stages"].items()]
    w = result["work"]
    lines += ["", f"work: {w['decoded']} images decoded, {w['llm_requests']} LLM requests, "
              f"{w['train_steps']} training steps",
              f"metrics:    {result['metrics_json']}", f"checkpoint: {result['checkpoint']}",
              f"shards:     {result['shards']}"]
    return "\n".join(lines)
