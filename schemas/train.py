"""Training configuration (issue 5). The stage defaults are the LLaVA-Rad recipe (docs/recipe.md);
the `tiny` preset only shrinks batch sizes so a handful of fixture samples still make optimizer steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.finite import finite_check


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(1, ge=1)
    global_batch_size: int = Field(ge=1, description="micro_batch_size x grad accumulation x world size")
    micro_batch_size: int = Field(ge=1, description="samples per forward pass per process")
    # LoRA (stage 2 only); applied to every linear layer of the language model, never lm_head.
    lora_r: int = Field(64, ge=1)
    lora_alpha: int = Field(128, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def stage1_defaults(**kw) -> StageConfig:
    """Alignment: projector only, lr 1e-3, warmup 3%, cosine, wd 0, 1 epoch, global batch 256."""
    return StageConfig(**{"lr": 1e-3, "epochs": 1, "global_batch_size": 256, "micro_batch_size": 16, **kw})


def stage2_defaults(**kw) -> StageConfig:
    """Fine-tuning: LoRA r64/a128/0.05 + projector, lr 1e-4, 3 epochs, global batch 64."""
    return StageConfig(**{"lr": 1e-4, "epochs": 3, "global_batch_size": 64, "micro_batch_size": 4, **kw})


class TrainConfig(BaseModel):
    """One training run: one or both stages, written under `out`."""

    model_config = ConfigDict(extra="forbid")
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    shards: Path = Field(description="SHARDS dir of the shard contract ({split}.index.json + tars)")
    out: Path = Field(description="run dir: config.json, lineage.json, metrics.jsonl, checkpoints/, loss.png")
    preset: Literal["tiny", "llava-rad"] = "tiny"
    stages: list[Literal[1, 2]] = Field(default_factory=lambda: [1, 2])
    split: str = Field("train", description="the shard split trained on")
    stage1: StageConfig = Field(default_factory=stage1_defaults)
    stage2: StageConfig = Field(default_factory=stage2_defaults)
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps per stage (as in HF Trainer): epochs repeat as needed to take "
        "exactly this many, unless `epochs` is also set, which then caps them")
    epochs: int | None = Field(
        None, ge=1, description="epochs per stage, replacing the recipe's (stage1/stage2.epochs); with "
        "max_steps, a cap: whichever ends first")
    save_every: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept besides the final weights")
    seed: int = Field(0, description="every random stream of the run derives from it (training/seeds.py)")
    image_size: int = Field(0, ge=0, description="side of the image the encoder sees; 0 = the preset's native")
    image_resize: Literal["crop", "pad"] = Field(
        "crop", description="crop: shortest side then center crop (LLaVA-Rad); pad: pad to square first"
    )
    max_length: int = Field(0, ge=0, description="token cap per example; 0 = preset default")
    expand_targets: bool = Field(True, description="one example per findings version in K.json targets")
    shuffle_images: bool = Field(
        False, description="control: each training sample gets another sample's image (a fixed permutation "
        "of the split by `seed`), so image and report no longer match; evaluation still sees the true images"
    )
    num_workers: int = Field(0, ge=0, description="data loader processes")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA")
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", description="auto: on with CUDA")
    log_every: int = Field(1, ge=1, description="a metrics.jsonl row every N optimizer steps")
    # Real presets load from local directories only (never downloads).
    vision_path: Path | None = Field(None, description="HF CLIP vision dir, or open_clip dir (BiomedCLIP)")
    lm_path: Path | None = Field(None, description="causal LM dir (Vicuna-7B v1.5)")
    deployment: str = Field("train/train-gpu", description="GPU work pool deployment the `train` flow hands real "
                            "presets to")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.preset == "llava-rad" and (self.vision_path is None or self.lm_path is None):
            raise ValueError("preset llava-rad needs vision_path and lm_path (local directories)")
        for name in ("stage1", "stage2"):
            st: StageConfig = getattr(self, name)
            if st.global_batch_size % st.micro_batch_size:
                raise ValueError(f"{name}: global_batch_size must be a multiple of micro_batch_size")
        return self

    def stage(self, n: int) -> StageConfig:
        return self.stage1 if n == 1 else self.stage2

    def fingerprint(self) -> str:
        """Hash of everything that changes the optimisation (not `out`, step caps or logging). Not `stages`
        either: checkpoints are per stage, so `--stage 1` then `--stage 2` continue one run."""
        d = self.model_dump(mode="json", exclude={"out", "stages", "max_steps", "save_every", "keep_checkpoints",
                                                  "log_every", "num_workers", "deployment"})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


STAGE_CHOICES: tuple[str, ...] = ("1", "2", "both")  # --stage of both training CLIs


def config_from_options(shards: Path, out: Path, preset: str = "tiny", stage: str = "both",
                        config: Path | None = None, **overrides) -> TrainConfig:
    """The one way both training CLIs (`cxrflow train`, `python -m training`) turn their flags into a
    TrainConfig: a TrainConfig JSON (`config`) or the preset's defaults, then every flag given (None: not
    given) on top."""
    over = {"stages": [1, 2] if stage == "both" else [int(stage)],
            **{k: v for k, v in overrides.items() if v is not None}}
    if config is None:
        return default_config(preset, shards, out, **over)
    base = json.loads(Path(config).read_text())
    return TrainConfig.model_validate({**base, "shards": str(shards), "out": str(out), "preset": preset, **over})


def default_config(preset: str, shards: Path, out: Path, **overrides) -> TrainConfig:
    """Recipe defaults; `tiny` shrinks batches (a fixture has tens of samples, not 400K)."""
    kw: dict = {"shards": shards, "out": out, "preset": preset}
    if preset == "tiny":
        kw["stage1"] = stage1_defaults(global_batch_size=8, micro_batch_size=4)
        kw["stage2"] = stage2_defaults(global_batch_size=8, micro_batch_size=4, epochs=2, lr=1e-3)
        kw["save_every"] = 5
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kw)
