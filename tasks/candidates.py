"""Discovery's candidates spilled to a Parquet file in bounded batches (issue 28), so the ingesting process
never holds one Python object per image of the archive: an adapter yields batches, the engine writes each as
Arrow record batches, and every chunk reads back only its own row range (by row group).

pyarrow, not polars: chunks read it in forked pool workers (tasks/ingest.py, worker_context).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.labels import CHEXPERT_LABELS
from tasks.sources.base import Candidate, Drop

ROW_GROUP = 1024  # rows per row group: a chunk reads whole row groups, so at most this many rows too many
_STR = ("source", "path", "rel_path", "image_id", "subject_id", "study_id", "split", "kind", "view", "orientation",
        "report_text", "report_origin", "report_method", "report_language")
_JSON = ("sections", "source_labels")  # rare nested fields, as JSON text
SCHEMA = pa.schema(
    [(n, pa.string()) for n in _STR]
    + [(f"label:{n}", pa.int8()) for n in CHEXPERT_LABELS]
    + [(n, pa.string()) for n in _JSON]
    + [("expected_rows", pa.int32()), ("expected_cols", pa.int32())]  # expected_size: metadata Rows/Columns
    + [("image_key", pa.string())]
)


def to_batch(cands: list[Candidate]) -> pa.RecordBatch:
    cols = [[str(c.path) if n == "path" else getattr(c, n) for c in cands] for n in _STR]
    cols += [[c.labels.get(n) for c in cands] for n in CHEXPERT_LABELS]
    cols += [[None if getattr(c, n) is None else json.dumps(getattr(c, n)) for c in cands] for n in _JSON]
    cols += [[c.expected_size and c.expected_size[i] for c in cands] for i in (0, 1)]
    cols.append([c.image_key for c in cands])
    return pa.RecordBatch.from_arrays([pa.array(v, f.type) for v, f in zip(cols, SCHEMA, strict=True)], schema=SCHEMA)


def from_table(table: pa.Table) -> list[Candidate]:
    out = []
    for row in table.to_pylist():
        labels = {n: row.pop(f"label:{n}") for n in CHEXPERT_LABELS}
        row.pop("image_key")
        size = (row.pop("expected_rows"), row.pop("expected_cols"))
        row["expected_size"] = None if size[0] is None else size
        for n in _JSON:
            row[n] = None if row[n] is None else json.loads(row[n])
        row["path"] = Path(row["path"])
        out.append(Candidate(labels=labels, **row))
    return out


@dataclass(frozen=True)
class Spill:
    """A spilled candidate list: rows [0, count) of the file are the candidates, in discovery order."""

    path: Path
    count: int

    def __len__(self) -> int:
        return self.count

    def read(self, start: int = 0, stop: int | None = None) -> list[Candidate]:
        stop = self.count if stop is None else min(stop, self.count)
        if stop <= start:
            return []
        f = pq.ParquetFile(self.path)
        groups = range(start // ROW_GROUP, (stop - 1) // ROW_GROUP + 1)
        table = f.read_row_groups(list(groups))
        offset = groups[0] * ROW_GROUP
        return from_table(table.slice(start - offset, stop - start))

    def column(self, name: str) -> pa.ChunkedArray:
        return pq.ParquetFile(self.path).read(columns=[name]).column(name).slice(0, self.count)


class SpillWriter:
    """Appends candidate batches to `path`; `close()` returns the Spill."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, SCHEMA)
        self._pending: list[Candidate] = []
        self.count = 0

    def write(self, cands: Iterable[Candidate]) -> None:
        self._pending.extend(cands)
        while len(self._pending) >= ROW_GROUP:
            self._flush(self._pending[:ROW_GROUP])
            self._pending = self._pending[ROW_GROUP:]

    def _flush(self, cands: list[Candidate]) -> None:
        self._writer.write_batch(to_batch(cands), row_group_size=ROW_GROUP)
        self.count += len(cands)

    def close(self) -> Spill:
        if self._pending:
            self._flush(self._pending)
            self._pending = []
        self._writer.close()
        return Spill(self.path, self.count)


def duplicated_keys(spill: Spill) -> set[str]:
    counts = pc.value_counts(spill.column("image_key"))
    return set(counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist())


def split_by_keys(spill: Spill, keys: set[str], path: Path) -> tuple[Spill, list[Candidate]]:
    """The spill minus the rows whose image_key is in `keys` (written to `path`), and those rows."""
    writer = SpillWriter(path)
    removed: list[Candidate] = []
    value_set = pa.array(sorted(keys), pa.string())
    f = pq.ParquetFile(spill.path)
    for i in range(f.num_row_groups):
        table = f.read_row_group(i)
        hit = pc.is_in(table.column("image_key"), value_set=value_set)
        removed += from_table(table.filter(hit))
        writer.write(from_table(table.filter(pc.invert(hit))))
    return writer.close(), removed


def tail_drops(spill: Spill, start: int, stage: str, reason: str) -> list[Drop]:
    """Drops for rows [start, count) of the spill (e.g. over a source cap), read column by column."""
    cols = pq.ParquetFile(spill.path).read(columns=["source", "rel_path", "image_key"]).slice(start, spill.count - start)
    values = [cols.column(n).to_pylist() for n in ("source", "rel_path", "image_key")]
    return [Drop(s, r, stage, reason, k) for s, r, k in zip(*values, strict=True)]
