"""Validation's accepted samples read in bounded batches, for the stages after it (shards, indexes, LLaVA export).

The accepted set is `validation/accepted.parquet` (a path), or a polars DataFrame (tests, small callers): both
are read the same way, `BATCH_ROWS` rows at a time, so no stage holds every accepted row at once (BENCHMARKS.md,
issue 28). Stages that need a split's rows in image_key order sort only the key column (4 bytes a row are
kept: the row positions in key order) and then read the rows back window by window. Validation writes the
manifest's order, which ingest sorts by image_key, so the windows advance through the file in one pass; any
other order still works, with a re-read of the file per window instead of the whole table in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

Accepted = pl.DataFrame | Path  # the accepted samples: the parquet file, or the rows themselves

BATCH_ROWS = 1024  # rows decoded at a time (and row dicts held per window): a few MiB whatever the archive
_POS = "__pos"


def _is_frame(src: Accepted) -> bool:
    return isinstance(src, pl.DataFrame)


def batches(src: Accepted, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """The accepted rows in stored order, BATCH_ROWS at a time (a polars scan per slice: only the slice's rows
    are decoded; pyarrow's reader alone would add ~75 MiB of imports and buffers to a stage's peak)."""
    batch_rows = BATCH_ROWS
    frame = src.lazy() if _is_frame(src) else pl.scan_parquet(src)
    if columns is not None:
        frame = frame.select(columns)
    n = src.height if _is_frame(src) else frame.select(pl.len()).collect().item()
    for start in range(0, n, batch_rows):
        yield frame.slice(start, batch_rows).collect()


def select(src: Accepted, columns: list[str]) -> pl.DataFrame:
    """Only these columns, whole (key columns: a few bytes a row)."""
    if _is_frame(src):
        return src.select(columns)
    return pl.read_parquet(src, columns=columns)


def key_order(src: Accepted, split: str) -> pl.Series:
    """Row positions of SPLIT's samples, in image_key order (what the shard plan and the export walk)."""
    keys = select(src, ["split", "image_key"]).with_row_index(_POS)
    part = keys.filter(pl.col("split") == split).sort("image_key", maintain_order=True)
    return part.get_column(_POS)


def rows_at(src: Accepted, positions: pl.Series) -> Iterator[dict]:
    """The rows at `positions` (row numbers of the stored order), as dicts in that order, BATCH_ROWS at a time.
    Positions that rise (the file already in key order) are read in one forward pass; a window that needs an
    earlier row starts the reader again."""
    window = BATCH_ROWS
    reader: Iterator[pl.DataFrame] | None = None
    current, at = None, 0  # the batch last read and its first row's position
    for w in range(0, len(positions), window):
        wanted = positions.slice(w, window)
        lo, hi = wanted.min(), wanted.max()
        found: dict[int, dict] = {}
        if reader is None or current is None or lo < at:
            reader, current, at = batches(src), None, 0
            current = next(reader, None)
        need = set(wanted.to_list())
        while current is not None:
            end = at + current.height
            if end > lo:
                for i, row in enumerate(current.slice(max(lo - at, 0)).iter_rows(named=True), start=max(lo, at)):
                    if i > hi:
                        break
                    if i in need:
                        found[i] = row
            if end > hi:  # this batch may hold the next window's first rows: keep it
                break
            at, current = end, next(reader, None)
        missing = len(wanted) - len(found)
        if missing:
            raise RuntimeError(f"{missing} accepted row(s) not found at their positions (file changed while read?)")
        for i in wanted.to_list():
            yield found.pop(i)
