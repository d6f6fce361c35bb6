"""What a source adapter gives the ingest engine.

An adapter reads a dataset's released layout and returns a `Discovery`: the candidate images (with ids,
split, view, labels, raw report text) and the images it already dropped, each with a reason. The engine
then decodes pixels, parses reports and writes the manifest; it never needs to know the source's layout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from schemas.config import IngestConfig
from schemas.errors import UserError
from schemas.manifest import FRONTAL_VIEWS

ImageKind = Literal["dicom", "png", "jpeg"]
ReportOrigin = Literal["report", "labels", "none"]

NOT_FRONTAL = "not frontal"  # the one filter reason category of the view policy


class SourceLayoutError(UserError):
    """The root is missing or malformed: raised before any work, naming the missing file or column.
    A user error (a ValueError too): the CLI prints it as one line and exits 2."""


@dataclass
class Candidate:
    """One image found on disk and joined with its metadata, not yet decoded."""

    source: str
    path: Path  # absolute path of the image file
    rel_path: str  # path relative to the source root (lineage; never PHI)
    image_id: str
    subject_id: str
    study_id: str
    split: str
    kind: ImageKind
    view: str | None = None
    orientation: str | None = None
    labels: dict[str, int | None] = field(default_factory=dict)  # CheXpert name -> 1/0/-1/None
    report_text: str | None = None
    report_origin: ReportOrigin = "report"
    report_method: str | None = None  # set when the adapter already structured the text
    sections: dict[str, str | None] | None = None  # pre-split sections (e.g. Open-I XML), else parsed
    report_language: str | None = None  # ISO 639-1 when not English
    source_labels: list[str] | None = None  # the source's own label vocabulary, verbatim
    expected_size: tuple[int, int] | None = None  # (Rows, Columns) from the source's metadata, checked at decode

    @property
    def image_key(self) -> str:
        return make_key(self.source, self.image_id)


@dataclass
class Drop:
    """An input that was filtered (policy) or quarantined (defect), with a human-readable reason."""

    source: str
    source_path: str
    stage: str
    reason: str
    image_key: str | None = None

    def as_row(self) -> dict:
        return {
            "source": self.source,
            "source_path": self.source_path,
            "stage": self.stage,
            "reason": self.reason,
            "image_key": self.image_key,
        }


def reason_category(reason: str | None) -> str:
    """What by-reason summaries count: the text before the first colon ("not frontal: view LATERAL" -> "not
    frontal"), at most 80 characters; "unknown" for a missing reason."""
    return (reason or "unknown").split(":", 1)[0].strip()[:80]


@dataclass
class Discovery:
    candidates: list[Candidate] = field(default_factory=list)
    filtered: list[Drop] = field(default_factory=list)
    quarantined: list[Drop] = field(default_factory=list)
    # Facts that are not part of the reconciliation (e.g. metadata rows whose file is absent).
    notes: dict = field(default_factory=dict)
    # Released report texts joined onto the candidates (tasks/reports/annotations.py); None when not asked.
    annotations: list[dict] | None = None
    # The ingest engine's form: candidates spilled to a file in bounded batches (tasks/candidates.Spill), with
    # `candidates` left empty.
    spill: Any = None

    @property
    def found(self) -> int:
        spilled = len(self.spill) if self.spill is not None else 0
        return len(self.candidates) + spilled + len(self.filtered) + len(self.quarantined)


# `cxrflow fixtures <command>` writing a synthetic copy of each source's release (none for a PACS).
FIXTURE_COMMANDS = {"mimic-cxr": "mimic-cxr", "chexpert": "chexpert", "chexpert-plus": "chexpert",
                    "padchest": "padchest", "chestxray14": "chestxray14", "brax": "brax", "vindr-cxr": "vindr-cxr",
                    "candid-ptx": "candid-ptx", "openi": "openi"}


def require_root(root: Path, source: str | None = None) -> Path:
    """check() starts here: a missing root is named before anything else is looked at, with the command that
    writes a synthetic copy there (a fresh clone has no dataset)."""
    root = Path(root)
    if not root.is_dir():
        fixture = FIXTURE_COMMANDS.get(source or "")
        hint = (f"point it at the released dataset, or write a synthetic one for a trial: "
                f"`cxrflow fixtures {fixture} --out {root}`") if fixture else None
        raise SourceLayoutError(f"source root does not exist: {root}", hint)
    return root


def require_columns(columns: list[str], required: tuple[str, ...] | list[str], where: Path) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise SourceLayoutError(f"{where.name}: missing column(s) {', '.join(repr(c) for c in missing)}")


class SourceAdapter(Protocol):
    name: str
    # May the data leave the premises? False for credentialed data (PhysioNet): LLM calls are then
    # limited to loopback/private or explicitly allowed endpoints.
    may_leave_premises: bool
    licence: str

    def check(self, root: Path, options: dict | None = None) -> None:
        """Raise SourceLayoutError naming the missing file or column, before any work. `options` are the
        ingest options (cfg.options), which some sources read their layout or server from."""

    def discover(self, cfg: IngestConfig) -> Discovery:
        """Find every image under cfg.root and join it with the source's metadata. The engine has run
        check() first, and applies the view policy and `limit` afterwards (tasks/ingest.py `discover`)."""

    def discover_batches(self, cfg: IngestConfig) -> tuple[Discovery, Iterator[list[Candidate]]]:
        """discover() as a Discovery without candidates plus the candidates in bounded batches; its drops and
        notes are complete once the batches are consumed. What the engine calls (BaseAdapter's default wraps
        discover(); an archive-scale adapter streams: tasks/sources/mimic_cxr.py)."""


class BaseAdapter:
    """What every adapter shares: check() names a missing root (one message for every source), then runs the
    source's own `check_layout`; `filter`/`quarantine` build the Drops. Subclasses parse their release."""

    name: str
    may_leave_premises: bool
    licence: str
    remote: bool = False  # discover fetches over the network: the flow retries it (flows/tasking.py)

    def check(self, root: Path, options: dict | None = None) -> None:
        self.check_layout(require_root(root, self.name), options)

    def check_layout(self, root: Path, options: dict | None) -> None:
        """Raise SourceLayoutError naming the missing file or column (root exists)."""

    def filter(self, out: Discovery, rel: str, reason: str, key: str | None = None) -> None:
        out.filtered.append(Drop(self.name, rel, "discover", reason, key))

    def quarantine(self, out: Discovery, rel: str, reason: str, key: str | None = None) -> None:
        out.quarantined.append(Drop(self.name, rel, "discover", reason, key))

    def discover_batches(self, cfg: IngestConfig) -> tuple[Discovery, Iterator[list[Candidate]]]:
        return in_batches(self.discover(cfg))


BATCH = 8192  # candidates per discovery batch (tasks/candidates.py spills each)


def in_batches(discovery: Discovery) -> tuple[Discovery, Iterator[list[Candidate]]]:
    """A listed discovery in discover_batches' form (for adapters that list every candidate at once)."""
    cands, discovery.candidates = discovery.candidates, []
    return discovery, (cands[i : i + BATCH] for i in range(0, len(cands), BATCH))


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(source: str, image_id: str) -> str:
    """A sample key with no dots (WebDataset splits keys at the first dot) and no path separators."""
    return f"{_KEY_UNSAFE.sub('-', source)}_{_KEY_UNSAFE.sub('-', image_id).strip('-')}"


def quarantine_key_collisions(discovery: Discovery) -> None:
    """Inputs whose ids map to one key (ids differing only in characters a key cannot hold, '.' vs '-', or
    one id named twice) are all quarantined with the reason: a merge would silently drop one of them."""
    groups: dict[str, list[Candidate]] = {}
    for c in discovery.candidates:
        groups.setdefault(c.image_key, []).append(c)
    clashes = {k: cs for k, cs in groups.items() if len(cs) > 1}
    if not clashes:
        return
    discovery.candidates = [c for c in discovery.candidates if c.image_key not in clashes]
    for key, cs in clashes.items():
        ids = ", ".join(sorted({repr(c.image_id) for c in cs}))
        reason = f"image key collision: {len(cs)} inputs (ids {ids}) map to the key {key}"
        discovery.quarantined += [Drop(c.source, c.rel_path, "discover", reason, key) for c in cs]


MAX_REPORT_BYTES = 64 * 1024  # a chest X-ray report is a few KB; far larger is a mis-joined or binary file
_CONTROL_IN_ID = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # reports keep tab and newlines


def unusable_reason(c: Candidate) -> str | None:
    """Why a candidate's own fields cannot go on (every adapter, checked once by the engine), else None."""
    for name in ("image_id", "subject_id", "study_id", "rel_path"):
        if _CONTROL_IN_ID.search(str(getattr(c, name) or "")):
            return f"control characters in the source's metadata: {name}"
    if not _KEY_UNSAFE.sub("-", c.image_id).strip("-"):
        return f"image id has no key characters: {c.image_id!r} would make the empty key {c.image_key}"
    text = c.report_text or ""
    if text and _CONTROL_IN_TEXT.search(text):
        return "control characters in the report text (corrupt or binary file)"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_REPORT_BYTES:
        return f"report too large: {size} bytes, over {MAX_REPORT_BYTES}"
    return None


def quarantine_unusable(discovery: Discovery, cands: list[Candidate] | None = None) -> list[Candidate]:
    """Quarantine candidates with control characters in their ids or report, an id that makes an empty key,
    or an absurdly large report (each a quarantine row with its reason, so every input stays accounted).
    `cands`: one batch (the engine's spilled discovery), returned without them; default discovery.candidates,
    replaced in place."""
    kept: list[Candidate] = []
    for c in discovery.candidates if cands is None else cands:
        reason = unusable_reason(c)
        if reason:
            discovery.quarantined.append(Drop(c.source, c.rel_path, "discover", reason, c.image_key))
        else:
            kept.append(c)
    if cands is None:
        discovery.candidates = kept
    return kept


def view_filter(discovery: Discovery, cands: list[Candidate], frontal_only: bool) -> list[Candidate]:
    """The one view policy, applied by the engine to every source, batch by batch (adapters only report
    `view`): the kept candidates; the others go to discovery.filtered.

    Under frontal_only a film is kept only when its release states a frontal view (AP, PA, or frontal without
    AP/PA); every other film, an unknown view included, is filtered with one reason text. This is the paper's
    selection (LLaVA-Rad keeps MIMIC-CXR rows whose view is AP or PA, so a blank ViewPosition is out:
    docs/datasets.md). view_notes: notes["view_unknown"] counts the films found without a view."""
    kept: list[Candidate] = []
    for c in cands:
        if frontal_only and c.view not in FRONTAL_VIEWS:
            reason = f"{NOT_FRONTAL}: view {c.view or 'unknown'} (frontal_only)"
            discovery.filtered.append(Drop(c.source, c.rel_path, "discover", reason, c.image_key))
        else:
            kept.append(c)
    return kept


def view_notes(discovery: Discovery, unknown: int, total: int, kept: int, frontal_only: bool) -> None:
    """notes["view_unknown"], and the hint when the view policy filtered a whole source for want of a view."""
    discovery.notes["view_unknown"] = unknown
    if frontal_only and unknown and not kept:
        discovery.notes["hint"] = (
            f"{unknown} of {total} films state no view, so frontal_only filtered every film; "
            "if this release carries no view (Open-I's XML form: put torchxrayvision's "
            "nlmcxr_dicom_metadata.csv.gz in its root, docs/datasets.md), or ingest it with --all-views "
            "(frontal_only: false for this source in a mixture)"
        )


def hash_split(subject_id: str, ratios: tuple[float, float, float], salt: str = "cxrflow") -> str:
    """Deterministic patient-level split for sources without an official one."""
    total = sum(ratios)
    u = int(hashlib.sha256(f"{salt}:{subject_id}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    u *= total
    if u < ratios[0]:
        return "train"
    if u < ratios[0] + ratios[1]:
        return "validate"
    return "test"


def normalize_view(value: str | None) -> str | None:
    if value is None:
        return None
    v = str(value).strip().upper()
    if not v or v in {"NAN", "NONE"}:
        return None
    return {"L": "LATERAL", "LAT": "LATERAL", "AP_HORIZONTAL": "AP"}.get(v, v)
