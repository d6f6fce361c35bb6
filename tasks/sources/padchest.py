"""PadChest (BIMCV): one 36-column CSV written by pandas (leading unnamed index) and 16-bit PNGs in numbered
folders (`<root>/<ImageDir>/<ImageID>`).

- Labels / Localizations are Python list literals (`['pleural effusion', 'cardiomegaly']`), parsed with
  ast.literal_eval. labelCUIS / LocalizationsCUIS are numpy array reprs without commas that no literal parser
  accepts: they are never parsed.
- Report: Spanish, stemmed and tokenised. It is kept verbatim in report_text, but the report origin is
  "labels": it is not English free text a section parser can split. The `translate` LLM operation can turn it
  into English when an LLM backend is configured; offline, the synthesize step writes an English report from
  the Labels/Localizations, which `source_findings()` exposes per image key.
- Split: none is official, so a patient-level hash split.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from schemas.config import IngestConfig
from tasks.sources._common import (
    CONTROL_CHARS,
    ESCAPES_ROOT,
    control_char_column,
    empty_labels,
    escapes_root,
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
    require_columns,
)

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED_COLUMNS = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Report", "Labels", "Localizations")
LICENCE = "PadChest (BIMCV) Research Use Agreement: public for research, attribution required"
TRANSLATION_NOTE = (
    "reports are Spanish (stemmed): English text needs the translate operation with an LLM backend; "
    "offline the synthesize step writes English from Labels/Localizations"
)

# PadChest label -> CheXpert observation, only where the PadChest term names the same finding (or a subtype of
# it). PadChest labels list positive findings only, so mapped observations are set to 1 and the rest stay None
# (not mentioned): absence of a label is not a negative. 'normal' is PadChest's own no-finding label.
PADCHEST_TO_CHEXPERT: dict[str, str] = {
    "normal": "No Finding",
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Atelectasis",
    "laminar atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis",
    "round atelectasis": "Atelectasis",
    "total atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "pulmonary edema": "Edema",
    "mediastinal enlargement": "Enlarged Cardiomediastinum",
    "superior mediastinal enlargement": "Enlarged Cardiomediastinum",
    "rib fracture": "Fracture",
    "clavicle fracture": "Fracture",
    "humeral fracture": "Fracture",
    "vertebral fracture": "Fracture",
    "callus rib fracture": "Fracture",
    "nodule": "Lung Lesion",
    "multiple nodules": "Lung Lesion",
    "pulmonary mass": "Lung Lesion",
    "mass": "Lung Lesion",
    "infiltrates": "Lung Opacity",
    "alveolar pattern": "Lung Opacity",
    "ground glass pattern": "Lung Opacity",
    "interstitial pattern": "Lung Opacity",
    "reticular interstitial pattern": "Lung Opacity",
    "reticulonodular interstitial pattern": "Lung Opacity",
    "increased density": "Lung Opacity",
    "pleural effusion": "Pleural Effusion",
    "loculated pleural effusion": "Pleural Effusion",
    "hydropneumothorax": "Pneumothorax",
    "pneumothorax": "Pneumothorax",
    "pleural thickening": "Pleural Other",
    "apical pleural thickening": "Pleural Other",
    "calcified pleural thickening": "Pleural Other",
    "pleural plaques": "Pleural Other",
    "calcified pleural plaques": "Pleural Other",
    "pneumonia": "Pneumonia",
    "atypical pneumonia": "Pneumonia",
    "pacemaker": "Support Devices",
    "dual chamber device": "Support Devices",
    "single chamber device": "Support Devices",
    "electrical device": "Support Devices",
    "endotracheal tube": "Support Devices",
    "nsg tube": "Support Devices",
    "chest drain tube": "Support Devices",
    "tracheostomy tube": "Support Devices",
    "central venous catheter": "Support Devices",
    "central venous catheter via subclavian vein": "Support Devices",
    "central venous catheter via jugular vein": "Support Devices",
    "reservoir central venous catheter": "Support Devices",
    "catheter": "Support Devices",
}

# Projection -> view. 'L' is lateral; 'AP_horizontal' is an AP film of a lying patient (orientation Recumbent).
# COSTAL (rib views) are not chest frontal/lateral films; EXCLUDE marks images the release says to drop.
_VIEWS = {"PA": "PA", "AP": "AP", "AP_HORIZONTAL": "AP", "L": "LATERAL", "COSTAL": "COSTAL"}


class LiteralError(ValueError):
    pass


def parse_list_literal(column: str, value: str | None) -> list[str]:
    """"['a', 'b']" -> ['a', 'b']; blank -> []; anything that is not a list of strings raises."""
    if value is None or not value.strip() or value.strip().lower() == "nan":
        return []
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as e:
        raise LiteralError(f"{column} not a Python list literal: {value[:60]!r} ({type(e).__name__})") from e
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise LiteralError(f"{column} not a list of strings: {value[:60]!r}")
    # Terms carry stray spaces ('loc  cardiac', ' pleural effusion').
    return [" ".join(x.split()) for x in parsed if x.strip()]


def map_labels(terms: list[str]) -> dict[str, int | None]:
    labels = empty_labels()
    for term in terms:
        obs = PADCHEST_TO_CHEXPERT.get(term.lower())
        if obs:
            labels[obs] = 1
    return labels


@dataclass(frozen=True)
class SourceFindings:
    """The source's own findings for one image, for the synthesize step (English terms)."""

    labels: list[str]
    localizations: list[str]


