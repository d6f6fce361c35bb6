"""The stage plan of the `pipeline` and `data` flows, as plain functions: each stage's own config pointed at
its content-addressed dir, the completion markers that let a rerun skip a finished stage, and the work a stage
reports. The flows (flows/pipeline.py, flows/data.py) only call these and run the subflows.

Each pipeline stage writes under OUT/stages/<stage>-<key>, where the key hashes that stage's config section
plus every upstream key (schemas/pipeline.py, PipelineConfig.stage_hashes). A finished stage writes
`_complete.json` beside its outputs; a later run with the same key finds it and reuses the outputs. Config
hashes, not data frames, are the cache keys (docs/pitfalls.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrio import atomic_write_json
from schemas.config import ImageConfig, IngestConfig, MixtureConfig, SourceSelection
from schemas.encoder import EncoderConfig
from schemas.evaluation import EvaluateParams
from schemas.llm import LLMConfig, LLMEndpoint, StructureConfig
from schemas.pipeline import PipelineConfig
from schemas.shards import DataParams, ValidateConfig, ValidateShardParams
from schemas.train import TrainConfig

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
# What each stage's summary counts as work done (a rerun that reuses everything does none).
WORK = ("decoded", "llm_requests", "train_steps")


@dataclass(frozen=True)
class StageConfigs:
    """The stages' own configs for one pipeline config (encoder: None without an encoder section; mixture:
    None for a single source)."""

    ingest: IngestConfig
    mixture: MixtureConfig | None
    structure: StructureConfig
    shard: ValidateShardParams
    encoder: EncoderConfig | None
    train: TrainConfig
    evaluate: EvaluateParams


@dataclass(frozen=True)
class DataStageConfigs:
    """The `data` flow's stages, all under one OUT."""

    ingest: IngestConfig
    mixture: MixtureConfig | None
    structure: StructureConfig
    shard: ValidateShardParams


def read_marker(stage: str, d: Path, key: str) -> dict | None:
    """The stage's completion marker when it was written for `key` and the main output is still there."""
    path = d / MARKER
    if not path.exists() or not (d / REQUIRED[stage]).exists():
        return None
    marker = json.loads(path.read_text())
    return marker if marker.get("key") == key else None


def write_marker(
    stage: str,
    d: Path,
    key: str,
    summary: Any,
    seconds: float,
    run: tuple[str | None, str | None] = (None, None),
) -> None:
    """`run`: (id, name) of the pipeline flow run that produced the stage, so reusers can link to it.
    `code_version`: the git revision that produced it (the report's lineage)."""
    from tasks.lineage import code_version

    atomic_write_json(
        d / MARKER,
        {
            "stage": stage,
            "key": key,
            "code_version": code_version(),
            "seconds": round(seconds, 3),
            "flow_run_id": run[0],
            "flow_run_name": run[1],
            "summary": summary,
        },
    )


def work_done(stage: str, summary: dict) -> dict[str, int]:
    """Images decoded, LLM requests sent and training steps taken, as the stage's summary reports them."""
    work = dict.fromkeys(WORK, 0)
    if stage == "ingest":
        work["decoded"] = int(summary.get("decoded", 0))
    elif stage == "structure":
        work["llm_requests"] = int(summary.get("requests", 0))
    elif stage == "train":
        work["train_steps"] = sum(int(s.get("steps", 0)) for s in summary.get("stages", {}).values())
    return work


def ingest_configs(
    sel: SourceSelection,
    out: Path,
    image: ImageConfig,
    workers: int | None,
    batch_size: int = 32,
    options: dict | None = None,
) -> tuple[IngestConfig, MixtureConfig | None]:
    """One source's IngestConfig, and the MixtureConfig when the selection lists several sources (the
    IngestConfig's root is then unused)."""
    ingest = IngestConfig(
        source=sel.source,
        root=sel.root or out,
        out=out,
        frontal_only=sel.frontal_only,
        image=image,
        workers=workers,
        batch_size=batch_size,
        limit=sel.limit,
        options=options or {},
        annotations=sel.annotations,
    )
    mixture = (
        MixtureConfig(
            sources=sel.sources,
            out=out,
            frontal_only=sel.frontal_only,
            image=image,
            workers=workers,
            batch_size=batch_size,
        )
        if sel.sources
        else None
    )
    return ingest, mixture


def train_config(cfg: PipelineConfig, shards: Path, out: Path, vision_path: Path | None) -> TrainConfig:
    """The preset's TrainConfig with the pipeline's train section on top (stage overrides re-validated)."""
    from schemas.train import default_config

    t = cfg.train
    train = default_config(
        t.preset,
        shards,
        out,
        stages=t.stages,
        max_steps=t.max_steps,
        epochs=t.epochs,
        seed=t.seed,
        image_size=t.image_size,
        image_resize=t.image_resize,
        shuffle_images=t.shuffle_images,
        vision_path=vision_path,
        lm_path=t.lm_path,
        deployment=t.deployment,
    )
    train = train.model_copy(
        update={
            "stage1": train.stage1.model_copy(update=t.stage1),
            "stage2": train.stage2.model_copy(update=t.stage2),
        }
    )
    return type(train).model_validate(train.model_dump())  # re-validate the overridden stages


