"""Merge Parquet parts, each sorted by one key column, into one sorted file in bounded memory (issue 28: the
ingest manifest at archive scale). Only the key column of every part is held whole; rows travel in blocks.

In a k-way merge every contiguous range of the output takes a contiguous range of each sorted part, so a block
of the output is: the next n_p rows of each part p (n_p counted from the globally sorted keys), sorted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxrio import atomic_path

BLOCK = 16384  # output rows per block (and row group)
READ_ROWS = 256  # rows a part is read ahead by: all parts are open at once (random keys), so this times parts


def _open_part(path: Path) -> pq.ParquetFile:
    """A part opened for reading a few rows ahead. Not pre-buffered (pyarrow's default reads the whole part's
    column chunks up front: ~2.8 MiB a 4,096-row part, times every part at once); a buffered stream reads
    pages as batches need them."""
    return pq.ParquetFile(path, buffer_size=1 << 16, pre_buffer=False)


class _Cursor:
    """Sequential reads of a part: `take(n)` returns its next n rows."""

    def __init__(self, path: Path):
        self._batches: Iterator[pa.RecordBatch] = _open_part(path).iter_batches(batch_size=READ_ROWS)
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


class Unsorted(ValueError):
    """An input of `merge_latest` is not sorted by its key (a file written by older code)."""


def _sorted_rows(path: Path, rank: int, key: str, names: list[str], fill: dict) -> Iterator[tuple]:
    """(key, rank, row values in `names` order) of a file sorted by `key`, READ_ROWS rows read at a time;
    columns the file lacks take their `fill` value."""
    f = _open_part(path)
    have = set(f.schema_arrow.names)
    last = None
    for batch in f.iter_batches(batch_size=READ_ROWS, columns=[n for n in names if n in have]):
        cols = [batch.column(n).to_pylist() if n in have else [fill[n]] * batch.num_rows for n in names]
        for row in zip(*cols, strict=True):
            k = row[names.index(key)]
            if last is not None and k < last:
                raise Unsorted(f"{path} is not sorted by {key}")
            last = k
            yield k, rank, row


def merge_latest(inputs: list[Path], out: Path, key: str, schema: pa.Schema, row_group: int,
                 fill: dict | None = None) -> None:
    """Write the rows of `inputs` (each sorted by `key`, unique in it) to `out` sorted by `key`, one row per
    key: the one from the latest input that has it. A heap merge of the inputs read a few rows ahead each:
    memory is inputs x READ_ROWS rows and one output row group, whatever the total. Raises Unsorted (and
    writes nothing) if an input is not sorted."""
    names = schema.names
    merged = heapq.merge(*(_sorted_rows(p, i, key, names, fill or {}) for i, p in enumerate(inputs)),
                         key=lambda t: (t[0], t[1]))
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        block: list[tuple] = []
        pending = None
        for k, _rank, row in merged:
            if pending is not None and pending[0] != k:
                block.append(pending[1])
                if len(block) == row_group:
                    writer.write_table(_table(block, schema), row_group_size=row_group)
                    block = []
            pending = (k, row)  # a later input's row of the same key replaces it
        if pending is not None:
            block.append(pending[1])
        if block or pending is None:
            writer.write_table(_table(block, schema), row_group_size=row_group)


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    return pa.table([pa.array(col, f.type) for col, f in zip(zip(*rows, strict=True) if rows else
                     [[] for _ in schema], schema, strict=True)], schema=schema)
