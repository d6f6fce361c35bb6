"""CheXpert (Stanford) and CheXpert-Plus: train.csv / valid.csv with 1/0/-1/blank labels, optionally joined with
the CheXpert-Plus report CSV on the image path.

Layout (docs/datasets.md): `<root>/CheXpert-v1.0/{train,valid}.csv` whose `Path` column reads
`CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg` (`CheXpert-v1.0-small/` in the small release), so
paths resolve against the folder above the CSV. The root may also be that folder itself. CheXpert-Plus adds
`df_chexpert_plus_240401.csv` (sometimes with a leading unnamed index) whose `path_to_image` has no prefix.

Split: the official one (train.csv -> train, valid.csv -> validate); CheXpert has no public test labels here.
Reports: CheXpert has none (report_origin "labels": the synthesize step writes one from the labels).
CheXpert-Plus rows with a report get report_origin "report" with sections taken from its section columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from schemas.manifest import FRONTAL_UNSPECIFIED, REPORT_SECTIONS
from tasks.sources._common import (
    ESCAPES_ROOT,
    LabelValueError,
    escapes_root,
    file_defect,
    parse_label_row,
    quarantine_unlisted,
    read_csv_strings,
    read_header,
    require_file,
)
from tasks.sources.base import (
    BaseAdapter,
    Candidate,
    Discovery,
    SourceLayoutError,
    make_key,
    require_columns,
)

LABEL_CSVS = (("train.csv", "train"), ("valid.csv", "validate"))
REQUIRED_COLUMNS = ("Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
PLUS_CSV = "df_chexpert_plus_240401.csv"
PLUS_REQUIRED = ("path_to_image", "report")
LICENCE = (
    "Stanford University School of Medicine CheXpert Dataset Research Use Agreement "
    "(non-commercial research; no redistribution)"
)
PLUS_LICENCE = "Stanford AIMI CheXpert-Plus Dataset Research Use Agreement (non-commercial research; no redistribution)"

# CheXpert-Plus section columns -> manifest sections. Several columns feed one section (joined in this order);
# section_end_of_impression / section_summary / section_accession_number are attestation, coded summary and
# identifiers, not report content, so they are not mapped. section_narrative is the header-less body of older
# reports: it is used as findings only when section_findings is empty.
PLUS_SECTIONS: dict[str, tuple[str, ...]] = {
    "indication": ("section_clinical_history",),
    "history": ("section_history",),
    "comparison": ("section_comparison",),
    "technique": ("section_technique", "section_procedure_comments"),
    "findings": ("section_findings",),
    "impression": ("section_impression",),
}
_EMBEDDED_IMPRESSION = re.compile(r"(?:^|\n|\s)IMPRESSION\s*:\s*", re.IGNORECASE)
_PREFIX = re.compile(r"^CheXpert-v1\.0[^/]*/")


def strip_prefix(path: str) -> str:
    """'CheXpert-v1.0-small/train/p/s/v.jpg' -> 'train/p/s/v.jpg' (the CheXpert-Plus join key)."""
    return _PREFIX.sub("", path.strip().replace("\\", "/"))


def find_label_dir(root: Path) -> Path:
    """The folder holding train.csv: the root itself or a CheXpert-v1.0* folder inside it."""
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return root
    for child in sorted(root.glob("CheXpert-v1.0*")):
        if (child / "train.csv").is_file():
            return child
    raise SourceLayoutError(f"missing train.csv: looked in {root} and {root}/CheXpert-v1.0*/")


def find_plus_csv(root: Path, label_dir: Path) -> Path:
    for d in (root, label_dir, label_dir.parent):
        if (d / PLUS_CSV).is_file():
            return d / PLUS_CSV
        others = sorted(d.glob("df_chexpert_plus*.csv"))
        if others:
            return others[-1]
    raise SourceLayoutError(f"missing CheXpert-Plus report CSV {PLUS_CSV} in {root}")


def split_embedded_impression(findings: str | None) -> tuple[str | None, str | None]:
    """Section columns don't map one-to-one: findings sometimes carries an 'IMPRESSION:' block."""
    if not findings:
        return None, None
    m = _EMBEDDED_IMPRESSION.search(findings)
    if not m:
        return findings.strip() or None, None
    before, after = findings[: m.start()].strip(), findings[m.end() :].strip()
    return before or None, after or None


def plus_sections(row: dict) -> dict[str, str | None]:
    def cell(col: str) -> str | None:
        v = row.get(col)
        return v.strip() if v and v.strip() else None

    sections: dict[str, str | None] = dict.fromkeys(REPORT_SECTIONS)
    for section, cols in PLUS_SECTIONS.items():
        parts = [p for p in (cell(c) for c in cols) if p]
        sections[section] = "\n".join(parts) if parts else None
    if sections["findings"] is None:
        sections["findings"] = cell("section_narrative")
    findings, embedded = split_embedded_impression(sections["findings"])
    sections["findings"] = findings
    if embedded:
        sections["impression"] = f"{embedded}\n{sections['impression']}" if sections["impression"] else embedded
    return sections