def find_csv(root: Path) -> Path:
    if (root / CSV_NAME).is_file():
        return root / CSV_NAME
    others = sorted(root.glob("PADCHEST_chest_x_ray_images_labels*.csv"))
    if others:
        return others[-1]
    raise SourceLayoutError(f"missing {CSV_NAME} in {root}")


@dataclass(frozen=True)
class PadChestAdapter(BaseAdapter):
    name: str = "padchest"
    may_leave_premises: bool = True
    licence: str = LICENCE

    def check_layout(self, root: Path, options: dict | None) -> None:
        csv_path = find_csv(root)
        require_columns(read_header(csv_path), REQUIRED_COLUMNS, csv_path)

    def source_findings(self, root: Path) -> dict[str, SourceFindings]:
        """image_key -> PadChest Labels/Localizations (rows whose literals parse)."""
        out: dict[str, SourceFindings] = {}
        for row in read_csv_strings(find_csv(Path(root))).iter_rows(named=True):
            try:
                labels = parse_list_literal("Labels", row.get("Labels"))
                locs = parse_list_literal("Localizations", row.get("Localizations"))
            except LiteralError:
                continue
            image_id = (row.get("ImageID") or "").strip().rsplit(".", 1)[0]
            out[make_key(self.name, image_id)] = SourceFindings(labels, locs)
        return out

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        csv_path = find_csv(root)
        out = Discovery(notes={"report_language": "es", "translation": TRANSLATION_NOTE})
        seen: set[str] = set()
        listed: set[Path] = set()
        for i, row in enumerate(read_csv_strings(csv_path).iter_rows(named=True)):
            self._one(row, f"{csv_path.name}:{i + 2}", root, cfg, out, seen)
            listed.add(root / (row.get("ImageDir") or "").strip() / (row.get("ImageID") or ""))
        on_disk = {
            p: p.name.rsplit(".", 1)[0]
            for d in root.iterdir()
            if d.is_dir() and d.name.isdigit()
            for p in d.iterdir()
            if p.suffix.lower() == ".png"
        }
        quarantine_unlisted(out, self.name, root, on_disk, listed, csv_path.name)
        return out

    def _one(self, row: dict, where: str, root: Path, cfg: IngestConfig, out: Discovery, seen: set) -> None:
        bad = control_char_column(row)
        if bad is not None:  # the release's first column is unnamed: "" is a column too
            self.quarantine(out, where, f"{CONTROL_CHARS}: column {bad!r}")
            return
        image_name = row.get("ImageID") or ""
        folder = (row.get("ImageDir") or "").strip()
        if not image_name.strip():
            self.quarantine(out, where, "row has no ImageID (no image)")
            return
        rel = f"{folder}/{image_name}" if folder else image_name
        image_id = image_name.strip().rsplit(".", 1)[0]
        key = make_key(self.name, image_id)

        def quarantine(reason: str) -> None:
            self.quarantine(out, rel, reason, key)

        if key in seen:
            return quarantine("duplicate row for an ImageID already listed")
        seen.add(key)
        # Names with whitespace do not match the released files reliably (and break shell tooling downstream).
        if any(ch.isspace() for ch in image_name):
            return quarantine("image name contains spaces")
        if not folder.isdigit():
            return quarantine(f"ImageDir not a numbered folder: {folder!r}")
        if escapes_root(image_name):
            return quarantine(ESCAPES_ROOT)
        path = root / folder / image_name
        defect = file_defect(path)
        if defect:
            return quarantine(defect)
        try:
            terms = parse_list_literal("Labels", row.get("Labels"))
            places = parse_list_literal("Localizations", row.get("Localizations"))
        except LiteralError as e:
            return quarantine(str(e))
        if "exclude" in (t.lower() for t in terms):  # the annotators' own "do not use" label
            self.filter(out, rel, "Labels mark the image 'exclude'", key)
            return
        projection = (row.get("Projection") or "").strip().upper()
        if projection == "EXCLUDE":
            self.filter(out, rel, "projection EXCLUDE (release marks it unusable)", key)
            return
        view = _VIEWS.get(projection)
        if view is None:
            return quarantine(f"Projection outside PA/L/AP/AP_horizontal/COSTAL/EXCLUDE: {projection!r}")
        subject = (row.get("PatientID") or "").strip() or image_id
        report = (row.get("Report") or "").strip() or None
        out.candidates.append(
            Candidate(
                source=self.name,
                path=path,
                rel_path=rel,
                image_id=image_id,
                subject_id=subject,
                study_id=(row.get("StudyID") or "").strip() or image_id,
                split=hash_split(subject, cfg.split_ratios),
                kind="png",
                view=view,
                orientation="Recumbent" if projection == "AP_HORIZONTAL" else None,
                labels=map_labels(terms),
                report_text=report,
                # Not "report": the engine must not parse the Spanish text into English findings.
                report_origin="labels",
                report_language="es",
                source_labels=[t.strip() for t in terms + places if t.strip()],
            )
        )


ADAPTER = PadChestAdapter()
