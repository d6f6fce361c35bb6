"""The k-way merge of sorted Parquet parts (ingest's manifest): the rows of a whole sort, read ahead a few rows
per part (issue 28: at archive scale every part is open at once, random keys)."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq

import tasks.parquet_merge as merge

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64()), ("text", pa.string())])


def test_merge_of_many_parts_is_the_whole_sort_read_a_few_rows_ahead(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "BLOCK", 7)  # output blocks cut across every part
    monkeypatch.setattr(merge, "READ_ROWS", 3)
    rng = random.Random(5)
    rows = [{"key": f"{rng.getrandbits(40):010x}", "value": i, "text": "x" * rng.randrange(50)} for i in range(200)]
    parts = []
    for i in range(0, len(rows), 23):  # uneven parts, as chunks leave them
        path = tmp_path / f"rows-{i:04d}.parquet"
        merge.write_sorted_part(path, pa.Table.from_pylist(rows[i:i + 23], schema=SCHEMA), "key")
        assert all(pq.ParquetFile(path).metadata.row_group(g).num_rows <= 3
                   for g in range(pq.ParquetFile(path).metadata.num_row_groups))
        parts.append(path)

    held: list[int] = []
    take = merge._Cursor.take

    def watched(self, n):
        out = take(self, n)
        held.append(self._buffer.num_rows)
        return out

    monkeypatch.setattr(merge._Cursor, "take", watched)
    keys = merge.merge_sorted(parts, tmp_path / "out.parquet", "key", SCHEMA)

    whole = pa.Table.from_pylist(rows, schema=SCHEMA).sort_by("key")
    assert pq.read_table(tmp_path / "out.parquet").equals(whole)
    assert keys.column("key").to_pylist() == whole.column("key").to_pylist()
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [7] * 28 + [4]
    assert max(held) < 3  # what a part holds beyond what was taken: less than one read-ahead


def test_merge_of_no_parts_writes_an_empty_file(tmp_path):
    merge.merge_sorted([], tmp_path / "out.parquet", "key", SCHEMA)
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 0


def test_hash_cache_rewrite_merges_a_few_rows_ahead_and_writes_the_whole_rewrite_bytes(tmp_path, monkeypatch):
    """save_hash_cache: old cache + sorted parts, newest entry per path, byte for byte the columnar rewrite
    (polars, whole in memory) it replaces; an old cache that is not sorted takes that rewrite."""
    import tasks.source_hashes as sh

    monkeypatch.setattr(merge, "READ_ROWS", 4)
    monkeypatch.setattr(sh, "ROW_GROUP", 5)
    rng = random.Random(9)

    def entries(n, tag):
        return {f"/r/{rng.getrandbits(12):03x}.dcm": (rng.randrange(9), rng.randrange(9), f"{tag}{i}", i % 2 == 0)
                for i in range(n)}

    old = entries(30, "old")
    cache = tmp_path / "new" / sh.HASH_CACHE
    cache.parent.mkdir(parents=True)
    table = sh.hash_table(old).drop_columns(["verified"])  # a cache from before the verified column
    pq.write_table(table.sort_by("path"), cache)
    parts = []
    for i in range(3):  # each run part overlaps the old cache (rehashed files) and the other parts
        part = tmp_path / f"hashes-{i}.parquet"
        merge.write_sorted_part(part, sh.hash_table({**entries(9, f"p{i}-"), **dict(list(old.items())[i::5])}),
                                "path")
        parts.append(part)
    whole = tmp_path / "whole" / sh.HASH_CACHE
    whole.parent.mkdir(parents=True)
    whole.write_bytes(cache.read_bytes())
    sh._save_hash_cache_whole(whole, [whole, *parts])

    read = []
    rows = merge._sorted_rows
    monkeypatch.setattr(merge, "_sorted_rows", lambda *a: read.append(a[0]) or rows(*a))
    sh.save_hash_cache(tmp_path / "new", parts)
    assert cache.read_bytes() == whole.read_bytes()
    assert read == [cache, *parts]  # merged, not rewritten whole
    got = pq.read_table(cache).to_pylist()
    assert [r["path"] for r in got] == sorted({r["path"] for r in got})

    unsorted = tmp_path / "unsorted" / sh.HASH_CACHE
    unsorted.parent.mkdir(parents=True)
    pq.write_table(sh.hash_table(old).sort_by([("path", "descending")]), unsorted)
    whole.write_bytes(unsorted.read_bytes())
    sh._save_hash_cache_whole(whole, [whole, *parts])
    sh.save_hash_cache(tmp_path / "unsorted", parts)
    assert unsorted.read_bytes() == whole.read_bytes()
