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


class IngestConfig(BaseModel):
    """One source ingested into one manifest."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    source: str = "mimic-cxr"
    root: Path
    out: Path
    frontal_only: bool = True
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
    options: SourceOptions = Field(default_factory=dict, description="source-specific options")
    annotations: list[Path] = Field(
        default_factory=list,
        description="LLaVA-Rad MIMIC-CXR Annotations JSON files (or folders of them): the released report texts "
        "replace report structuring (mimic-cxr only)",
    )
    verify_checksums: bool = Field(
        False, description="hash every file the root's SHA256SUMS.txt lists and compare (default: a fixed sample "
        "of about 1 in 64; tasks/source_hashes.py); a mismatch is quarantined"
    )

    @model_validator(mode="after")
    def _annotations_for_mimic(self) -> IngestConfig:
        if self.annotations and self.source != "mimic-cxr":
            raise ValueError(f"annotations are LLaVA-Rad's MIMIC-CXR texts; source is {self.source!r}")
        return self


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


class SourceSelection(BaseModel):
    """Which data a run reads and which of it it keeps: one source (`source` + `root`) or a mixture (`sources`).
    Shared by the pipeline's `data` section and the `data` flow's parameters."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    source: str = "mimic-cxr"
    root: Path | None = Field(None, description="the source as released; omit when `sources` lists a mixture")
    sources: list[SourceSpec] = Field(
        default_factory=list, description="several sources into one manifest (a mixture); replaces source/root"
    )
    frontal_only: bool = True
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


class MixtureConfig(BaseModel):
    """Several sources ingested into one manifest with a `source` column."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # options: never echo
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    sources: list[SourceSpec] = Field(min_length=1)
    out: Path
    frontal_only: bool = True
    image: ImageConfig = Field(default_factory=ImageConfig)
    workers: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    split_ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)
    verify_checksums: bool = False

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
            verify_checksums=self.verify_checksums,
        )
