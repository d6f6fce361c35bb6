"""VinDr-CXR (PhysioNet): `.dicom` files, image-level labels from three readers per training image.

Layout (docs/datasets.md): `train/<image_id>.dicom`, `test/<image_id>.dicom`; `annotations/image_labels_train.csv`
(image_id, rad_id + 28 label columns, three rows per image) and `annotations/image_labels_test.csv`
(consensus of five readers; it spells `Other disease` where train says `Other diseases`; rad_id tolerated
either way). Official train/test split; `validate` is carved out of train by a hash of the image id
(option `validate_fraction`, default 0.05). There are no patient ids: each image is its own subject and
study. Labels only (report_origin "labels").

Consensus: for each VinDr label, positive when more than half of the image's readers marked it, negative
when fewer than half did, and a tie (possible when a reader row is missing) is uncertain.

Mapping onto CheXpert observations (only where the meaning is clearly the same; a CheXpert observation is 1
when any mapped VinDr label is positive, -1 when none is but one is tied, else 0):
  Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumothorax, Pneumonia -> same name
  Pleural effusion -> Pleural Effusion;  No finding -> No Finding
  Lung Opacity, Infiltration -> Lung Opacity      (CheXpert's opacity covers infiltrates)
  Nodule/Mass, Lung tumor -> Lung Lesion
  Rib fracture, Clavicle fracture -> Fracture
  Pleural thickening -> Pleural Other
Left unmapped (None): Enlarged Cardiomediastinum (Aortic enlargement is not the same finding) and Support
Devices (VinDr does not label devices). Unmapped VinDr labels: Aortic enlargement, Calcification,
Emphysema, Enlarged PA, ILD, Lung cavity, Lung cyst, Mediastinal shift, Pulmonary fibrosis, Other lesion,
COPD, Tuberculosis, Other diseases.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from tasks.sources._common import LabelValueError, parse_label_cell, read_csv_strings, read_header
from tasks.sources.base import (
    BaseAdapter,
    Candidate,
    Discovery,
    SourceLayoutError,
    hash_split,
    make_key,
    require_columns,
)

VINDR_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
)  # fmt: skip
# The test file's spelling -> the train file's.
ALIASES = {"Other disease": "Other diseases"}

TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Consolidation": ("Consolidation",),
    "Edema": ("Edema",),
    "Pneumothorax": ("Pneumothorax",),
    "Pneumonia": ("Pneumonia",),
    "Pleural Effusion": ("Pleural effusion",),
    "No Finding": ("No finding",),
    "Lung Opacity": ("Lung Opacity", "Infiltration"),
    "Lung Lesion": ("Nodule/Mass", "Lung tumor"),
    "Fracture": ("Rib fracture", "Clavicle fracture"),
    "Pleural Other": ("Pleural thickening",),
}
MAPPED_COLUMNS: tuple[str, ...] = tuple(sorted({c for cols in TO_CHEXPERT.values() for c in cols}))
LABEL_FILES = {"train": "annotations/image_labels_train.csv", "test": "annotations/image_labels_test.csv"}


def consensus(votes: list[int]) -> int:
    """Majority of binary reader votes: 1, 0, or -1 on a tie."""
    pos = sum(votes)
    if 2 * pos > len(votes):
        return 1
    if 2 * pos < len(votes):
        return 0
    return -1


def to_chexpert(vindr: dict[str, int]) -> dict[str, int | None]:
    out: dict[str, int | None] = {name: None for name in CHEXPERT_LABELS}
    for name, cols in TO_CHEXPERT.items():
        values = [vindr[c] for c in cols if c in vindr]
        if values:
            out[name] = 1 if 1 in values else (-1 if -1 in values else 0)
    return out


class VindrCxrAdapter(BaseAdapter):
    name = "vindr-cxr"
    may_leave_premises = False  # PhysioNet credentialed access
    licence = "PhysioNet Credentialed Health Data License 1.5.0"

    def _parts(self, root: Path) -> list[str]:
        return [p for p in ("train", "test") if (root / p).is_dir()]

    def check_layout(self, root: Path, options: dict | None) -> None:
        parts = self._parts(root)
        if not parts:
            raise SourceLayoutError(f"VinDr-CXR root {root}: missing folder 'train/' (and 'test/')")
        for part in parts:
            columns = [ALIASES.get(c, c) for c in read_header(root / LABEL_FILES[part])]
            needed = ["image_id", *(["rad_id"] if part == "train" else []), *MAPPED_COLUMNS]
            require_columns(columns, needed, root / LABEL_FILES[part])

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        fraction = float(cfg.options.get("validate_fraction", 0.05))
        out = Discovery(
            notes={"reader_counts": {}, "duplicate_reader_rows": 0, "unmapped_columns_absent": []}
        )
        for part in self._parts(root):
            df = read_csv_strings(root / LABEL_FILES[part])
            df = df.rename({c: ALIASES[c] for c in df.columns if c in ALIASES})
            present = [c for c in VINDR_LABELS if c in df.columns]
            out.notes["unmapped_columns_absent"] += [
                f"{part}:{c}" for c in VINDR_LABELS if c not in df.columns
            ]
            rows: dict[str, list[dict]] = defaultdict(list)
            seen_readers: set[tuple[str, str]] = set()
            for row in df.iter_rows(named=True):
                image_id = (row["image_id"] or "").strip()
                rad = (row.get("rad_id") or "").strip()
                if rad and (image_id, rad) in seen_readers:
                    out.notes["duplicate_reader_rows"] += 1  # same reader twice: keep the first row
                    continue
                seen_readers.add((image_id, rad))
                rows[image_id].append(row)
            files = {p.name[: -len(".dicom")]: p for p in (root / part).glob("*.dicom")}
            out.notes["reader_counts"][part] = dict(Counter(len(r) for r in rows.values()))
            for image_id in sorted(set(files) | set(rows)):
                rel = f"{part}/{image_id}.dicom"
                key = make_key(self.name, image_id)
                if image_id not in files:
                    self.quarantine(out, rel, "image file missing", key)
                    continue
                if image_id not in rows:
                    self.quarantine(out, rel, f"no rows in {LABEL_FILES[part]}", key)
                    continue
                try:
                    votes = {c: [self._vote(r.get(c), c) for r in rows[image_id]] for c in present}
                except LabelValueError as exc:
                    self.quarantine(out, rel, str(exc), key)
                    continue
                agreed = {c: consensus(v) for c, v in votes.items()}
                labels = to_chexpert(agreed)
                split = "test" if part == "test" else hash_split(image_id, (1.0 - fraction, fraction, 0.0))
                out.candidates.append(
                    Candidate(
                        source=self.name,
                        path=files[image_id],
                        rel_path=rel,
                        image_id=image_id,
                        subject_id=image_id,  # no patient ids are released
                        study_id=image_id,
                        split=split,
                        kind="dicom",
                        view="PA",  # the release is PA films only (its publishers: docs/datasets.md)
                        labels=labels,
                        report_text=None,
                        report_origin="labels",
                        source_labels=sorted(c for c, v in agreed.items() if v == 1),
                    )
                )
        return out

    @staticmethod
    def _vote(raw: object, column: str) -> int:
        value = parse_label_cell(column, raw)
        if value not in (0, 1):  # reader marks are binary: -1 or empty is outside this source's encoding
            raise LabelValueError(f"{column}: reader mark {raw!r} outside the encoding 0/1")
        return value


ADAPTER = VindrCxrAdapter()
