"""cxrio: the atomic writers every stage uses (files, folders, parquet) and their temporary names."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrio import atomic_write_parquet


def test_atomic_parquet_writes_arrow_and_polars_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    atomic_write_parquet(path, pa.table({"a": [1, 2]}))
    assert pq.read_table(path).column("a").to_pylist() == [1, 2]
    atomic_write_parquet(path, pl.DataFrame({"a": [3]}))
    assert pl.read_parquet(path)["a"].to_list() == [3]

    class Broken:
        def write_parquet(self, tmp):
            open(tmp, "wb").write(b"PAR1 partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_parquet(path, Broken())
    assert pl.read_parquet(path)["a"].to_list() == [3]  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]  # no temporary left behind


def test_atomic_path_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    """The one atomic-write helper (the streamed LLaVA export writes through it too)."""
    from cxrio import atomic_path

    target = tmp_path / "d" / "x.json"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["x.json"]
