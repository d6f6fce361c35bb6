"""The image encoder stage: contrastive (CLIP) image-text training of an open_clip model on the shards,
run by open_clip's own training engine (open_clip_train), then retrieval evaluation (docs/encoder.md).

ENC/ (the stage dir) holds `open_clip/` (open_clip_config.json + open_clip_pytorch_model.bin: what the LLaVA
presets take as `vision_path`), `encoder-run.json` (config hash, shard index hashes, data accounting),
`engine/` (open_clip_train's logs and checkpoints: a killed run resumes from the latest), `retrieval/`
(metrics.json + per-query ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.finite import finite_check

TINY = "tiny"


class EncoderSection(BaseModel):
    """The pipeline's `encoder:` section (omit it: the LLaVA stages use the preset's own vision tower)."""

    model_config = ConfigDict(extra="forbid")
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    init: str = Field(
        TINY,
        description="`tiny` (random CPU config) or a local open_clip dir (BiomedCLIP format: "
        "open_clip_config.json + open_clip_pytorch_model.bin) to continue from",
    )
    sources: list[str] | None = Field(None, description="train on these sources only (None: every source)")
    epochs: int = Field(1, ge=0, description="0: no training, the starting model as it is (random or local)")
    samples_per_epoch: int | None = Field(
        None,
        ge=1,
        description="samples drawn (with replacement of shards) per epoch; None: the train split size",
    )
    batch_size: int = Field(
        64, ge=2, description="per process (CLIP's contrastive batch is the global batch)"
    )
    lr: float = Field(5e-4, gt=0)
    wd: float = Field(0.2, ge=0)
    warmup: int = Field(0, ge=0, description="warmup steps")
    precision: Literal["auto", "fp32", "amp", "amp_bf16", "bf16"] = Field(
        "auto", description="auto: amp_bf16 on CUDA, else fp32"
    )
    nproc: int = Field(1, ge=1, description="processes per node (torchrun), one per GPU")
    workers: int = Field(0, ge=0, description="dataloader workers per process")
    grad_checkpointing: bool = Field(
        False, description="activation checkpointing (518-px ViT-B at batch 256/GPU)"
    )
    seed: int = 0
    deployment: str = Field(
        "encoder/encoder-gpu", description="GPU work pool deployment a non-tiny encoder is handed to"
    )
    eval_split: str = "test"
    n_bootstrap: int = Field(500, ge=0, le=100_000)  # bootstrap memory grows with it: 1e9 is a mistake
    zero_shot: bool = True


class EncoderConfig(EncoderSection):
    """Parameters of the `encoder` flow: the section plus where the shards are and where the stage writes."""

    shards: Path = Field(description="SHARDS dir of the shard contract")
    out: Path = Field(description="stage dir ENC")
    key: str = Field("", description="the stage's config hash (recorded in encoder-run.json)")

    @model_validator(mode="after")
    def _init_exists(self) -> EncoderConfig:
        if self.init != TINY and not (Path(self.init) / "open_clip_config.json").is_file():
            raise ValueError(
                f"encoder.init {self.init}: not `tiny` and no open_clip_config.json there "
                "(a local BiomedCLIP-format directory; nothing is downloaded)"
            )
        return self

    def resolved_precision(self, cuda: bool) -> str:
        if self.precision != "auto":
            return self.precision
        return "amp_bf16" if cuda else "fp32"
