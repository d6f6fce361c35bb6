"""Merge Parquet parts, each sorted by one key column, into one sorted file in bounded memory (issue 28: the
ingest manifest at archive scale). Only the key column of every part is held whole; rows travel in blocks.

In a k-way merge every contiguous range of the output takes a contiguous range of each sorted part, so a block
of the output is: the next n_p rows of each part p (n_p counted from the globally sorted keys), sorted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxrio import atomic_path

BLOCK = 16384  # output rows per block (and row group)
READ_ROWS = 256  # rows a part is read ahead by: all parts are open at once (random keys), so this times parts


class _Cursor:
    """Sequential reads of a part: `take(n)` returns its next n rows."""

    def __init__(self, path: Path):
        # A buffered stream: pages are read as the batches need them, not a row group's column chunks whole.
        f = pq.ParquetFile(path, buffer_size=1 << 16)
        self._batches: Iterator[pa.RecordBatch] = f.iter_batches(batch_size=READ_ROWS)
        self._buffer: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        while self._buffer is None or self._buffer.num_rows < n:
            batch = pa.Table.from_batches([next(self._batches)])
            self._buffer = batch if self._buffer is None else pa.concat_tables([self._buffer, batch])
        head, self._buffer = self._buffer.slice(0, n), self._buffer.slice(n)
        return head


def write_sorted_part(path: Path, table: pa.Table, key: str) -> None:
    """A part for `merge_sorted`: sorted by `key`, in READ_ROWS-row row groups (so the merge's read-ahead of
    each part is a few pages, not the whole part), written atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table.sort_by(key), tmp, row_group_size=READ_ROWS)


def merge_sorted(parts: list[Path], out: Path, key: str, schema: pa.Schema) -> pa.Table:
    """Write the rows of `parts` (each sorted by `key`) to `out` sorted by `key`, atomically; returns the
    sorted keys (with the part each row came from)."""
    keys = [pq.ParquetFile(p).read(columns=[key]).column(key) for p in parts]
    index = pa.table({key: pa.chunked_array([c for k in keys for c in k.chunks], pa.string()),
                      "part": pa.array([i for i, k in enumerate(keys) for _ in range(len(k))], pa.int32())})
    order = index.sort_by(key)
    cursors = [_Cursor(p) for p in parts]
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        if not parts:
            writer.write_table(schema.empty_table())
        for start in range(0, order.num_rows, BLOCK):
            counts = pc.value_counts(order.column("part").slice(start, BLOCK))
            pieces = [
                cursors[p].take(n)
                for p, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
            ]
            writer.write_table(pa.concat_tables(pieces).sort_by(key).cast(schema), row_group_size=BLOCK)
    return order