def stage_configs(cfg: PipelineConfig) -> StageConfigs:
    """The stages' own config models, pointed at the content-addressed stage dirs."""
    from tasks.llm.guard import binding_source

    d, out, data = cfg.stage_dirs(), Path(cfg.out), cfg.data
    ingest, mixture = ingest_configs(
        data, d["ingest"], data.image, cfg.workers, data.batch_size, data.options
    )
    s = cfg.structure
    llm = LLMConfig(**s.model_dump(include=set(LLMEndpoint.model_fields)), cache_dir=out / "llm-cache")
    structure = StructureConfig(
        manifest=d["ingest"] / "manifest.parquet", out=d["structure"], llm=llm, compare_rules=s.compare_rules
    )
    shard = ValidateShardParams(
        data=d["structure"],
        out=d["shard"],
        artifacts=out / "artifacts",
        validate_cfg=cfg.validate_cfg,
        shard=cfg.shard,
    )
    encoder = None
    if cfg.encoder is not None:
        encoder = EncoderConfig(
            **cfg.encoder.model_dump(), shards=d["shard"], out=d["encoder"], key=cfg.stage_hashes()["encoder"]
        )
    vision_path = d["encoder"] / "open_clip" if encoder is not None else cfg.train.vision_path
    train = train_config(cfg, d["shard"], d["train"], vision_path)
    evaluate = EvaluateParams(
        **cfg.evaluate.model_dump(),
        out=str(d["evaluate"]),
        experiment=cfg.name,
        run=str(d["train"]),
        shards=str(d["shard"]),
        source=binding_source(data.source_names()),
        encoder_metrics=str(d["encoder"] / "retrieval" / "metrics.json") if encoder else None,
    )
    return StageConfigs(
        ingest=ingest,
        mixture=mixture,
        structure=structure,
        shard=shard,
        encoder=encoder,
        train=train,
        evaluate=evaluate,
    )


def checked_stage_configs(cfg: PipelineConfig) -> StageConfigs:
    """stage_configs, with user mistakes as one-line UserErrors (a misspelt stage override names the
    closest key) and the data root and output folder checked before any work."""
    from pydantic import ValidationError

    from schemas.errors import validation_message
    from schemas.train import StageConfig, stage1_defaults
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
    if confs.mixture is not None:
        from tasks.mixture import check_sources

        check_sources(confs.mixture)
    elif read_marker("ingest", cfg.stage_dirs()["ingest"], cfg.stage_hashes()["ingest"]) is None:
        preflight.check_source(cfg.data.source)  # a reused ingest needs no root
        preflight.check_root(cfg.data.source, cfg.data.root, cfg.data.options)
    return confs


def data_stage_configs(p: DataParams) -> DataStageConfigs:
    """The `data` flow's stages: OUT/data (manifest, images, reports), OUT/shards, OUT/artifacts."""
    data, artifacts = p.out / "data", p.out / "artifacts"
    ingest, mixture = ingest_configs(p, data, ImageConfig(size=p.image_size), p.workers)
    llm = LLMConfig(
        backend=p.llm_backend, model=p.llm_model, base_url=p.llm_base_url, cache_dir=artifacts / "llm-cache"
    )
    structure = StructureConfig(manifest=data / "manifest.parquet", out=data, llm=llm)
    shard = ValidateShardParams(
        data=data,
        out=p.out / "shards",
        artifacts=artifacts,
        validate_cfg=ValidateConfig(frontal_only=p.frontal_only),
        shard=p.shard,
    )
    return DataStageConfigs(ingest=ingest, mixture=mixture, structure=structure, shard=shard)


def link_ingest_outputs(ingest_dir: Path, structure_dir: Path) -> None:
    """validate_and_shard reads one data dir (manifest, ingest summary, images, reports): give the structure
    dir relative links to the ingest outputs instead of copying images."""
    structure_dir.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.parquet", "summary.json", "images", "sources"):
        link = structure_dir / name
        if link.is_symlink() or link.exists() or not (ingest_dir / name).exists():
            continue
        link.symlink_to(os.path.relpath(ingest_dir / name, structure_dir))


def metrics_table(eval_dir: Path) -> list[dict]:
    """The evaluation's metrics.json as table rows (value, 95% CI, bootstrap median, n, display text)."""
    from schemas.evaluation import EvaluationMetrics

    m = EvaluationMetrics.model_validate_json((Path(eval_dir) / "metrics.json").read_text())
    return [
        {
            "metric": k,
            "value": r.value,
            "ci_low": r.ci[0] if r.ci else None,
            "ci_high": r.ci[1] if r.ci else None,
            "bootstrap_median": r.bootstrap_median,
            "n": r.n,
            "display": r.display(),
        }
        for k, r in m.metrics.items()
    ]


def render_text(result: dict) -> str:
    """The pipeline result for terminals: the metrics table and where everything is; metrics that could not be
    computed collapse into one line that says why."""
    from tasks.evaluate.learning import collapse_not_computed

    width = max((len(r["metric"]) for r in result["metrics"]), default=6)
    lines = [f"pipeline {result['name']}: metrics", f"{'metric':<{width}}  value [95% CI]"]
    lines += [f"{r['metric']:<{width}}  {r['display']}" for r in result["metrics"] if r["value"] is not None]
    missing = collapse_not_computed(
        {r["metric"]: None if r["value"] is not None else r["display"] for r in result["metrics"]}
    )
    lines += [missing] if missing else []
    lines += ["", "stages:"]
    lines += [f"  {s:<9} {v['status']:<6} {v['dir']}" for s, v in result["stages"].items()]
    w = result["work"]
    lines += [
        "",
        f"work: {w['decoded']} images decoded, {w['llm_requests']} LLM requests, "
        f"{w['train_steps']} training steps",
        f"metrics:    {result['metrics_json']}",
        f"checkpoint: {result['checkpoint']}",
        f"shards:     {result['shards']}",
    ]
    return "\n".join(lines)
