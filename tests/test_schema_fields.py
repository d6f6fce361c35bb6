"""Each setting is declared once (issue 24): models compose shared settings models (schemas/config.py
ViewPolicy, IngestSettings, SourceSettings, Parallelism; schemas/llm.py StructureSettings) or are generated
from them (schemas/pipeline.py TrainSection = TrainConfig minus what the pipeline derives), never copied.

A field name declared by two schema models is a failure unless ALLOWED lists exactly those models with the
reason the names coincide (a location, a per-stage homonym, a documented override, a result record)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections import defaultdict

import pytest
from pydantic import BaseModel

import schemas

_LOCATION = "a location (each stage's own input/output path or section), not a setting"
_RECORD = "a result record echoing the setting it was computed with"
ALLOWED: dict[str, tuple[set[str], str]] = {
    "out": ({"config.IngestConfig", "config.MixtureConfig", "encoder.EncoderConfig", "evaluation.EvaluateParams",
             "llm.StructureConfig", "pipeline.PipelineConfig", "shards.ShardParams", "shards.DataParams",
             "train.TrainConfig"}, _LOCATION),
    "root": ({"config.IngestConfig", "config.SourceSpec", "config.SourceSelection"},
             _LOCATION + " (required for one source and a mixture entry; optional in a selection)"),
    "shards": ({"encoder.EncoderConfig", "evaluation.EvaluateParams", "train.TrainConfig"}, _LOCATION),
    "data": ({"pipeline.PipelineConfig", "shards.ShardParams"}, _LOCATION),
    "shard": ({"pipeline.PipelineConfig", "shards.ShardParams", "shards.DataParams"},
              "the ShardConfig section, one model, placed in three parameter sets"),
    "validate_cfg": ({"shards.ShardSection", "shards.ShardParams"},
                     "the `shard.validate:` thresholds vs the derived ValidateConfig the stage runs with"),
    "sources": ({"config.SourceSelection", "config.MixtureConfig", "encoder.EncoderSection"},
                "SourceSpec lists (selection, mixture); the encoder's names which ingested sources it trains on"),
    "name": ({"config.SourceSpec", "pipeline.PipelineConfig", "pipeline.AblationSpec"}, "names of different things"),
    "frontal_only": ({"config.ViewPolicy", "config.SourceSpec"},
                     "documented override: a mixture entry's optional per-source view policy (None: the mixture's)"),
    "options": ({"config.SourceSettings", "config.SourceSpec"}, "a mixture entry's own adapter options"),
    "epochs": ({"encoder.EncoderSection", "train.StageConfig", "train.TrainConfig"},
               "encoder epochs; the recipe's per-stage epochs; TrainConfig.epochs, the documented override of both"),
    "batch_size": ({"config.IngestSettings", "encoder.EncoderSection", "evaluation.EvaluationSettings"},
                   "per-stage homonyms: ingest chunk grain, contrastive batch, generation batch"),
    "lr": ({"encoder.EncoderSection", "train.StageConfig"}, "per-stage homonyms (encoder vs LLaVA stage)"),
    "deployment": ({"encoder.EncoderSection", "train.TrainConfig"}, "each GPU stage's own work pool deployment"),
    "workers": ({"config.Parallelism", "encoder.EncoderSection", "shards.ShardConfig"},
                "per-stage homonyms: ingest processes, data loader workers, shard writers"),
    "seed": ({"encoder.EncoderSection", "evaluation.EvaluationMetrics", "evaluation.EvaluationComparison",
              "evaluation.EvaluationSettings", "llm.LLMConfig", "train.TrainConfig"},
             "each stage's seed (training's streams: training/seeds.py); evaluation records echo theirs"),
    "split": ({"evaluation.EvaluationSettings", "train.TrainConfig"}, "the split each stage reads"),
    "limit": ({"config.SourceSettings", "evaluation.EvaluationSettings"}, "per-stage caps (images vs reports)"),
    "source": ({"config.SourceSettings", "evaluation.EvaluateParams"},
               "the evaluation's source binding (tasks/llm/guard.py), derived by the plan from the data section"),
    "llm": ({"evaluation.EvaluationSettings", "llm.StructureConfig"}, "each stage's own LLM endpoint"),
    "experiment": ({"evaluation.EvaluationMetrics", "evaluation.EvaluateParams"}, _RECORD),
    "bootstrap_scheme": ({"evaluation.EvaluationMetrics", "evaluation.EvaluationSettings"}, _RECORD),
    "n_bootstrap": ({"encoder.EncoderSection", "evaluation.EvaluationMetrics", "evaluation.EvaluationSettings"},
                    "encoder retrieval CIs vs evaluation CIs; " + _RECORD),
    "metrics": ({"evaluation.EvaluationMetrics", "evaluation.EvaluationComparison", "evaluation.BaselineResult",
                 "pipeline.AblationSpec"}, "result tables vs the metric names an ablation charts"),
    "description": ({"evaluation.BaselineResult", "pipeline.AblationSpec"}, "free text about different things"),
    **{f: ({"evaluation.MetricResult", "evaluation.MetricComparison"}, _RECORD)
       for f in ("method", "n", "not_computed")},
    **{f: ({"evaluation.MetricComparison", "evaluation.EvaluationComparison"}, "the two sides of a comparison")
       for f in ("a", "b")},
}


def declarations() -> dict[str, set[str]]:
    """Field name -> the schema models that declare it themselves (inherited and generated fields excluded)."""
    from schemas.pipeline import DERIVED_MODELS

    found: dict[str, set[str]] = defaultdict(set)
    for info in pkgutil.iter_modules(schemas.__path__):
        if info.name == "stages":  # stage summaries: results that count things, not settings
            continue
        module = importlib.import_module(f"schemas.{info.name}")
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == module.__name__):
                continue
            origin = DERIVED_MODELS.get(cls)
            for field in cls.__dict__.get("__annotations__", {}):
                if field in cls.model_fields and not (origin and field in origin.model_fields):
                    found[field].add(f"{info.name}.{cls.__name__}")
    return found


def test_no_setting_is_declared_twice():
    repeated = {f: where for f, where in declarations().items() if len(where) > 1}
    unexplained = {f: sorted(w) for f, w in repeated.items() if f not in ALLOWED or ALLOWED[f][0] != w}
    assert not unexplained, f"re-declared outside the allow-list (compose or derive instead): {unexplained}"
    stale = sorted(set(ALLOWED) - set(repeated))
    assert not stale, f"allow-list entries no longer needed: {stale}"


def test_a_planted_redeclaration_fails(monkeypatch):
    """The check sees a copied field (a model re-declaring frontal_only, as five did before issue 24)."""
    from schemas import config

    class Copied(BaseModel):
        frontal_only: bool = True

    Copied.__module__ = config.__name__
    monkeypatch.setattr(config, "Copied", Copied, raising=False)
    assert "config.Copied" in declarations()["frontal_only"]
    with pytest.raises(AssertionError, match="frontal_only"):
        test_no_setting_is_declared_twice()


def test_train_section_is_train_config_minus_what_the_pipeline_derives():
    from schemas.pipeline import TRAIN_DERIVED, TrainSection
    from schemas.train import TrainConfig

    assert set(TrainSection.model_fields) == set(TrainConfig.model_fields) - set(TRAIN_DERIVED)


def _options(command: str) -> dict:
    import typer

    from cxrflow_cli.main import app

    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def _choices(annotation) -> set[str]:
    return {str(a) for a in typing.get_args(annotation)}


@pytest.mark.parametrize(
    ("command", "option", "model", "field"),
    [
        ("ingest", "size", "config.ImageConfig", "size"),
        ("ingest", "resize", "config.ImageConfig", "resize"),
        ("ingest", "image_format", "config.ImageConfig", "format"),
        ("ingest", "jpeg_quality", "config.ImageConfig", "jpeg_quality"),
        ("ingest", "batch_size", "config.IngestSettings", "batch_size"),
        ("data", "size", "config.ImageConfig", "size"),
        ("data", "backend", "llm.LLMEndpoint", "backend"),
        ("structure", "backend", "llm.LLMEndpoint", "backend"),
        ("train", "preset", "train.TrainConfig", "preset"),
        ("train", "image_resize", "train.TrainConfig", "image_resize"),
        ("train", "seed", "train.TrainConfig", "seed"),
    ],
)
def test_cli_options_match_the_schema(command, option, model, field):
    """Choices generated from the schema's Literal; defaults the schema's (or unset: the schema decides)."""
    import enum

    module, name = model.split(".")
    f = getattr(importlib.import_module(f"schemas.{module}"), name).model_fields[field]
    param = _options(command)[option]
    annotation = param.type_descriptor.annotation
    enums = [a for a in (annotation, *typing.get_args(annotation)) if inspect.isclass(a) and issubclass(a, enum.Enum)]
    if enums:
        assert {m.value for m in enums[0]} == _choices(f.annotation)
    default = getattr(param.default, "value", param.default)
    assert default is None or default == f.default, (command, option, default, f.default)
