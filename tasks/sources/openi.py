"""Open-I / Indiana University chest X-rays, in either released form:

- NLM XML: one `ecgen-radiology/<n>.xml` per report, with `AbstractText Label="COMPARISON|INDICATION|FINDINGS|
  IMPRESSION"` (often empty or self-closing) and one `<parentImage id="CXR1_1_IM-0001-3001">` per image; PNGs
  named `<id>.png` (NLMCXR_png/). The XML carries no projection. Views come from the DICOM headers' View Position
  as torchxrayvision ships them (`nlmcxr_dicom_metadata.csv.gz`, columns `imageid` = the parentImage id and
  `View Position`: PA, AP, LL, LATERAL, RL, blank) when that file sits in the root or the option
  `dicom_metadata` names it; else from indiana_projections.csv when it sits in the root; else they stay unknown
  (filtered under frontal_only, with a hint). docs/datasets.md says where the metadata file comes from.
- Kaggle CSVs: `indiana_reports.csv` (uid,MeSH,Problems,image,indication,comparison,findings,impression) and
  `indiana_projections.csv` (uid,filename,projection); files like `1_IM-0001-4001.dcm.png` under
  images/images_normalized/.

Both variants give the same image ids (`CXR1_1_IM-0001-3001`). Reports are already split into sections, so
sections are set here (report_method "openi-sections"). The de-identification token `XXXX` (sometimes inside a
word: `x-XXXX`) becomes MIMIC's `___` in the sections; report_text keeps the original. No patient ids are
released: each report is its own subject for the patient-level hash split.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from schemas.config import IngestConfig
from schemas.manifest import FRONTAL_UNSPECIFIED, REPORT_SECTIONS
from tasks.sources._common import (
    file_defect,
    quarantine_unlisted,
    read_csv_file,
    read_csv_strings,
    read_header,
)
from tasks.sources.base import (
    BaseAdapter,
    Candidate,
    Discovery,
    Drop,
    SourceLayoutError,
    hash_split,
    make_key,
    normalize_view,
    require_columns,
)

XML_DIR = "ecgen-radiology"
REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
REPORTS_COLUMNS = ("uid", "indication", "comparison", "findings", "impression")
PROJECTIONS_COLUMNS = ("uid", "filename", "projection")
# torchxrayvision's Open-I view table (its Openi_Dataset joins it on imageid): the DICOM headers of the release.
DICOM_METADATA = ("nlmcxr_dicom_metadata.csv.gz", "nlmcxr_dicom_metadata.csv")
DICOM_METADATA_COLUMNS = ("imageid", "View Position")
LICENCE = "Open-i Indiana University chest X-ray collection: CC BY-NC-ND 4.0 (public, de-identified)"
SECTION_LABELS = {"INDICATION": "indication", "COMPARISON": "comparison", "FINDINGS": "findings", "IMPRESSION": "impression"}
REPORT_METHOD = "openi-sections"

_DEID = re.compile(r"[A-Za-z0-9'-]*XXXX[A-Za-z0-9'-]*")
# Kaggle projections say Frontal without AP/PA: a stated frontal view; without the file the view is unknown.
_PROJECTIONS = {"frontal": FRONTAL_UNSPECIFIED, "lateral": "LATERAL"}


def normalize_deid(text: str | None) -> str | None:
    """Whole words touched by XXXX ('x-XXXX', 'XXXXnal') are unrecoverable: one placeholder, MIMIC's ___."""
    if text is None:
        return None
    text = " ".join(text.split())
    return _DEID.sub("___", text) or None


def sections_and_text(raw: dict[str, str | None]) -> tuple[dict[str, str | None], str | None]:
    sections = dict.fromkeys(REPORT_SECTIONS)
    lines = []
    for section in ("indication", "comparison", "findings", "impression"):
        value = (raw.get(section) or "").strip() or None
        sections[section] = normalize_deid(value)
        if value:
            lines.append(f"{section.upper()}: {value}")
    return sections, ("\n".join(lines) or None)


def image_id_from_filename(filename: str) -> str:
    """Kaggle '1_IM-0001-4001.dcm.png' -> 'CXR1_1_IM-0001-4001' (the XML parentImage id)."""
    stem = filename.strip().removesuffix(".png").removesuffix(".dcm")
    return f"CXR{stem}"


