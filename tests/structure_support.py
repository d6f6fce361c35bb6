"""Helpers for the report-structuring tests: a tiny manifest built against MANIFEST_SCHEMA."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from schemas.labels import label_column
from schemas.manifest import MANIFEST_SCHEMA, table_from_rows

REPORTS = [
    "EXAMINATION: CHEST (PA AND LAT)\nINDICATION: Cough.\nCOMPARISON: ___.\nFINDINGS: Compared to the prior "
    "study, the right lower lobe opacity is new. Heart size is normal. No pleural effusion.\n"
    "IMPRESSION: Right lower lobe pneumonia.",
    "INDICATION: Shortness of breath.\nFINDINGS: Mild pulmonary edema. No pneumothorax. Unchanged "
    "cardiomegaly.\nIMPRESSION: Mild edema.",
    "FINDINGS: The lungs are clear. No focal consolidation.\nIMPRESSION: No acute cardiopulmonary process.",
    "HISTORY: Fever.\nFINDINGS: Small left pleural effusion. Interval placement of a right PICC line, tip in "
    "the SVC.\nIMPRESSION: Small left effusion.",
]


def manifest_row(i: int, source: str = "mimic-cxr", text: str | None = None, origin: str = "report",
                 labels: dict[str, int] | None = None, view: str = "PA") -> dict:
    row = {
        "image_key": f"{source}_img{i}", "source": source, "subject_id": f"s{i % 3}", "study_id": f"st{i}",
        "image_id": f"img{i}", "split": "train", "view": view, "orientation": None,
        "report_text": text, "report_origin": origin, "report_method": None, "has_addendum": False,
        "image_path": f"images/{i}.jpg", "image_format": "jpeg", "width": 16, "height": 16,
        "image_sha256": "0" * 64, "source_path": f"p/{i}.dcm", "source_sha256": "0" * 64, "decoder": "test",
        "preprocess": "{}", "cxrflow_version": "test",
    }
    for name, value in (labels or {}).items():
        row[label_column(name)] = value
    return row


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_from_rows(rows, MANIFEST_SCHEMA), path)
    return path


def small_manifest(path: Path, n_reports: int = 8, source: str = "mimic-cxr") -> Path:
    """n_reports free-text rows (cycling REPORTS, each made unique) plus two label-only rows."""
    rows = [manifest_row(i, source, f"{REPORTS[i % len(REPORTS)]} Case {i}.") for i in range(n_reports)]
    rows.append(manifest_row(100, "chexpert", origin="labels", view="AP",
                             labels={"Cardiomegaly": 1, "Pleural Effusion": -1, "Pneumothorax": 0}))
    rows.append(manifest_row(101, "chexpert", origin="labels", labels={"No Finding": 1}))
    return write_manifest(path, rows)


def rules_responder(body: dict) -> dict:
    """An 'LLM' that answers structure requests with the rules output (synthesize: a fixed report)."""
    from fixtures.openai_server import user_text
    from tasks.reports.rules_backend import structure_rules

    text = user_text(body)
    if text.startswith("Report:\n"):
        out = structure_rules({"report_text": text.removeprefix("Report:\n")})
        out.pop("comparison_sentences_removed")
        return out
    return {"findings": "The heart is enlarged.", "impression": "Cardiomegaly."}
