"""CANDID-PTX adapter: duplicate rows, UID file names with dots, labels from masks, malformed inputs, ingest."""

from __future__ import annotations

import polars as pl
import pytest
from sources_support import assert_reconciles, config, rewrite_csv

from fixtures.candid_ptx import write_candid_ptx
from tasks.ingest import discover as engine_discover
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError, make_key

ADAPTER = get_adapter("candid-ptx")


@pytest.fixture(scope="module")
def candid(tmp_path_factory):
    root = tmp_path_factory.mktemp("candid")
    return root, write_candid_ptx(root, images=6, seed=7)


def test_layout_quirks(candid, tmp_path):
    root, expect = candid
    d = engine_discover(config("candid-ptx", root, tmp_path))
    assert d.found == expect["found"] == len(d.candidates)
    # Duplicate SOPInstanceUID rows merged into one image each, and recorded.
    assert d.notes["duplicate_rows_merged"] == expect["duplicates_merged"] and d.notes["report_rows"] == 8
    keys = [c.image_key for c in d.candidates]
    assert len(set(keys)) == len(keys) and all("." not in k for k in keys)
    assert {c.image_id for c in d.candidates} == set(expect["uids"])  # UIDs keep their dots as ids
    assert all(c.image_key == make_key("candid-ptx", c.image_id) for c in d.candidates)
    by_id = {c.image_id: c for c in d.candidates}
    for u in expect["uids"]:
        assert by_id[u].labels["Pneumothorax"] == int(u in expect["positives"])
        assert by_id[u].report_origin == "report" and by_id[u].report_text
    assert "\n" in by_id[expect["positives"][0]].report_text  # multi-line quoted CSV text survives
    assert by_id[expect["chest_tube"]].labels["Support Devices"] == 1
    assert by_id[expect["rib_fracture"]].labels["Fracture"] == 1
    assert by_id[expect["positives"][0]].labels["Support Devices"] is None
    # Patient ids from the header; two images per patient share a split.
    subjects = {c.subject_id for c in d.candidates}
    assert len(subjects) == 3
    assert all(len({c.split for c in d.candidates if c.subject_id == s}) == 1 for s in subjects)


def test_missing_file_or_column_named(tmp_path):
    with pytest.raises(SourceLayoutError, match="Pneumothorax_reports.csv"):
        ADAPTER.check(tmp_path)
    write_candid_ptx(tmp_path, images=2, seed=8)
    rewrite_csv(tmp_path / "Pneumothorax_reports.csv", drop_column="EncodedPixels")
    with pytest.raises(SourceLayoutError, match="'EncodedPixels'"):
        engine_discover(config("candid-ptx", tmp_path, tmp_path / "out"))


def test_defects_and_ingest_reconcile(tmp_path):
    from tasks.ingest import run_ingest

    root = tmp_path / "candid"
    expect = write_candid_ptx(root, images=4, seed=9, defects=True)
    d = engine_discover(config("candid-ptx", root, tmp_path / "x"))
    why = {q.image_key: q.reason for q in d.quarantined}
    defects = {k: make_key("candid-ptx", v) for k, v in expect["defects"].items()}
    assert why[defects["missing"]] == "image file missing"
    assert why[defects["orphan"]] == "no row in Pneumothorax_reports.csv"
    assert why[defects["conflict"]] == "2 duplicate rows disagree on the report text"
    assert why[defects["empty"]] == "empty report"
    assert "neither -1 nor a run-length encoding" in why[defects["bad_rle"]]  # label outside the encoding
    assert why[defects["not_dicom"]].startswith("unreadable DICOM header")
    summary = run_ingest(config("candid-ptx", root, tmp_path / "out"))
    assert_reconciles(summary)
    assert summary["found"] == expect["found"] and summary["kept"] == 4
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert q.filter(pl.col("image_key") == defects["truncated"])["stage"].to_list() == ["decode"]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["report_method"].to_list() == ["mimic-cxr-sections"] * 4  # reports went through the section parser
    assert m.filter(pl.col("label_pneumothorax") == 1).height == 2
    assert m["findings"].drop_nulls().len() >= 1
