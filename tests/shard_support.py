"""Tiny manifests for the validate/shard tests, built directly against MANIFEST_SCHEMA (no ingest needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from schemas.labels import LABEL_COLUMNS
from schemas.manifest import MANIFEST_SCHEMA

FINDINGS = [
    "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
    "Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe opacity concerning for pneumonia. No pneumothorax.",
    "Endotracheal tube terminates 4 cm above the carina. Lungs are clear.",
]


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    img = Image.new("L", (size, size), color=(seed * 37) % 256)
    img.putpixel((seed % size, (seed // size) % size), 255 - (seed * 37) % 256)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def manifest_row(i: int, *, split: str = "train", subject: str | None = None) -> dict:
    key = f"mimic-cxr_img{i:05d}"
    row = {
        "image_key": key,
        "source": "mimic-cxr",
        "subject_id": subject or f"1{i:07d}",
        "study_id": f"5{i:07d}",
        "image_id": f"img{i:05d}",
        "split": split,
        "view": "PA" if i % 2 else "AP",
        "orientation": "Erect",
        "report_text": "FINDINGS: " + FINDINGS[i % len(FINDINGS)],
        "report_origin": "report",
        "report_method": "rule-based",
        "has_addendum": False,
        "examination": "CHEST (PA AND LAT)",
        "indication": "Cough." if i % 3 else None,
        "history": None,
        "technique": None,
        "comparison": "None.",
        "findings": FINDINGS[i % len(FINDINGS)],
        "impression": "No acute process.",
        "image_path": f"images/{key}.jpg",
        "image_format": "jpeg",
        "width": 32,
        "height": 32,
        "image_sha256": f"{i:064x}",
        "source_path": f"files/p10/p1{i:07d}/s5{i:07d}/img{i:05d}.dcm",
        "source_sha256": f"{i:064x}",
        "decoder": "pydicom",
        "preprocess": json.dumps({"size": 32}),
        "cxrflow_version": "0.1.0",
    }
    for j, col in enumerate(LABEL_COLUMNS):
        row[col] = [1, 0, -1, None][(i + j) % 4]
    return row


def write_dataset(
    root: Path, rows: list[dict], *, found: int | None = None, reports: list[dict] | None = None
) -> Path:
    """Write DIR/manifest.parquet, DIR/images/*.jpg and DIR/summary.json (as ingest would)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        if row.get("image_path"):
            (root / row["image_path"]).write_bytes(jpeg_bytes(i))
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "manifest.parquet")
    n = found if found is not None else len(rows)
    summary = {"found": n, "kept": len(rows), "filtered": n - len(rows), "quarantined": 0}
    (root / "summary.json").write_text(json.dumps(summary))
    if reports is not None:
        pq.write_table(pa.Table.from_pylist(reports), root / "reports.parquet")
    return root


def default_rows(n: int = 12) -> list[dict]:
    splits = ["train"] * (n - 4) + ["validate"] * 2 + ["test"] * 2
    return [manifest_row(i, split=s) for i, s in enumerate(splits)]
