"""BRAX (Brazilian labelled chest X-rays, PhysioNet): one master spreadsheet, a DICOM tree and its PNG twin.

Layout (docs/datasets.md): `master_spreadsheet_update.csv` with DicomPath, PngPath, PatientID, AccessionNumber,
ViewPosition, the 14 CheXpert labels (1/0/-1/empty) and more, in an order that is unverified -- so columns
are read by name only. Images live at `Anonymized_DICOMs/id_<PID>/Study_<UID>/Series_<UID>/image-<UID>.dcm`
and the same tree of PNGs. AccessionNumber is not globally unique: a study is PatientID + AccessionNumber.
There is no report text (report_origin "labels"; text is synthesised downstream) and no official split
(patient-level hash split).

Options: `images`: "dicom" (default when DicomPath exists) or "png".
"""

from __future__ import annotations

from pathlib import Path

from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from tasks.sources._common import (
    ESCAPES_ROOT,
    LabelValueError,
    escapes_root,
    parse_label_cell,
    quarantine_unlisted,
    read_csv_strings,
    read_header,
)
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

SPREADSHEET = "master_spreadsheet_update.csv"
KEY_COLUMNS = ("PatientID", "AccessionNumber", "ViewPosition")
PATH_COLUMNS = {"dicom": "DicomPath", "png": "PngPath"}
# Paths in the spreadsheet may carry a prefix above the release root; these markers anchor them.
_TREE_MARKERS = ("Anonymized_DICOMs/", "images/", "Images/", "PNGs/", "pngs/")


def _image_mode(columns: list[str], options: dict) -> str:
    mode = options.get("images") or ("dicom" if "DicomPath" in columns else "png")
    if mode not in PATH_COLUMNS:
        raise SourceLayoutError(f"BRAX option images={mode!r}: expected 'dicom' or 'png'")
    return mode


def _resolve(root: Path, rel: str) -> tuple[Path, str]:
    """Spreadsheet path -> (absolute path, path relative to root), tolerating './' and a leading prefix."""
    rel = rel.strip().replace("\\", "/")
    rel = rel[2:] if rel.startswith("./") else rel
    direct = root / rel
    if direct.exists():
        return direct, rel
    for marker in _TREE_MARKERS:
        at = rel.find(marker)
        if at > 0 and (root / rel[at:]).exists():
            return root / rel[at:], rel[at:]
    return direct, rel


def _image_id(rel: str) -> str:
    stem = Path(rel).name.rsplit(".", 1)[0]
    return stem[len("image-") :] if stem.startswith("image-") else stem


class BraxAdapter(BaseAdapter):
    name = "brax"
    may_leave_premises = False  # PhysioNet credentialed access
    licence = "PhysioNet Credentialed Health Data License 1.5.0"

    def check_layout(self, root: Path, options: dict | None) -> None:
        columns = read_header(root / SPREADSHEET)
        mode = _image_mode(columns, options or {})
        require_columns(columns, [*KEY_COLUMNS, PATH_COLUMNS[mode], *CHEXPERT_LABELS], root / SPREADSHEET)

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        df = read_csv_strings(root / SPREADSHEET)
        mode = _image_mode(df.columns, cfg.options)
        path_col = PATH_COLUMNS[mode]
        out = Discovery(notes={"images": mode, "spreadsheet_rows": df.height})
        seen: dict[str, int] = {}
        listed: set[Path] = set()
        for row_no, row in enumerate(df.iter_rows(named=True), start=2):  # line 1 is the header
            rel_raw = row.get(path_col)
            pid, acc = (row.get("PatientID") or "").strip(), (row.get("AccessionNumber") or "").strip()
            if not rel_raw or not rel_raw.strip():
                self.quarantine(out, f"{SPREADSHEET}:{row_no}", f"row has no {path_col}")
                continue
            path, rel = _resolve(root, rel_raw)
            listed.add(path)
            image_id = _image_id(rel)
            key = make_key(self.name, image_id)
            if escapes_root(rel_raw):
                self.quarantine(out, rel, f"row {row_no}: {ESCAPES_ROOT}", key)
                continue
            if not pid or not acc:
                missing = "PatientID" if not pid else "AccessionNumber"
                self.quarantine(out, rel, f"row {row_no}: empty {missing}", key)
                continue
            if key in seen:
                self.quarantine(out, rel, f"duplicate row {row_no} for image (first at row {seen[key]})", key)
                continue
            seen[key] = row_no
            if not path.is_file():
                self.quarantine(out, rel, f"image file missing ({mode})", key)
                continue
            labels: dict[str, int | None] = {}
            try:
                for name in CHEXPERT_LABELS:
                    labels[name] = parse_label_cell(name, row.get(name))
            except LabelValueError as exc:
                self.quarantine(out, rel, str(exc), key)
                continue
            view = normalize_view(row.get("ViewPosition"))
            out.candidates.append(
                Candidate(
                    source=self.name,
                    path=path,
                    rel_path=rel,
                    image_id=image_id,
                    subject_id=pid,
                    # AccessionNumber repeats across patients: the study key needs both.
                    study_id=f"{pid}-{acc}",
                    split=hash_split(pid, cfg.split_ratios),
                    kind="dicom" if mode == "dicom" else "png",
                    view=view,
                    labels=labels,
                    report_text=None,
                    report_origin="labels",
                )
            )
        # Files in the image trees the spreadsheet points into, but on no row, are inputs too.
        suffix = ".dcm" if mode == "dicom" else ".png"
        tops = {p.relative_to(root).parts[0] for p in listed if p.is_relative_to(root) and p.parent != root}
        on_disk = {p: _image_id(p.name) for top in sorted(tops) for p in (root / top).rglob(f"*{suffix}")}
        quarantine_unlisted(out, self.name, root, on_disk, listed, SPREADSHEET)
        return out


ADAPTER = BraxAdapter()
