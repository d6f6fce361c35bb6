"""NIH ChestX-ray14: `Data_Entry_2017_v2020.csv` (or the older `Data_Entry_2017.csv`), PNGs in
`images_NNN/images/`, and the official `train_val_list.txt` / `test_list.txt`.

- The header `OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]` puts commas inside brackets, so
  the file has 11 physical columns; the older file also ends every line with a trailing comma. Columns are
  read by name up to `View Position`, which both variants spell identically; the rest is not used.
- Labels are `|`-separated. The 11 of 14 ChestX-ray14 findings that name a CheXpert observation map onto 10 of them
  (see CXR14_TO_CHEXPERT). The NIH labels are binary over their 14 findings, so a mapped observation the image
  does not list is 0, not None; observations ChestX-ray14 never labels (Fracture, Support Devices, Enlarged
  Cardiomediastinum) stay None. No Finding is 1 for 'No Finding' and 0 when any finding is listed.
- Split: test_list.txt -> test; train_val_list.txt -> train/validate, carved by a patient hash with the
  train:validate proportion of cfg.split_ratios (the official lists are already patient-disjoint).
- No reports: report_origin "labels" (the synthesize step writes one from the labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.config import IngestConfig
from tasks.sources._common import (
    empty_labels,
    file_defect,
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

CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
LICENCE = "NIH Clinical Center ChestX-ray14: public, unrestricted use with citation (CC0-like terms)"

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
CXR14_TO_CHEXPERT: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}


class LabelTokenError(ValueError):
    pass


def parse_findings(value: str | None) -> list[str]:
    terms = [t.strip() for t in (value or "").split("|") if t.strip()]
    if not terms:
        raise LabelTokenError("Finding Labels is empty")
    bad = [t for t in terms if t != "No Finding" and t not in FINDINGS]
    if bad:
        raise LabelTokenError(f"Finding Labels outside the ChestX-ray14 label set: {bad[0]!r}")
    if "No Finding" in terms and len(terms) > 1:
        raise LabelTokenError(f"Finding Labels combine 'No Finding' with findings: {value!r}")
    return terms


def map_labels(terms: list[str]) -> dict[str, int | None]:
    labels = empty_labels()
    for obs in set(CXR14_TO_CHEXPERT.values()):
        labels[obs] = 0
    for t in terms:
        if t in CXR14_TO_CHEXPERT:
            labels[CXR14_TO_CHEXPERT[t]] = 1
    labels["No Finding"] = 1 if terms == ["No Finding"] else 0
    return labels


def find_csv(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise SourceLayoutError(f"missing {CSV_NAMES[0]} (or {CSV_NAMES[1]}) in {root}")


def index_images(root: Path) -> dict[str, Path]:
    """Image name -> path over images_NNN/images/ (and a flat images/ folder, as some mirrors ship it)."""
    found: dict[str, Path] = {}
    for folder in [*sorted(root.glob("images_*/images")), *sorted(root.glob("images_*")), root / "images"]:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.suffix.lower() == ".png":
                    found.setdefault(p.name, p)
    return found


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@dataclass(frozen=True)
class ChestXray14Adapter(BaseAdapter):
    name: str = "chestxray14"
    may_leave_premises: bool = True
    licence: str = LICENCE

    def check_layout(self, root: Path, options: dict | None) -> None:
        csv_path = find_csv(root)
        require_columns(read_header(csv_path), REQUIRED_COLUMNS, csv_path)

    def source_findings(self, root: Path) -> dict[str, list[str]]:
        """image_key -> the NIH finding labels (all 14, including those with no CheXpert observation)."""
        out = {}
        for row in read_csv_strings(find_csv(Path(root)), ragged=True).iter_rows(named=True):
            name = (row.get("Image Index") or "").strip()
            out[make_key(self.name, name.rsplit(".", 1)[0])] = [
                t.strip() for t in (row.get("Finding Labels") or "").split("|") if t.strip()
            ]
        return out

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        csv_path = find_csv(root)
        out = Discovery(notes={"data_entry": csv_path.name})
        train_val = read_list(root / "train_val_list.txt") if (root / "train_val_list.txt").is_file() else None
        test = read_list(root / "test_list.txt") if (root / "test_list.txt").is_file() else None
        if train_val is None or test is None:
            out.notes["split"] = "official lists missing: patient hash split"
        images = index_images(root)
        ratios = (cfg.split_ratios[0], cfg.split_ratios[1], 0.0)
        seen: set[str] = set()
        # Ragged: the older file's trailing comma gives rows one field more than a header without one.
        for i, row in enumerate(read_csv_strings(csv_path, ragged=True).iter_rows(named=True)):
            name = (row.get("Image Index") or "").strip()
            if not name:
                self.quarantine(out, f"{csv_path.name}:{i + 2}", "row has no Image Index (no image)")
                continue
            image_id = name.rsplit(".", 1)[0]
            key = make_key(self.name, image_id)

            def quarantine(reason: str, name=name, key=key) -> None:
                self.quarantine(out, name, reason, key)

            if name in seen:
                quarantine("duplicate row for an image already listed")
                continue
            seen.add(name)
            path = images.get(name)
            defect = "image file missing" if path is None else file_defect(path)
            if defect:
                quarantine(defect)
                continue
            try:
                terms = parse_findings(row.get("Finding Labels"))
            except LabelTokenError as e:
                quarantine(str(e))
                continue
            subject = (row.get("Patient ID") or "").strip() or image_id.split("_")[0]
            if train_val is not None and test is not None:
                if name in test:
                    split = "test"
                elif name in train_val:
                    split = hash_split(subject, ratios)
                else:
                    quarantine("listed in neither train_val_list.txt nor test_list.txt")
                    continue
            else:
                split = hash_split(subject, cfg.split_ratios)
            view = normalize_view(row.get("View Position"))
            out.candidates.append(
                Candidate(
                    source=self.name,
                    path=path,
                    rel_path=str(path.relative_to(root)),
                    image_id=image_id,
                    subject_id=subject,
                    # Each follow-up visit is one image: the image name is the study.
                    study_id=image_id,
                    split=split,
                    kind="png",
                    view=view,
                    labels=map_labels(terms),
                    report_origin="labels",
                    source_labels=list(terms),
                )
            )
        listed = {images[n] for n in seen if n in images}
        on_disk = {p: n.rsplit(".", 1)[0] for n, p in images.items()}
        quarantine_unlisted(out, self.name, root, on_disk, listed, csv_path.name)
        return out


ADAPTER = ChestXray14Adapter()
