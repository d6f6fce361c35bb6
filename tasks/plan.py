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
from schemas.config import (
    IngestConfig,
    IngestSettings,
    MixtureConfig,
    Parallelism,
    SourceSelection,
    SourceSettings,
)
from schemas.encoder import EncoderConfig
from schemas.evaluation import EvaluateParams
from schemas.llm import LLMConfig, LLMEndpoint, StructureConfig
from schemas.pipeline import PipelineConfig
from schemas.shards import DataParams, ShardParams, ValidateConfig
from schemas.stages import Counts, PipelineResult, StructureSummary, TrainSummary, Work
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
WORK = tuple(Work.model_fields)
DATA_STAGES: tuple[str, ...] = ("ingest", "structure", "shard")  # the `data` flow's, in order


@dataclass(frozen=True)
class StageConfigs:
    """The stages' own configs for one pipeline config (encoder: None without an encoder section; mixture:
    None for a single source)."""

    ingest: IngestConfig
    mixture: MixtureConfig | None
    structure: StructureConfig
    shard: ShardParams
    encoder: EncoderConfig | None
    train: TrainConfig
    evaluate: EvaluateParams


@dataclass(frozen=True)
class DataStageConfigs:
    """The `data` flow's stages, all under one OUT."""

    ingest: IngestConfig
    mixture: MixtureConfig | None
    structure: StructureConfig
    shard: ShardParams


def read_marker(stage: str, d: Path, key: str) -> dict | None:
    """The stage's completion marker when it was written for `key` and the main output is still there."""
    path = d / MARKER
    if not path.exists() or not (d / REQUIRED[stage]).exists():
        return None
    marker = json.loads(path.read_text())
    return marker if marker.get("key") == key else None


def stage_finished(cfg: PipelineConfig, stage: str) -> bool:
    """Whether `stage` of `cfg` has its completion marker (a run of it finished and its output is there)."""
    return read_marker(stage, cfg.stage_dirs()[stage], cfg.stage_hashes()[stage]) is not None


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
    return stage_work(stage, summary).model_dump()


def stage_work(stage: str, summary: dict) -> Work:
    if stage == "ingest":  # one source or a mixture: both count decoded images
        return Work(decoded=Counts.model_validate(summary).decoded)
    if stage == "structure":
        return Work(llm_requests=StructureSummary.model_validate(summary).requests)
    if stage == "train":
        return Work(train_steps=TrainSummary.model_validate(summary).steps)
    return Work()


def ingest_configs(
    sel: SourceSelection, settings: IngestSettings, out: Path, run: Parallelism
) -> tuple[IngestConfig, MixtureConfig | None]:
    """One source's IngestConfig, and the MixtureConfig when the selection lists several sources (the
    IngestConfig's root is then unused). The one place a selection + ingest settings become stage configs."""
    common = {**settings.ingest_settings(), **run.parallelism(), "frontal_only": sel.frontal_only, "out": out}
    one = sel.model_dump(include=set(SourceSettings.model_fields))
    ingest = IngestConfig(**common, **one, root=sel.root or out)
    mixture = MixtureConfig(**common, sources=sel.sources) if sel.sources else None
    return ingest, mixture


def train_config(cfg: PipelineConfig, shards: Path, out: Path, vision_path: Path | None) -> TrainConfig:
    """The preset's TrainConfig with the pipeline's train section on top (stage overrides re-validated); the
    image size and resize follow the data section unless the section pins a size (0: the preset's native)."""
    from schemas.train import default_config

    t, image = cfg.train, cfg.data.image
    given = t.model_dump(exclude_none=True, exclude={"preset", "stage1", "stage2"})
    given["image_size"] = image.size if t.image_size is None else t.image_size
    given["image_resize"] = image.resize
    train = default_config(t.preset, shards, out, **{**given, "vision_path": vision_path or t.vision_path})
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
    ingest, mixture = ingest_configs(data, data, d["ingest"], cfg)
    s = cfg.structure
    llm = LLMConfig(**s.model_dump(include=set(LLMEndpoint.model_fields)), cache_dir=out / "llm-cache")
    structure = StructureConfig(
        manifest=d["ingest"] / "manifest.parquet", out=d["structure"], llm=llm, compare_rules=s.compare_rules
    )
    shard = ShardParams(
        data=d["structure"],
        out=d["shard"],
        artifacts=out / "artifacts",
        validate_cfg=cfg.validation(),
        shard=cfg.shard.layout(),
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
    elif not stage_finished(cfg, "ingest"):
        preflight.check_source(cfg.data.source)  # a reused ingest needs no root
        preflight.check_root(cfg.data.source, cfg.data.root, cfg.data.options)
    return confs


def data_stage_configs(p: DataParams) -> DataStageConfigs:
    """The `data` flow's stages: OUT/data (manifest, images, reports), OUT/shards, OUT/artifacts."""
    data, artifacts = p.out / "data", p.out / "artifacts"
    ingest, mixture = ingest_configs(p, p, data, p)
    llm = LLMConfig(
        backend=p.llm_backend, model=p.llm_model, base_url=p.llm_base_url, cache_dir=artifacts / "llm-cache"
    )
    structure = StructureConfig(manifest=data / "manifest.parquet", out=data, llm=llm)
    shard = ShardParams(
        data=data,
        out=p.out / "shards",
        artifacts=artifacts,
        validate_cfg=ValidateConfig.for_data(p),
        shard=p.shard,
    )
    return DataStageConfigs(ingest=ingest, mixture=mixture, structure=structure, shard=shard)


def link_ingest_outputs(ingest_dir: Path, structure_dir: Path) -> None:
    """the shard stage reads one data dir (manifest, ingest summary, images, reports): give the structure
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


def render_text(result: dict | PipelineResult) -> str:
    """The pipeline result for terminals: the metrics table and where everything is; metrics that could not be
    computed collapse into one line that says why."""
    from tasks.evaluate.learning import collapse_not_computed

    r = PipelineResult.model_validate(result)
    width = max((len(m["metric"]) for m in r.metrics), default=6)
    lines = [f"pipeline {r.name}: metrics", f"{'metric':<{width}}  value [95% CI]"]
    lines += [f"{m['metric']:<{width}}  {m['display']}" for m in r.metrics if m["value"] is not None]
    missing = collapse_not_computed(
        {m["metric"]: None if m["value"] is not None else m["display"] for m in r.metrics}
    )
    lines += [missing] if missing else []
    lines += ["", "stages:"]
    lines += [f"  {s:<9} {v.status:<6} {v.dir}" for s, v in r.stages.items()]
    w = r.work
    lines += [
        "",
        f"work: {w.decoded} images decoded, {w.llm_requests} LLM requests, {w.train_steps} training steps",
        f"metrics:    {r.metrics_json}",
        f"checkpoint: {r.checkpoint}",
        f"shards:     {r.shards}",
    ]
    return "\n".join(lines)
