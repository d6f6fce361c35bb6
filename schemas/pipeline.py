"""Configuration of the end-to-end `pipeline` flow and of ablations over it.

A PipelineConfig composes the stage configs (ingest image/view settings, report structuring, validation,
sharding, training, evaluation). Each stage's outputs live under OUT/stages/<stage>-<hash>, where the hash
covers that stage's own section plus the hashes of every upstream stage: a variant that only changes training
reuses the data outputs, one that only changes evaluation reuses the checkpoint.

An AblationSpec is a base PipelineConfig plus named variants, each a set of dotted-key overrides
(`train.stage2.lora_r: 8`, `data.image.resize: pad`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.config import ImageConfig, SourceOptions, SourceSelection
from schemas.encoder import EncoderSection
from schemas.evaluation import EvaluationSettings
from schemas.finite import finite_check
from schemas.llm import LLMEndpoint
from schemas.safe_load import MAX_DEPTH, load_yaml_text
from schemas.shards import LAYOUT_VERSION, ShardConfig, ValidateConfig

STAGES: tuple[str, ...] = ("ingest", "structure", "shard", "encoder", "train", "evaluate")  # encoder: optional


def config_hash(*parts: Any) -> str:
    """Hash of JSON-able config sections and upstream hashes (never of data frames: docs/pitfalls.md)."""
    blob = json.dumps([p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DataSection(SourceSelection):
    """Which source, which views and how pixels become training images (ingest)."""

    image: ImageConfig = Field(default_factory=ImageConfig)
    batch_size: int = Field(32, ge=1)
    options: SourceOptions = Field(default_factory=dict, description="source-specific options")


class StructureSection(LLMEndpoint):
    """Report processing: rule-based (`rules`) or an LLM backend (the endpoint fields are LLMConfig's)."""

    compare_rules: bool = True


class TrainSection(BaseModel):
    """Training run on top of the preset's defaults; stage1/stage2 are partial StageConfig overrides."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "llava-rad"] = "tiny"
    stages: list[Literal[1, 2]] = Field(default_factory=lambda: [1, 2])
    max_steps: int | None = Field(None, ge=1, description="optimizer steps per stage (epochs repeat as needed)")
    epochs: int | None = Field(None, ge=1, description="epochs per stage instead of the recipe's; caps max_steps")
    seed: int = 0
    image_size: int = Field(0, ge=0)
    image_resize: Literal["crop", "pad"] = "crop"
    shuffle_images: bool = Field(False, description="control: train on images permuted across samples")
    stage1: dict[str, Any] = Field(default_factory=dict)
    stage2: dict[str, Any] = Field(default_factory=dict)
    vision_path: Path | None = None
    lm_path: Path | None = None
    deployment: str = "train/gpu"


class EvaluateSection(EvaluationSettings):
    """The `evaluate:` section: the evaluate flow's settings (schemas/evaluation.py); where it reads and
    writes comes from the upstream stages."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # llm may hold a URL with a key


class PipelineConfig(BaseModel):
    """Parameters of the `pipeline` flow (shown and validated by the Prefect UI)."""

    name: str = Field("default", description="experiment name (artifact keys, run names)")
    out: Path = Field(Path("artifacts/pipeline"), description="OUT: stages/<stage>-<hash>, llm-cache, gx")
    workers: int | None = Field(None, ge=1, description="ingest processes (default all cores)")
    dask_address: str | None = Field(None, description="Dask scheduler for ingest (tcp://host:8786)")
    data: DataSection
    structure: StructureSection = Field(default_factory=StructureSection)
    validate_cfg: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    shard: ShardConfig = Field(default_factory=ShardConfig)
    encoder: EncoderSection | None = Field(
        None, description="contrastive image-encoder training before LLaVA; its output becomes train.vision_path")
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    @model_validator(mode="after")
    def _one_vision_tower(self) -> PipelineConfig:
        if self.encoder is not None and self.train.vision_path is not None:
            raise ValueError("give either an encoder section (its output is the vision tower) or "
                             "train.vision_path, not both")
        return self

    def stage_hashes(self) -> dict[str, str]:
        """Each stage's key: its own section + every upstream key. `out`, `name`, `workers`, `dask_address`
        change where or how fast, not what, so they are left out."""
        h: dict[str, str] = {}
        h["ingest"] = config_hash("ingest", self.data)
        h["structure"] = config_hash("structure", h["ingest"], self.structure)
        h["shard"] = config_hash("shard", LAYOUT_VERSION, h["structure"], self.validate_cfg, self.shard)
        if self.encoder is None:  # configs without an encoder keep the keys they always had
            h["train"] = config_hash("train", h["shard"], self.train)
        else:
            # where it runs (the deployment) is not what it produces
            h["encoder"] = config_hash("encoder", h["shard"], self.encoder.model_dump(mode="json", exclude={"deployment"}))
            h["train"] = config_hash("train", h["shard"], h["encoder"], self.train)
        # a config without a chexprompt checkout keeps the key it had before that field existed
        unset = {"chexprompt_src"} if self.evaluate.chexprompt_src is None else set()
        h["evaluate"] = config_hash("evaluate", h["train"], self.evaluate.model_dump(mode="json", exclude=unset))
        return h

    def stage_dirs(self) -> dict[str, Path]:
        return {s: Path(self.out) / "stages" / f"{s}-{k}" for s, k in self.stage_hashes().items()}


# Ours, not OmegaConf.from_dotlist + merge: on the same overrides both give the same values, but OmegaConf
# silently turns a scalar into a section (`train.preset.x=1` -> preset {"x": 1}) where this names the mistake,
# and it would be a new dependency for 25 lines (bench/bench_library_checks.py, BENCHMARKS.md).
def set_dotted(d: dict, key: str, value: Any) -> None:
    """`train.stage2.lora_r` -> d["train"]["stage2"]["lora_r"] = value (creating dicts on the way)."""
    parts = key.split(".")
    if len(parts) > MAX_DEPTH:  # the nesting cap the YAML/JSON loaders apply, for a dotted key too
        raise ValueError(f"override key nested deeper than {MAX_DEPTH} levels")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"override {key!r}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(base: dict, overrides: dict[str, Any]) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        set_dotted(out, k, v)
    return out


_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(text: str, empty: str = "x") -> str:
    """Artifact keys and run names: lowercase letters, digits and dashes (docs/pitfalls.md); `empty` when
    nothing is left."""
    return _SLUG_RE.sub("-", text.lower()).strip("-") or empty


class AblationSpec(BaseModel):
    """A base pipeline config plus named variants (dotted-key overrides). The first variant is the baseline
    unless `baseline` names another."""

    model_config = ConfigDict(extra="forbid")
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    name: str
    description: str = ""
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    baseline: str | None = None
    metrics: list[str] = Field(
        default_factory=lambda: ["rouge_l", "bleu_4", "rule_f1_micro_14", "rule_f1_micro_5"],
        description="metrics charted and tested against the baseline (others still in the table)",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_seeds(cls, data: Any) -> Any:
        """`train.seeds: [0, 1, 2]` (in `base` or a variant) makes one variant per training seed, named
        `<variant>-seed<S>` with `train.seed: S`; the baseline becomes its first seed's variant. Then the CIs
        (test-sample variance) sit beside the spread over training seeds (tasks/report)."""
        if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
            return data
        base = copy.deepcopy(data.get("base") or {})
        base_seeds = (base.get("train") or {}).pop("seeds", None) if isinstance(base.get("train"), dict) else None
        variants, firsts = {}, {}
        for name, ov in data["variants"].items():
            ov = dict(ov or {})
            seeds = ov.pop("train.seeds", base_seeds)
            if not seeds:
                variants[name] = ov
                continue
            if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds):
                raise ValueError(f"variant {name}: train.seeds must be a list of integers")
            for seed in seeds:
                variants[f"{name}-seed{seed}"] = {**ov, "train.seed": seed}
            firsts[name] = f"{name}-seed{seeds[0]}"
        baseline = data.get("baseline") or next(iter(data["variants"]))
        return {**data, "base": base, "variants": variants, "baseline": firsts.get(baseline, baseline)}

    @model_validator(mode="after")
    def _check(self) -> AblationSpec:
        if self.baseline is None:
            self.baseline = next(iter(self.variants))
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not a variant")
        if len({slug(v) for v in self.variants}) != len(self.variants):
            raise ValueError("variant names must differ after lowercasing/slugging")
        for v in self.variants:  # fail early on a bad override, not in the middle of the ablation
            self.variant_config(v)
        return self

    def variant_config(self, variant: str) -> PipelineConfig:
        cfg = apply_overrides(self.base, self.variants[variant])
        cfg["name"] = f"{self.name}-{variant}"
        return PipelineConfig.model_validate(cfg)


def load_yaml(path: Path) -> dict:
    """A YAML mapping; a file that is missing, not UTF-8, not YAML or not a mapping is a UserError (one line)."""
    from schemas.errors import UserError

    path = Path(path)
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{path} does not exist" if not path.exists() else f"{path} is a folder") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (expected YAML)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def load_pipeline_config(path: Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(apply_overrides(load_yaml(path), overrides or {}))


def load_ablation_spec(path: Path, base_overrides: dict[str, Any] | None = None) -> AblationSpec:
    """Load a spec; `base:` may be a mapping or a path to a pipeline YAML (relative to the spec's folder or
    the working directory)."""
    data = load_yaml(path)
    base = data.get("base")
    if isinstance(base, str):
        candidate = Path(path).parent / base
        data["base"] = load_yaml(candidate if candidate.exists() else Path(base))
    data["base"] = apply_overrides(data["base"], base_overrides or {})
    return AblationSpec.model_validate(data)
