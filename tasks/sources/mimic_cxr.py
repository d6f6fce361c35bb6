"""MIMIC-CXR (DICOM) and MIMIC-CXR-JPG as PhysioNet ships them (docs/datasets.md).

Images are found on disk under files/pNN/pNNNNNNNN/sNNNNNNNN/, joined (polars) with the metadata, split and
CheXpert label CSVs; the report of each study sits beside its folder as sNNNNNNNN.txt. The layout (DICOM or
JPG) is detected from what the files/ tree holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from tasks.sources._common import LabelValueError, parse_label_row, read_csv_strings, read_header
from tasks.sources.base import (
    BATCH,
    BaseAdapter,
    Candidate,
    Discovery,
    Drop,
    SourceLayoutError,
    make_key,
    normalize_view,
    require_columns,
)

NAME = "mimic-cxr"
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "PatientOrientationCodeSequence_CodeMeaning")
SPLIT_COLUMNS = ("dicom_id", "split")
LABEL_KEY_COLUMNS = ("subject_id", "study_id")


def _find_csv(root: Path, kind: str) -> Path | None:
    """mimic-cxr-2.0.0-<kind>.csv.gz (or 2.1.0), gzipped or not."""
    for version in ("2.0.0", "2.1.0"):
        for suffix in (".csv.gz", ".csv"):
            path = root / f"mimic-cxr-{version}-{kind}{suffix}"
            if path.exists():
                return path
    return None


def _scan(folder: str, problems: list[tuple[Path, str]]) -> list[os.DirEntry]:
    """The folder's entries by name; a folder that cannot be listed is a problem row, not a crash."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append((Path(folder), f"folder unreadable: {exc.strerror}"))
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder to descend into
        return False


def _walk_images(
    files: Path,
) -> tuple[list[tuple[str, str, str, Path]], str, list[tuple[Path, str, str]]]:
    """(subject, study, dicom_id, path) for every image file, the detected layout, and (path, dicom_id, reason)
    for every image-named entry that cannot be used (symlink loop, dangling link, a folder) or folder that
    cannot be listed: those are inputs too, quarantined rather than crashing or vanishing from `found`."""
    found: list[tuple[str, str, str, Path]] = []
    bad: list[tuple[Path, str, str]] = []
    unlisted: list[tuple[Path, str]] = []
    kinds: set[str] = set()
    for group in _scan(str(files), unlisted):
        if not (_is_dir(group) and group.name.startswith("p")):
            continue
        for patient in _scan(group.path, unlisted):
            if not (_is_dir(patient) and patient.name.startswith("p")):
                continue
            for study in _scan(patient.path, unlisted):
                if not (_is_dir(study) and study.name.startswith("s")):
                    continue
                for image in _scan(study.path, unlisted):
                    stem, _, ext = image.name.rpartition(".")
                    if ext.lower() not in ("dcm", "jpg"):
                        continue
                    try:
                        Path(image.path).stat()  # follows links: loops and dangling links raise here
                        regular = image.is_file()
                    except OSError as exc:
                        bad.append((Path(image.path), stem, f"image file unreadable: {exc.strerror}"))
                        continue
                    if not regular:
                        bad.append((Path(image.path), stem, "image path is not a regular file (a folder?)"))
                        continue
                    kinds.add(ext.lower())
                    found.append((patient.name[1:], study.name[1:], stem, Path(image.path)))
    bad += [(path, "", reason) for path, reason in unlisted]
    layout = "dicom" if "dcm" in kinds else "jpg"
    return found, layout, bad


def _ragged_ids(path: Path) -> set[str]:
    """dicom_ids of rows with fewer fields than the header (polars reads the missing cells as nulls, which
    would make such a row look like a film without a view)."""
    import csv
    import gzip

    with (gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="")) as f:
        rows = csv.reader(f)
        header = next(rows, [])
        at = header.index("dicom_id") if "dicom_id" in header else 0
        return {r[at] for r in rows if r and len(r) < len(header) and len(r) > at}