def png_name(image_id: str, variant: str) -> str:
    """The PNG file of an image id in each release ('CXR1_IM-0001-4001' -> '1_IM-0001-4001.dcm.png')."""
    return f"{image_id}.png" if variant == "xml" else image_id.removeprefix("CXR") + ".dcm.png"


def image_id_from_png(name: str, variant: str) -> str:
    return name.removesuffix(".png") if variant == "xml" else image_id_from_filename(name)


def index_pngs(root: Path) -> dict[str, Path]:
    dirs = [root / "NLMCXR_png", root / "images" / "images_normalized", root / "images_normalized", root / "images"]
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for p in d.iterdir():
                if p.name.lower().endswith(".png"):
                    found.setdefault(p.name, p)
    if not found:  # other mirrors: any PNG below the root
        for p in root.rglob("*.png"):
            found.setdefault(p.name, p)
    return found


def dicom_metadata_path(root: Path, options: dict | None) -> Path | None:
    """The view table: the `dicom_metadata` option (relative to the root or absolute), else the file in the root."""
    named = (options or {}).get("dicom_metadata")
    if named:
        path = Path(named) if Path(named).is_absolute() else root / named
        if not path.is_file():
            raise SourceLayoutError(f"missing dicom_metadata file named by the option: {path}")
        return path
    return next((root / n for n in DICOM_METADATA if (root / n).is_file()), None)


def read_dicom_views(path: Path) -> dict[str, str | None]:
    """image id -> its DICOM View Position (None where the header states none)."""
    require_columns(read_header(path), DICOM_METADATA_COLUMNS, path)
    table = read_csv_file(path, columns=list(DICOM_METADATA_COLUMNS))
    return {
        (row["imageid"] or "").strip(): normalize_view(row["View Position"])
        for row in table.iter_rows(named=True)
        if (row["imageid"] or "").strip()
    }


def read_projections(path: Path) -> dict[str, tuple[str, str]]:
    """image id -> (raw projection, uid)."""
    out = {}
    for row in read_csv_strings(path).iter_rows(named=True):
        fn = (row.get("filename") or "").strip()
        if fn:
            out[image_id_from_filename(fn)] = ((row.get("projection") or "").strip(), (row.get("uid") or "").strip())
    return out


