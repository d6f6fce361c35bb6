"""CANDID-PTX (pneumothorax, chest tube and rib fracture annotations with free-text reports).

Layout (docs/datasets.md): `Pneumothorax_reports.csv` with SOPInstanceUID, EncodedPixels (`-1` for negatives,
else a run-length encoding) and Report; the same SOPInstanceUID appears on several rows (one per mask).
`chest_tube.csv` and `acute_rib_fracture.csv` beside it (positives; read when present). One flat folder of
DICOMs named by SOPInstanceUID, dots included (with or without a `.dcm` suffix): keys go through make_key.

Duplicates: rows of one UID are merged (the image is positive if any row has a mask); their count is
recorded in notes. If the rows carry different report text the image is quarantined rather than one text
picked. Labels: Pneumothorax from the masks; Support Devices = 1 for UIDs in chest_tube.csv, Fracture = 1
for UIDs in acute_rib_fracture.csv; everything else None (the report structurer labels the rest).
Patient ids come from the (de-identified) DICOM header, read without pixels; no official split (hash).

Options: `images_dir` (relative to root) when the DICOMs are not in the root or one level below it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pydicom

from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from tasks.sources._common import read_csv_strings, read_header
from tasks.sources.base import (
    BaseAdapter,
    Candidate,
    Discovery,
    SourceLayoutError,
    hash_split,
    make_key,
    normalize_view,
    require_columns,
)

REPORTS = "Pneumothorax_reports.csv"
COLUMNS = ("SOPInstanceUID", "EncodedPixels", "Report")
EXTRA_LABEL_FILES = {"chest_tube.csv": "Support Devices", "acute_rib_fracture.csv": "Fracture"}
_RLE = re.compile(r"^\d+(\s+\d+)*$")
_SUFFIXES = (".dcm", ".dicom", ".DCM")


def _uid_of(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _mask_positive(encoded: str | None) -> bool:
    """-1 -> False; space-separated run-length pairs -> True; anything else is outside the encoding."""
    text = (encoded or "").strip()
    if text == "-1":
        return False
    if _RLE.match(text) and len(text.split()) % 2 == 0:
        return True
    raise ValueError(f"EncodedPixels {text[:30]!r} is neither -1 nor a run-length encoding")


class CandidPtxAdapter(BaseAdapter):
    name = "candid-ptx"
    may_leave_premises = False  # released under a data-use agreement: no third-party processing
    licence = "CANDID-PTX data use agreement (University of Otago), research use only, no redistribution"

    def check_layout(self, root: Path, options: dict | None) -> None:
        require_columns(read_header(root / REPORTS), COLUMNS, root / REPORTS)

    def _image_files(self, root: Path, options: dict) -> dict[str, Path]:
        if options.get("images_dir"):
            folders = [root / options["images_dir"]]
            if not folders[0].is_dir():
                raise SourceLayoutError(f"CANDID-PTX images_dir not found: {folders[0]}")
        else:
            folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
        files: dict[str, Path] = {}
        for folder in folders:
            for p in sorted(folder.iterdir()):
                if p.is_file() and not p.name.endswith((".csv", ".txt", ".md", ".json", ".zip")):
                    files.setdefault(_uid_of(p.name), p)
        return files

    def _positives(self, root: Path) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for name, label in EXTRA_LABEL_FILES.items():
            if (root / name).is_file():
                df = read_csv_strings(root / name)
                col = "SOPInstanceUID" if "SOPInstanceUID" in df.columns else df.columns[0]
                out[label] = {str(u).strip() for u in df[col].to_list() if u}
        return out

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        df = read_csv_strings(root / REPORTS)
        rows: dict[str, list[dict]] = defaultdict(list)
        for row in df.iter_rows(named=True):
            rows[(row["SOPInstanceUID"] or "").strip()].append(row)
        files = self._image_files(root, cfg.options)
        positives = self._positives(root)
        out = Discovery(
            notes={
                "report_rows": df.height,
                "duplicate_rows_merged": sum(len(r) - 1 for r in rows.values()),
                "uids_with_duplicate_rows": sum(len(r) > 1 for r in rows.values()),
                "extra_label_files": sorted(positives),
            }
        )
        for uid in sorted(set(rows) | set(files)):
            key = make_key(self.name, uid) if uid else None
            rel = (
                str(files[uid].relative_to(root))
                if uid in files
                else uid or f"{REPORTS}:<empty SOPInstanceUID>"
            )
            if not uid:
                self.quarantine(out, rel, "row with empty SOPInstanceUID")
                continue
            if uid not in files:
                self.quarantine(out, rel, "image file missing", key)
                continue
            if uid not in rows:
                self.quarantine(out, rel, f"no row in {REPORTS}", key)
                continue
            group = rows[uid]
            reports = {(r["Report"] or "").strip() for r in group}
            if len(reports) > 1:
                self.quarantine(out, rel, f"{len(group)} duplicate rows disagree on the report text", key)
                continue
            report = reports.pop()
            if not report:
                self.quarantine(out, rel, "empty report", key)
                continue
            try:
                pneumothorax = any([_mask_positive(r["EncodedPixels"]) for r in group])
            except ValueError as exc:
                self.quarantine(out, rel, str(exc), key)
                continue
            try:
                header = pydicom.dcmread(files[uid], stop_before_pixels=True)
            except Exception as exc:  # pydicom raises several types for non-DICOM files
                self.quarantine(out, rel, f"unreadable DICOM header: {type(exc).__name__}", key)
                continue
            view = normalize_view(header.get("ViewPosition"))
            subject = str(header.get("PatientID") or "").strip() or uid
            labels: dict[str, int | None] = {name: None for name in CHEXPERT_LABELS}
            labels["Pneumothorax"] = int(pneumothorax)
            for label, uids in positives.items():
                if uid in uids:
                    labels[label] = 1
            out.candidates.append(
                Candidate(
                    source=self.name,
                    path=files[uid],
                    rel_path=rel,
                    image_id=uid,
                    subject_id=subject,
                    study_id=str(header.get("StudyInstanceUID") or uid),
                    split=hash_split(subject, cfg.split_ratios),
                    kind="dicom",
                    view=view,
                    labels=labels,
                    report_text=report,
                    report_origin="report",
                )
            )
        return out


ADAPTER = CandidPtxAdapter()