@dataclass(frozen=True)
class CheXpertAdapter(BaseAdapter):
    name: str = "chexpert"
    with_reports: bool = False
    # Research-use agreement forbids redistribution: report text must not go to third-party endpoints.
    may_leave_premises: bool = False
    licence: str = LICENCE

    def check_layout(self, root: Path, options: dict | None) -> None:
        label_dir = find_label_dir(root)
        for fname, _ in LABEL_CSVS:
            path = label_dir / fname
            if fname == "train.csv":
                require_file(path, "train.csv")
            if path.is_file():
                require_columns(read_header(path), REQUIRED_COLUMNS, path)
        if self.with_reports:
            plus = find_plus_csv(root, label_dir)
            require_columns(read_header(plus), PLUS_REQUIRED, plus)

    def _reports(self, root: Path, label_dir: Path, notes: dict) -> dict[str, dict]:
        plus = find_plus_csv(root, label_dir)
        df = read_csv_strings(plus)
        by_path: dict[str, dict] = {}
        duplicates = 0
        for row in df.iter_rows(named=True):
            key = strip_prefix(row.get("path_to_image") or "")
            if not key:
                continue
            if key in by_path:
                duplicates += 1
                continue
            by_path[key] = row
        notes["report_rows"] = df.height
        notes["report_rows_duplicate_path"] = duplicates
        return by_path

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        label_dir = find_label_dir(root)
        image_base = Path(cfg.options.get("image_root", label_dir))
        out = Discovery()
        reports = self._reports(root, label_dir, out.notes) if self.with_reports else {}
        seen: set[str] = set()
        for fname, split in LABEL_CSVS:
            csv_path = label_dir / fname
            if not csv_path.is_file():
                out.notes[f"missing_{fname}"] = True
                continue
            for i, row in enumerate(read_csv_strings(csv_path).iter_rows(named=True)):
                self._one(row, split, f"{fname}:{i + 2}", image_base, reports, cfg, out, seen)
        on_disk = {
            p: p.relative_to(image_base).as_posix().rsplit(".", 1)[0]
            for part in ("train", "valid")
            for p in (image_base / part).glob("*/*/*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        }
        listed = {image_base / rel for rel in seen}
        quarantine_unlisted(out, self.name, image_base, on_disk, listed, " or ".join(f for f, _ in LABEL_CSVS))
        if self.with_reports:
            out.notes["report_rows_without_labelled_image"] = len(set(reports) - seen)
            out.notes["report_method"] = "chexpert-plus-columns"
        return out

    def _one(self, row, split, where, image_base, reports, cfg, out, seen) -> None:
        raw = (row.get("Path") or "").strip()
        if not raw:
            self.quarantine(out, where, "row has no Path (no image)")
            return
        rel = strip_prefix(raw)
        image_id = rel.rsplit(".", 1)[0]
        key = make_key(self.name, image_id)

        def quarantine(reason: str) -> None:
            self.quarantine(out, raw, reason, key)

        if escapes_root(rel):
            return quarantine(ESCAPES_ROOT)
        if rel in seen:
            return quarantine("duplicate row for an image already listed")
        seen.add(rel)
        path = image_base / rel
        defect = file_defect(path)
        if defect:
            return quarantine(defect)
        try:
            labels = parse_label_row(row)
        except LabelValueError as e:
            return quarantine(str(e))
        fl = (row.get("Frontal/Lateral") or "").strip()
        if fl not in ("Frontal", "Lateral"):
            return quarantine(f"Frontal/Lateral value outside Frontal/Lateral: {fl!r}")
        appa = (row.get("AP/PA") or "").strip().upper()
        # AP/PA also holds LL/RL and blanks on Frontal rows: a frontal film whose projection is not named.
        view = "LATERAL" if fl == "Lateral" else (appa if appa in ("AP", "PA") else FRONTAL_UNSPECIFIED)
        parts = rel.split("/")  # train/patient00001/study1/view1_frontal.jpg
        subject = parts[1] if len(parts) >= 4 else image_id
        study = f"{subject}_{parts[2]}" if len(parts) >= 4 else image_id
        cand = Candidate(
            source=self.name,
            path=path,
            rel_path=str(path.relative_to(image_base)) if path.is_relative_to(image_base) else rel,
            image_id=image_id,
            subject_id=subject,
            study_id=study,
            split=split,
            kind="png" if rel.lower().endswith(".png") else "jpeg",
            view=view,
            labels=labels,
            report_origin="labels",
        )
        report = reports.get(rel)
        if report is not None:
            text = (report.get("report") or "").strip() or None
            sections = plus_sections(report)
            if text or any(sections.values()):
                cand.report_text = text
                cand.sections = sections
                cand.report_origin = "report"
                cand.report_method = "chexpert-plus-columns"
        out.candidates.append(cand)


ADAPTER = CheXpertAdapter()
PLUS_ADAPTER = CheXpertAdapter(name="chexpert-plus", with_reports=True, licence=PLUS_LICENCE)
ADAPTERS = (ADAPTER, PLUS_ADAPTER)  # both registered from this module (tasks/sources/__init__.py)