@dataclass(frozen=True)
class OpenIAdapter(BaseAdapter):
    name: str = "openi"
    may_leave_premises: bool = True
    licence: str = LICENCE

    def variant(self, root: Path) -> str:
        if (root / XML_DIR).is_dir():
            return "xml"
        if (root / REPORTS_CSV).is_file():
            return "kaggle"
        raise SourceLayoutError(f"missing {XML_DIR}/ (NLM XML release) or {REPORTS_CSV} (Kaggle release) in {root}")

    def check_layout(self, root: Path, options: dict | None) -> None:
        if self.variant(root) == "xml":
            if not any((root / XML_DIR).glob("*.xml")):
                raise SourceLayoutError(f"missing report XML files: {root / XML_DIR}/*.xml")
        else:
            require_columns(read_header(root / REPORTS_CSV), REPORTS_COLUMNS, root / REPORTS_CSV)
            if not (root / PROJECTIONS_CSV).is_file():
                raise SourceLayoutError(f"missing {PROJECTIONS_CSV}: {root / PROJECTIONS_CSV}")
        if (root / PROJECTIONS_CSV).is_file():
            require_columns(read_header(root / PROJECTIONS_CSV), PROJECTIONS_COLUMNS, root / PROJECTIONS_CSV)
        metadata = dicom_metadata_path(root, options)
        if metadata is not None:
            require_columns(read_header(metadata), DICOM_METADATA_COLUMNS, metadata)

    def discover(self, cfg: IngestConfig) -> Discovery:
        root = Path(cfg.root)
        variant = self.variant(root)
        out = Discovery(notes={"variant": variant})
        pngs = index_pngs(root)
        projections = read_projections(root / PROJECTIONS_CSV) if (root / PROJECTIONS_CSV).is_file() else {}
        metadata = dicom_metadata_path(root, cfg.options)
        dicom_views = read_dicom_views(metadata) if metadata is not None else None
        out.notes["view_source"] = (
            metadata.name if metadata is not None else PROJECTIONS_CSV if projections else "none"
        )
        seen: set[str] = set()
        if variant == "xml":
            for xml_path in sorted((root / XML_DIR).glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
                self._xml(xml_path, root, pngs, projections, cfg, out, seen, dicom_views)
        else:
            self._kaggle(root, pngs, projections, cfg, out, seen, dicom_views)
        names = {png_name(i, variant): i for i in seen}
        listed = {pngs[n] for n in names if n in pngs}
        on_disk = {p: image_id_from_png(n, variant) for n, p in pngs.items()}
        listing = f"any report ({XML_DIR}/*.xml)" if variant == "xml" else PROJECTIONS_CSV
        quarantine_unlisted(out, self.name, root, on_disk, listed, listing)
        return out

    def _xml(self, xml_path, root, pngs, projections, cfg, out, seen, dicom_views) -> None:
        rel = str(xml_path.relative_to(root))
        try:
            doc = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            self.quarantine(out, rel, f"unparseable report XML: {e}")
            return
        except OSError as e:  # a folder named *.xml, permissions, I/O errors: an input, quarantined
            self.quarantine(out, rel, f"report XML unreadable: {e.strerror}")
            return
        raw = {}
        for node in doc.iter("AbstractText"):
            section = SECTION_LABELS.get((node.get("Label") or "").upper())
            if section:
                raw[section] = "".join(node.itertext())
        uid_node = doc.find("uId")
        report_id = uid_node.get("id") if uid_node is not None and uid_node.get("id") else f"CXR{xml_path.stem}"
        image_ids = [n.get("id") for n in doc.iter("parentImage") if n.get("id")]
        if not image_ids:
            self.quarantine(out, rel, "report has no images (no parentImage)")
            return
        for image_id in image_ids:
            projection = projections.get(image_id, (None, None))[0]
            self._image(image_id, png_name(image_id, "xml"), report_id, raw, projection, pngs, cfg, out, seen,
                        dicom_views)

    def _kaggle(self, root, pngs, projections, cfg, out, seen, dicom_views) -> None:
        by_uid: dict[str, list[tuple[str, str]]] = {}
        for image_id, (projection, uid) in projections.items():
            by_uid.setdefault(uid, []).append((image_id, projection))
        reports = read_csv_strings(root / REPORTS_CSV)
        known = set()
        for row in reports.iter_rows(named=True):
            uid = (row.get("uid") or "").strip()
            known.add(uid)
            images = by_uid.get(uid, [])
            if not images:
                self.quarantine(out, f"{REPORTS_CSV}:uid={uid}", f"report has no images (uid absent from {PROJECTIONS_CSV})")
                continue
            for image_id, projection in images:
                self._image(image_id, png_name(image_id, "kaggle"), f"CXR{uid}", row, projection, pngs, cfg, out, seen,
                            dicom_views)
        for uid, images in by_uid.items():  # projection rows with no report: images without text
            if uid not in known:
                for image_id, projection in images:
                    self._image(image_id, png_name(image_id, "kaggle"), f"CXR{uid}", {}, projection, pngs, cfg, out,
                                seen, dicom_views)

    def _image(self, image_id, filename, report_id, raw, projection, pngs, cfg, out, seen, dicom_views) -> None:
        key = make_key(self.name, image_id)

        def drop(bucket: list, reason: str) -> None:
            bucket.append(Drop(self.name, filename, "discover", reason, key))

        if image_id in seen:
            return drop(out.quarantined, "duplicate image id already listed by another report")
        seen.add(image_id)
        path = pngs.get(filename)
        defect = "image file missing" if path is None else file_defect(path)
        if defect:
            return drop(out.quarantined, defect)
        if projection is not None and projection.lower() not in _PROJECTIONS:
            return drop(out.quarantined, f"projection outside Frontal/Lateral: {projection!r}")
        view = None if projection is None else _PROJECTIONS[projection.lower()]
        if dicom_views is not None:  # the DICOM header's AP/PA/LL...; where it states none, the projections file
            view = dicom_views.get(image_id) or view
        sections, text = sections_and_text(raw)
        has_text = any(sections.values())
        out.candidates.append(
            Candidate(
                source=self.name,
                path=path,
                rel_path=str(path.relative_to(cfg.root)) if path.is_relative_to(cfg.root) else filename,
                image_id=image_id,
                subject_id=report_id,
                study_id=report_id,
                split=hash_split(report_id, cfg.split_ratios),
                kind="png",
                view=view,
                report_text=text,
                # Only findings/impression make a training target; indication alone does not.
                report_origin="report" if sections["findings"] or sections["impression"] else "none",
                report_method=REPORT_METHOD if has_text else None,
                sections=sections if has_text else None,
            )
        )


ADAPTER = OpenIAdapter()
