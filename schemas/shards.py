"""The shard contract (issue 4 writes it; training and evaluation read it) and the validate/shard configs.

A sample with key K (dot-free) is three tar members, in this order: `K.jpg` or `K.png` (the processed
image), `K.json` (every manifest field plus `targets` and `indication`, written without nulls:
schemas/sample_json.py), `K.txt` (the primary training target: findings). Shards are `data/{split}-NNNNN-of-NNNNN.tar` (the Hugging Face Hub layout, so
`datasets.load_dataset(SHARDS)` and `load_dataset("webdataset", data_dir=SHARDS)` read the tars and nothing
else); beside `data/`: `{split}.index.json` (wids), `shards.parquet` (key -> shard), `summary.json`. Split
names in file names are the ones Hugging Face expects (`validation`); the manifest keeps the source's own
(`validate`, as MIMIC-CXR's split file spells it): `shard_split` maps one to the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from schemas.config import DEFAULT_ARTIFACTS, SourceSelection
from schemas.finite import finite_check
from schemas.llm import EndpointURL

SPLITS: tuple[str, ...] = ("train", "validate", "test")  # manifest `split` values
SHARD_SPLITS: dict[str, str] = {"train": "train", "validate": "validation", "test": "test"}
# A split as users name it: the shard name (`validation`) or the manifest's (`validate`).
SplitName = Literal["train", "validation", "validate", "test"]
SHARD_DIR = "data"
# Bumped when the folder layout changes, so a pipeline does not reuse a shard stage written in another one
# (2: tars under data/ with Hub names, split `validation`; 3: README.md dataset card declaring the features;
# 4: K.json without nulls, labels in `chexpert_labels`; 5: K.json's `absent` names the fields that were null).
LAYOUT_VERSION = 5


def shard_split(split: str) -> str:
    """Manifest split -> the split name of shard files, indexes and exports (`validate` -> `validation`);
    a name already in shard form passes through."""
    return SHARD_SPLITS.get(split, split)

# Tar member extension of the image, by manifest image_format.
IMAGE_EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "jpg": "jpg", "png": "png"}

# Methods a findings version can carry in `targets`; LLM versions are "<backend>:<model>".
RULE_BASED = "rule-based"
SYNTHESIZED = "synthesized-rules"


# Preference for the `.txt` member: rule-based, then any LLM version, then synthesized-from-labels.
def target_rank(method: str) -> int:
    if method == RULE_BASED:
        return 0
    if method == SYNTHESIZED:
        return 2
    return 1


SHARD_NAME_RE = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.tar$")  # under SHARD_DIR
LEGACY_SHARD_NAME_RE = re.compile(r"^(train|validate|test)-(\d{6})\.tar$")  # flat layout before data/


def shard_name(split: str, index: int, total: int) -> str:
    """Path of a shard relative to SHARDS: `data/train-00000-of-00003.tar`."""
    return f"{SHARD_DIR}/{shard_split(split)}-{index:05d}-of-{total:05d}.tar"


def index_name(split: str) -> str:
    return f"{shard_split(split)}.index.json"


# Fixed tar header fields so identical input gives byte-identical shards.
TAR_MTIME = 0
TAR_MODE = 0o444
TAR_USER = "cxrflow"
TAR_GROUP = "cxrflow"

# SHARDS/shards.parquet: where every sample lives.
SHARD_MAP_SCHEMA = pa.schema(
    [
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("index_in_shard", pa.int32(), nullable=False),
        pa.field("image_member", pa.string(), nullable=False),
        pa.field("primary_method", pa.string(), nullable=False),
        pa.field("n_targets", pa.int8(), nullable=False),
    ]
)


class ValidateConfig(BaseModel):
    """Expectations on the manifest and the structured reports."""

    model_config = ConfigDict(extra="forbid")

    frontal_only: bool = Field(True, description="expect view in {AP, PA}")
    findings_min_chars: int = Field(10, ge=1)
    findings_max_chars: int = Field(4000, ge=1)
    min_side: int = Field(16, ge=1, description="smallest allowed image width/height in pixels")
    max_side: int = Field(4096, ge=1)
    min_rows_fraction_of_found: float = Field(
        0.2, ge=0, le=1, description="manifest rows below this share of ingest's `found` fail the run"
    )
    max_quarantine_fraction: float = Field(
        0.5, ge=0, le=1, description="more rows quarantined than this share of the manifest fails the run"
    )
    test_methods: tuple[str, ...] = Field(
        (RULE_BASED,), description="findings versions allowed on the test split (LLaVA-Rad: rule-based)"
    )
    train_methods: tuple[str, ...] | None = Field(
        None, description="findings versions allowed on train/validate (None: all; the report-processing "
        "ablation trains on one kind, e.g. [gpt4] or [rule-based])"
    )


class ShardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(None, ge=1, description="shards written in parallel (default min(4, cores))")
    max_samples: int = Field(10_000, ge=1, description="samples per shard")
    max_bytes: int = Field(
        1_000_000_000, ge=4096, description="bytes per shard (a single larger sample still fits)"
    )


class ValidateShardParams(BaseModel):
    """Parameters of the `validate_and_shard` flow."""

    model_config = ConfigDict(extra="forbid")
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    data: Path = Field(description="folder with manifest.parquet (+ reports.parquet, summary.json)")
    out: Path = Field(description="SHARDS folder")
    artifacts: Path = Field(
        DEFAULT_ARTIFACTS, description="artifacts root; the GX context lives in <root>/gx"
    )
    validate_cfg: ValidateConfig = Field(default_factory=ValidateConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    export_llava: bool = True
    llava_image_root: Path | None = Field(
        None, description="absolute folder the LLaVA JSON's image paths start with (default: relative to the JSON)"
    )
    llava_nan_labels: bool = Field(False, description="NaN for unmentioned labels as the release (invalid JSON)")


class DataParams(SourceSelection):
    """Parameters of the `data` flow: ingest -> structure -> validate_and_shard, all under one OUT folder."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a URL may hold a key

    out: Path = Field(
        description="OUT/data (manifest, images, reports), OUT/shards, OUT/artifacts (GX, LLM cache)"
    )
    image_size: int = Field(518, ge=16, le=4096)
    workers: int | None = Field(None, ge=1)
    llm_backend: str = Field("rules", description="structure backend: rules (default), openai or azure")
    llm_model: str = "gpt-4o"
    llm_base_url: EndpointURL | None = None
    shard: ShardConfig = Field(default_factory=ShardConfig)
