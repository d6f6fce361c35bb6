"""The released "LLaVA-Rad MIMIC-CXR Annotations" (PhysioNet) as a report source (docs/reports.md).

Each file is one JSON list of records `{id: "<subject>_<study>", image: "mimic/pXX/pSUBJ/sSTUDY/<dicom_id>.jpg",
generate_method: "gpt4" | "rule-based", reason, impression, indication, history, view, orientation,
chexpert_labels, conversations: [{from: human, ...}, {from: gpt, value: <findings>}]}`; the release splits them
into train/dev/test files. Records join the archive's images by dicom_id. A record whose findings are not a
string (null/NaN: the study had none) contributes no text, as in LLaVA-Rad's loader.

At ingest (`IngestConfig.annotations`) the join accounts for both sides: an image with no record is filtered,
a record whose image is not in the archive is a quarantine row; the matched records are written to
`annotations.parquet` beside the manifest, where the structure stage picks them up instead of calling an LLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa

from schemas.safe_load import load_json_text
from tasks.sources.base import Discovery, Drop, make_key

SOURCE = "mimic-cxr"
FILE_NAME = "annotations.parquet"
OPERATION = "annotations"  # the structure stage's operation name for released texts
BACKEND = "released"
MODEL = "llava-rad-mimic-cxr-annotation"
METHODS = ("gpt4", "rule-based")
NO_RECORD = "no LLaVA-Rad annotation record: dicom_id not in the annotations"
NO_IMAGE = "annotation record's image is not in the archive"
MALFORMED = "malformed annotation record"
CONFLICT = "conflicting annotation records: one image, one generate_method, different texts (which holds is unknown)"

ANNOTATIONS_SCHEMA = pa.schema(
    [
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("generate_method", pa.string(), nullable=False),
        pa.field("findings", pa.string()),  # null: the record has no findings text
        pa.field("reason", pa.string()),
        pa.field("indication", pa.string()),
        pa.field("history", pa.string()),
        pa.field("impression", pa.string()),
        pa.field("annotation_file", pa.string(), nullable=False),
    ]
)


class AnnotationsError(ValueError):
    """The annotations cannot be read at all (missing file, not JSON, not a list): a one-line user error."""


@dataclass
class Record:
    dicom_id: str
    record_id: str
    image: str
    generate_method: str
    findings: str | None
    reason: str | None
    indication: str | None
    history: str | None
    impression: str | None
    file: str


def _text(value) -> str | None:
    """Strings stay strings; null, NaN and other non-strings are "no text" (the reference's isinstance test)."""
    return value if isinstance(value, str) else None


def annotation_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the .json files in it (the release's chat_*.json)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise AnnotationsError(f"annotations folder {p} holds no .json file")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise AnnotationsError(f"annotations file {p} does not exist")
    return out


def parse_record(raw: object, file: str) -> Record | str:
    """A Record, or why the entry cannot be used."""
    if not isinstance(raw, dict):
        return "entry is not an object"
    missing = [k for k in ("id", "image", "generate_method", "conversations") if k not in raw]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    image = raw["image"]
    if not isinstance(image, str) or not image.endswith((".jpg", ".dcm", ".png")):
        return "image is not a path to an image file"
    turns = raw["conversations"]
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
        return "conversations is not a [human, gpt] pair"
    method = raw["generate_method"]
    if method not in METHODS:
        return f"generate_method {method!r} is not one of {', '.join(METHODS)}"
    reason = _text(raw.get("reason"))
    return Record(
        dicom_id=PurePosixPath(image).stem,
        record_id=str(raw["id"]),
        image=image,
        generate_method=method,
        findings=_text(turns[1].get("value")),
        reason=reason,
        indication=_text(raw.get("indication")),
        history=_text(raw.get("history")),
        impression=_text(raw.get("impression")),
        file=file,
    )


def load_records(paths: list[Path]) -> tuple[list[Record], list[Drop]]:
    records: list[Record] = []
    bad: list[Drop] = []
    for path in annotation_files(paths):
        try:
            data = load_json_text(path.read_text(encoding="utf-8"))  # the release writes NaN for unknown labels
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnotationsError(f"annotations file {path} is not JSON: {exc}") from exc
        if not isinstance(data, list):
            raise AnnotationsError(f"annotations file {path} is not a JSON list of records")
        for i, raw in enumerate(data):
            rec = parse_record(raw, path.name)
            if isinstance(rec, str):
                bad.append(Drop(SOURCE, f"{path.name}#{i}", "annotations", f"{MALFORMED}: {rec}"))
            else:
                records.append(rec)
    return records, bad


def _dedupe(by_key: dict[str, list[Record]]) -> set[str]:
    """Identical repeats of a record collapse to one, in place; returns the keys whose records of one
    generate_method disagree on the text (quarantined: silently picking one would choose the training target)."""
    conflicting: set[str] = set()
    for key, recs in by_key.items():
        seen: dict[str, tuple] = {}
        unique: list[Record] = []
        for rec in recs:
            text = (rec.findings, rec.impression, rec.reason, rec.indication, rec.history)
            if rec.generate_method not in seen:
                seen[rec.generate_method] = text
                unique.append(rec)
            elif seen[rec.generate_method] != text:
                conflicting.add(key)
        by_key[key] = unique
    return conflicting


def join_annotations(discovery: Discovery, paths: list[Path]) -> list[dict]:
    """Join the records onto a MIMIC-CXR discovery, in place; returns the rows of annotations.parquet.

    Every image stays accounted for (a candidate without a record moves to `filtered`); every record that
    matches no image of the archive (kept, filtered or quarantined) becomes a quarantine row, so
    found = kept + filtered + quarantined counts images and unmatched records."""
    records, bad = load_records(paths)
    by_key: dict[str, list[Record]] = {}
    for rec in records:
        by_key.setdefault(make_key(SOURCE, rec.dicom_id), []).append(rec)
    conflicting = _dedupe(by_key)
    archive = {c.image_key for c in discovery.candidates}
    archive |= {d.image_key for d in discovery.filtered + discovery.quarantined if d.image_key}

    kept = []
    for c in discovery.candidates:
        if c.image_key in conflicting:
            discovery.quarantined.append(Drop(c.source, c.rel_path, "annotations", CONFLICT, c.image_key))
        elif c.image_key in by_key:
            kept.append(c)
        else:
            discovery.filtered.append(Drop(c.source, c.rel_path, "annotations", NO_RECORD, c.image_key))
    discovery.candidates = kept
    orphans = [rec for key, recs in by_key.items() if key not in archive for rec in recs]
    discovery.quarantined += bad + [
        Drop(SOURCE, rec.image, "annotations", f"{NO_IMAGE}: {rec.image} ({rec.file})") for rec in orphans
    ]
    rows = [
        {
            "image_key": c.image_key,
            "record_id": rec.record_id,
            "generate_method": rec.generate_method,
            "findings": rec.findings,
            "reason": rec.reason,
            "indication": rec.indication,
            "history": rec.history,
            "impression": rec.impression,
            "annotation_file": rec.file,
        }
        for c in kept
        for rec in by_key[c.image_key]
    ]
    discovery.notes["annotations"] = {
        "files": [p.name for p in annotation_files(paths)],
        "records": len(records) + len(bad),
        "malformed": len(bad),
        "records_without_image": len(orphans),
        "images_with_conflicting_records": len(conflicting & archive),
        "records_joined": len(rows),
        "records_without_findings": sum(1 for r in rows if r["findings"] is None),
        "by_method": {m: sum(1 for r in rows if r["generate_method"] == m) for m in METHODS},
    }
    return rows

