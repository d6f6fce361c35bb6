"""Configuration models. Flows take these as parameters, so the Prefect UI shows and validates them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.finite import finite_check

DEFAULT_ARTIFACTS = Path("artifacts")


# Option names that would hold a secret itself (a `*_secret` option names a Prefect Secret block: allowed).
_SECRET_KEY = re.compile(r"(?i)(password|passwd|token|api[-_]?key|credentials?|salt)$")


def no_secrets_in_options(options: dict) -> dict:
    """Source options are flow parameters (stored in Prefect's database, shown in its UI): a salt or a URL
    carrying user:password@ must come from the environment or a Prefect Secret block instead. The value is
    never echoed."""
    if any(str(k).lower() == "salt" for k in options):  # "Salt" too: unused, it would still be stored
        raise ValueError(
            "options.salt is refused: options are stored with the run's parameters; set the environment "
            "variable CXRFLOW_PHI_SALT or options.salt_secret (the name of a Prefect Secret block)"
        )
    for key, value in options.items():
        if _SECRET_KEY.search(str(key)):
            raise ValueError(
                f"options.{key} is refused: options are stored with the run's parameters; give the value through "
                "the environment or name a Prefect Secret block (e.g. options.password_secret)"
            )
        if isinstance(value, str) and "://" in value and "@" in urlsplit(value).netloc:
            raise ValueError(
                f"options.{key} is refused: a URL must not carry user:password@ (it would be stored with the "
                "run's parameters); set CXRFLOW_DICOMWEB_USER and CXRFLOW_DICOMWEB_PASSWORD instead"
            )
    return options


SourceOptions = Annotated[dict, AfterValidator(no_secrets_in_options)]


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
    (the data section, a mixture, or a command's --all-views) and derived everywhere else
    (schemas/shards.py, ValidateConfig.for_data)."""

    frontal_only: bool = Field(
        True, description="keep AP/PA films only (validation then expects them); false keeps laterals too"
    )


class Parallelism(BaseModel):
    """Where and how fast ingest runs, not what it produces: never part of a stage key. Every entry point
    (pipeline, data flow, ingest, mixtures) picks its task runner from these by flows/runners.py runner_for."""

    workers: int | None = Field(None, ge=1, description="ingest processes; default all cores")
    dask_address: str | None = Field(None, description="Dask scheduler for ingest's chunks (tcp://host:8786)")

    def parallelism(self) -> dict:
        return {k: getattr(self, k) for k in Parallelism.model_fields}


class SourceSettings(BaseModel):
    """Which source and how much of it (one source; a mixture lists SourceSpecs instead)."""

    source: str = "mimic-cxr"
    limit: int | None = Field(None, ge=1, description="cap on candidate images (mixtures, smoke runs)")
    options: SourceOptions = Field(default_factory=dict, description="source-specific options")
    annotations: list[Path] = Field(
        default_factory=list,
        description="LLaVA-Rad MIMIC-CXR Annotations JSON files (or folders of them): the released report texts "
        "replace report structuring (mimic-cxr only; the report-processing ablation's GPT-4 arm)",
    )

    @model_validator(mode="after")
    def _annotations_for_mimic(self) -> SourceSettings:
        if self.annotations and self.source != "mimic-cxr":
            raise ValueError(f"annotations are LLaVA-Rad's MIMIC-CXR texts; source is {self.source!r}")
        return self


class IngestSettings(ViewPolicy):
    """How any source is ingested (views, pixels, batching, splits): one model shared by IngestConfig,
    MixtureConfig, the pipeline's `data` section and the `data` flow's parameters."""

    image: ImageConfig = Field(default_factory=ImageConfig)
    batch_size: int = Field(
        32, ge=1, description="images between progress updates inside a chunk, and the smallest chunk (one task "
        "run per chunk, a few chunks per worker: tasks/ingest.py)"
    )
    split_ratios: tuple[float, float, float] = Field(
        (0.9, 0.05, 0.05), description="train/validate/test for sources without an official split"
    )
    verify_checksums: bool = Field(
        False, description="hash every file the root's SHA256SUMS.txt lists and compare (default: a fixed sample "
        "of about 1 in 64; tasks/source_hashes.py); a mismatch is quarantined"
    )

    def ingest_settings(self) -> dict:
        """These settings as keyword arguments of another ingest model (the one way they are passed on)."""
        return {k: getattr(self, k) for k in IngestSettings.model_fields}


class IngestConfig(SourceSettings, IngestSettings, Parallelism):
    """One source ingested into one manifest."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    root: Path
    out: Path


ReportPolicy = Literal["auto", "structure", "synthesize"]


class SourceSpec(BaseModel):
    """One source of a mixture."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo

    name: str = Field(description="registered adapter name, e.g. mimic-cxr, chexpert, padchest")
    root: Path
    cap: int | None = Field(None, ge=1, description="at most this many candidate images from this source")
    frontal_only: bool | None = Field(None, description="overrides the mixture's setting")
    report_policy: ReportPolicy = Field(
        "auto",
        description="auto: structure free-text reports, synthesize for label-only rows; synthesize: write reports "
        "from labels even where text exists (the text is kept); structure: as auto",
    )
    options: SourceOptions = Field(default_factory=dict, description="adapter options")


class SourceSelection(SourceSettings, ViewPolicy):
    """Which data a run reads and which of it it keeps: one source (`source` + `root`) or a mixture (`sources`).
    Shared by the pipeline's `data` section and the `data` flow's parameters."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    root: Path | None = Field(None, description="the source as released; omit when `sources` lists a mixture")
    sources: list[SourceSpec] = Field(
        default_factory=list, description="several sources into one manifest (a mixture); replaces source/root"
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


class MixtureConfig(IngestSettings, Parallelism):
    """Several sources ingested into one manifest with a `source` column."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    sources: list[SourceSpec] = Field(min_length=1)
    out: Path

    def source_out(self, spec: SourceSpec) -> Path:
        return self.out / "sources" / spec.name

    def ingest_config(self, spec: SourceSpec) -> IngestConfig:
        view = {} if spec.frontal_only is None else {"frontal_only": spec.frontal_only}
        return IngestConfig(
            **{**self.ingest_settings(), **view},
            **self.parallelism(),
            source=spec.name,
            root=spec.root,
            out=self.source_out(spec),
            limit=spec.cap,
            options=spec.options,
        )
