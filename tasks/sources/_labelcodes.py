"""Parsing CheXpert-encoded label cells (1/0/-1/empty, written as ints, floats or strings) and reading
CSV files as all-string tables, shared by the tabular adapters (BRAX, VinDr-CXR, CANDID-PTX)."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from tasks.sources.base import SourceLayoutError

_EMPTY = {"", "nan", "none", "null"}
_CODES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-0.0": 0, "-1": -1, "-1.0": -1}


class LabelValueError(ValueError):
    """A label cell outside the 1/0/-1/empty encoding."""


def parse_label(raw: object) -> int | None:
    """'1.0' -> 1, '' -> None, '2' -> LabelValueError."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip()
    if text.lower() in _EMPTY:
        return None
    if text in _CODES:
        return _CODES[text]
    raise LabelValueError(f"label value {text!r} outside the encoding 1/0/-1/empty")


def read_csv_strings(path: Path) -> pl.DataFrame:
    """Every column as a string: label cells keep their spelling, so bad values can be reported as found."""
    if not path.is_file():
        raise SourceLayoutError(f"missing file: {path}")
    return pl.read_csv(path, infer_schema=False)


def require_columns(df: pl.DataFrame, columns: list[str] | tuple[str, ...], where: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceLayoutError(f"{where.name}: missing column(s) {', '.join(repr(c) for c in missing)}")


def header_columns(path: Path) -> list[str]:
    """Column names only (cheap check before any work)."""
    if not path.is_file():
        raise SourceLayoutError(f"missing file: {path}")
    return pl.read_csv(path, infer_schema=False, n_rows=1).columns
