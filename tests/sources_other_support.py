"""Helpers shared by the BRAX / VinDr-CXR / CANDID-PTX / DICOMweb source tests."""

from __future__ import annotations

import csv
from pathlib import Path

from schemas.config import ImageConfig, IngestConfig


def ingest_cfg(source: str, root: Path, out: Path, **kw) -> IngestConfig:
    """Tiny output images and one worker: these tests check accounting, not pixels or speed."""
    return IngestConfig(source=source, root=root, out=out, image=ImageConfig(size=32), workers=1, **kw)


def drop_column(path: Path, column: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fields = [c for c in rows[0] if c != column]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def reasons(drops) -> list[str]:
    return sorted(d.reason for d in drops)


def assert_reconciles(summary: dict) -> None:
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"], summary
