"""Configuration models. Flows take these as parameters, so the Prefect UI shows and validates them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_ARTIFACTS = Path("artifacts")


class ImageConfig(BaseModel):
    """How source pixels become the stored training image."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(518, ge=16, le=4096, description="output side in pixels (LLaVA-Rad: 518)")
    resize: Literal["crop", "pad"] = Field(
        "crop", description="crop: shortest side to size then center crop (LLaVA-Rad); pad: longest side to size, pad to square"
    )
    format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=1, le=100)
    exact: bool = Field(
        False,
        description="decode every source at full resolution; off: JPEG 2000 and JPEG sources decode only the "
        "resolution the output needs (docs/decoding.md gives the error bound)",
    )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


class ViewPolicy(BaseModel):
    """Which views a run keeps: ingest filters by it and validation expects it, so it is set in one place
    (the data section, a mixture, or a command's --all-views) and derived everywhere else (tasks/plan.py)."""

    frontal_only: bool = Field(
        True, description="keep AP/PA films only (validation then expects them); false keeps laterals too"
    )


class IngestConfig(ViewPolicy):
    """One source ingested into one manifest."""

    model_config = ConfigDict(extra="forbid")

    source: str = "mimic-cxr"
    root: Path
    out: Path
    image: ImageConfig = Field(default_factory=ImageConfig)
    workers: int | None = Field(None, ge=1, description="processes; default all cores")
    batch_size: int = Field(
        32, ge=1, description="images between progress updates inside a chunk, and the smallest chunk (one task "
        "run per chunk, a few chunks per worker: tasks/ingest.py)"
    )
    limit: int | None = Field(None, ge=1, description="cap on candidate images (mixtures, smoke runs)")
    split_ratios: tuple[float, float, float] = Field(
        (0.9, 0.05, 0.05), description="train/validate/test for sources without an official split"
    )
    options: dict = Field(default_factory=dict, description="source-specific options")
    annotations: list[Path] = Field(
        default_factory=list,
        description="LLaVA-Rad MIMIC-CXR Annotations JSON files (or folders of them): the released report texts "
        "replace report structuring (mimic-cxr only)",
    )

    @model_validator(mode="after")
    def _annotations_for_mimic(self) -> IngestConfig:
        if self.annotations and self.source != "mimic-cxr":
            raise ValueError(f"annotations are LLaVA-Rad's MIMIC-CXR texts; source is {self.source!r}")
        return self


ReportPolicy = Literal["auto", "structure", "synthesize"]


class SourceSpec(BaseModel):
    """One source of a mixture."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered adapter name, e.g. mimic-cxr, chexpert, padchest")
    root: Path
    cap: int | None = Field(None, ge=1, description="at most this many candidate images from this source")
    frontal_only: bool | None = Field(None, description="overrides the mixture's setting")
    report_policy: ReportPolicy = Field(
        "auto",
        description="auto: structure free-text reports, synthesize for label-only rows; synthesize: write reports "
        "from labels even where text exists (the text is kept); structure: as auto",
    )
    options: dict = Field(default_factory=dict, description="adapter options")


class SourceSelection(ViewPolicy):
    """Which data a run reads and which of it it keeps: one source (`source` + `root`) or a mixture (`sources`).
    Shared by the pipeline's `data` section and the `data` flow's parameters."""

    model_config = ConfigDict(extra="forbid")

    source: str = "mimic-cxr"
    root: Path | None = Field(None, description="the source as released; omit when `sources` lists a mixture")
    sources: list[SourceSpec] = Field(
        default_factory=list, description="several sources into one manifest (a mixture); replaces source/root"
    )
    limit: int | None = Field(None, ge=1, description="cap on candidate images")
    annotations: list[Path] = Field(
        default_factory=list,
        description="LLaVA-Rad MIMIC-CXR Annotations JSON files/folders: the released texts replace report "
        "structuring (the report-processing ablation's GPT-4 arm)",
    )

    @model_validator(mode="after")
    def _one_input(self) -> SourceSelection:
        if (self.root is None) == (not self.sources):
            raise ValueError("data: give either root (one source) or sources (a mixture), not both or neither")
        return self

    def source_names(self) -> list[str]:
        """The sources this selection reads: the mixture's, in order, or the one source."""
        return [s.name for s in self.sources] or [self.source]

    def expects_frontal_only(self) -> bool:
        """Validation's view policy: frontal only when every source ingested frontal only (a mixture source
        may keep every view; its laterals must not be quarantined)."""
        return self.frontal_only and all(s.frontal_only is not False for s in self.sources)


class MixtureConfig(ViewPolicy):
    """Several sources ingested into one manifest with a `source` column."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceSpec] = Field(min_length=1)
    out: Path
    image: ImageConfig = Field(default_factory=ImageConfig)
    workers: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    split_ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)

    def source_out(self, spec: SourceSpec) -> Path:
        return self.out / "sources" / spec.name

    def ingest_config(self, spec: SourceSpec) -> IngestConfig:
        return IngestConfig(
            source=spec.name,
            root=spec.root,
            out=self.source_out(spec),
            frontal_only=self.frontal_only if spec.frontal_only is None else spec.frontal_only,
            image=self.image,
            workers=self.workers,
            batch_size=self.batch_size,
            limit=spec.cap,
            split_ratios=self.split_ratios,
            options=spec.options,
        )