def _conflicting_ids(df: pl.DataFrame) -> set[str]:
    counts = df.unique().group_by("dicom_id").len()
    return set(counts.filter(pl.col("len") > 1)["dicom_id"].to_list())


def _labels(row: dict) -> tuple[dict[str, int | None], str | None]:
    try:
        return parse_label_row(row), None
    except LabelValueError as exc:
        return {}, str(exc)


class MimicCxrAdapter(BaseAdapter):
    name = NAME
    may_leave_premises = False
    licence = "PhysioNet Credentialed Health Data License 1.5.0"

    def check_layout(self, root: Path, options: dict | None) -> None:
        if not (root / "files").is_dir():
            raise SourceLayoutError(f"MIMIC-CXR root {root} has no files/ folder")
        for kind, columns in (("metadata", METADATA_COLUMNS), ("split", SPLIT_COLUMNS)):
            path = _find_csv(root, kind)
            if path is None:
                raise SourceLayoutError(f"MIMIC-CXR root {root} is missing mimic-cxr-2.0.0-{kind}.csv.gz")
            require_columns(read_header(path), columns, path)
        labels = _find_csv(root, "chexpert")
        if labels is not None:
            require_columns(read_header(labels), LABEL_KEY_COLUMNS + CHEXPERT_LABELS, labels)

    def discover(self, cfg: IngestConfig) -> Discovery:
        discovery, batches = self.discover_batches(cfg)
        discovery.candidates = [c for batch in batches for c in batch]
        return discovery

    def discover_batches(self, cfg: IngestConfig) -> tuple[Discovery, Iterator[list[Candidate]]]:
        """The CSV joins are columnar (polars); the candidates, one Python object each, are made and handed
        on BATCH at a time, so the archive (377K films) is never held as objects (issue 28)."""
        discovery = Discovery()
        return discovery, self._batches(cfg, discovery)

    def _batches(self, cfg: IngestConfig, discovery: Discovery) -> Iterator[list[Candidate]]:
        root = Path(cfg.root)
        reports_root = Path(cfg.options.get("reports_root", root))
        images, layout, unusable = _walk_images(root / "files")
        # Every column as text: ids keep their digits and StudyTime its float-looking form.
        metadata = read_csv_strings(_find_csv(root, "metadata"))
        split = read_csv_strings(_find_csv(root, "split")).select("dicom_id", "split")
        labels_path = _find_csv(root, "chexpert")
        labels = (
            read_csv_strings(labels_path).select("study_id", *CHEXPERT_LABELS).unique("study_id", keep="first")
            if labels_path
            else pl.DataFrame(schema={"study_id": pl.String, **{n: pl.String for n in CHEXPERT_LABELS}})
        )
        files = pl.DataFrame(
            {
                "subject_dir": [s for s, _, _, _ in images],
                "study_dir": [s for _, s, _, _ in images],
                "dicom_id": [d for _, _, d, _ in images],
                "path": [str(p) for _, _, _, p in images],
            },
            schema={"subject_dir": pl.String, "study_dir": pl.String, "dicom_id": pl.String, "path": pl.String},
        )
        del images
        meta = metadata.select(
            "dicom_id",
            pl.col("subject_id").alias("meta_subject"),
            pl.col("study_id").alias("meta_study"),
            pl.col("ViewPosition").alias("view"),
            pl.col("PatientOrientationCodeSequence_CodeMeaning").alias("orientation"),
            *(pl.col(c).alias(f"meta_{c.lower()}") for c in ("Rows", "Columns") if c in metadata.columns),
        ).with_columns(pl.lit(True).alias("in_metadata"))
        # A dicom_id named by differing rows (metadata or split): which one is right cannot be known, so those
        # images are quarantined instead of letting the first row win silently. Identical repeats are harmless.
        conflicting = _conflicting_ids(meta) | _conflicting_ids(split)
        ragged = _ragged_ids(_find_csv(root, "metadata"))
        joined = (
            files.join(meta.unique("dicom_id", keep="first"), on="dicom_id", how="left")
            .join(split.unique("dicom_id", keep="first"), on="dicom_id", how="left")
            .join(labels, left_on="study_dir", right_on="study_id", how="left")
        )
        for path, dicom_id, reason in unusable:
            key = make_key(NAME, dicom_id) if dicom_id else None
            self.quarantine(discovery, path.relative_to(root).as_posix(), reason, key)
        listed = metadata.height
        del files, metadata, meta, split, labels  # the joined frame is all the loop reads
        discovery.notes["layout"] = layout
        discovery.notes["listed_in_metadata_without_file"] = listed - int(joined["in_metadata"].sum() or 0)
        kind = "dicom" if layout == "dicom" else "jpeg"
        report_cache: dict[str, tuple[str | None, str | None]] = {}  # a study's films are usually adjacent
        batch: list[Candidate] = []

        for row in joined.iter_rows(named=True):
            path = Path(row["path"])
            rel = path.relative_to(root).as_posix()
            key = make_key(NAME, row["dicom_id"])

            def drop(stage: str, reason: str) -> Drop:
                return Drop(NAME, rel, stage, reason, key)  # noqa: B023 - used immediately

            if row["dicom_id"] in ragged:
                discovery.quarantined.append(drop("discover", "metadata row is ragged (fewer fields than the "
                                                  "header): its view and ids cannot be trusted"))
                continue
            if row["dicom_id"] in conflicting:
                discovery.quarantined.append(drop("discover", "conflicting rows for this dicom_id in the metadata "
                                                  "or split file (which one holds is unknown)"))
                continue
            if not row["in_metadata"]:
                discovery.quarantined.append(drop("discover", "study absent from the metadata: dicom_id not "
                                                  "in mimic-cxr-2.0.0-metadata.csv.gz"))
                continue
            view = normalize_view(row["view"])
            if not row["split"]:
                discovery.quarantined.append(drop("discover", "no split: dicom_id not in the split file"))
                continue
            study_key = f"{row['subject_dir']}/{row['study_dir']}"
            if study_key not in report_cache:
                if len(report_cache) >= 1024:  # bounded: a report is read again at worst
                    report_cache.clear()
                report_cache[study_key] = _read_report(reports_root, row["subject_dir"], row["study_dir"])
            text, problem = report_cache[study_key]
            if problem:
                discovery.quarantined.append(drop("discover", problem))
                continue
            label_values, label_problem = _labels(row)
            if label_problem:
                discovery.quarantined.append(drop("discover", label_problem))
                continue
            batch.append(
                Candidate(
                    source=NAME,
                    path=path,
                    rel_path=rel,
                    image_id=row["dicom_id"],
                    subject_id=row["subject_dir"],
                    study_id=row["study_dir"],
                    split=row["split"],
                    kind=kind,
                    view=view,
                    orientation=row["orientation"] or None,
                    labels=label_values,
                    report_text=text,
                    report_origin="report",
                    # the JPG release is resized: its metadata Rows/Columns describe the DICOM only
                    expected_size=_metadata_size(row) if kind == "dicom" else None,
                )
            )
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _metadata_size(row: dict) -> tuple[int, int] | None:
    """(Rows, Columns) of the metadata CSV row, when both are given as integers."""
    try:
        return int(row["meta_rows"]), int(row["meta_columns"])
    except (KeyError, TypeError, ValueError):
        return None


def _read_report(reports_root: Path, subject: str, study: str) -> tuple[str | None, str | None]:
    """(text, problem): the study's report as UTF-8 text, or why it cannot be used."""
    path = reports_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"missing report: {path.relative_to(reports_root).as_posix()} not found"
    except IsADirectoryError:
        return None, f"report path is a folder: {path.relative_to(reports_root).as_posix()}"
    except OSError as exc:  # permissions, I/O errors, symlink loops
        return None, f"report unreadable ({exc.strerror}): {path.relative_to(reports_root).as_posix()}"
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark would hide the first section header
    except UnicodeDecodeError as exc:
        return None, f"report is not valid UTF-8: byte {exc.start} of {path.name}"
    if "\x00" in text:
        return None, f"report contains NUL bytes (corrupt or binary file): {path.name}"
    return text, None


ADAPTER = MimicCxrAdapter()
