"""BRAX adapter on its fixture layout: quirks, malformed inputs, and a full ingest that reconciles."""

from __future__ import annotations

import csv

import polars as pl
import pytest
from sources_support import assert_reconciles, config, reasons, rewrite_csv

from fixtures.brax import COLUMNS, write_brax
from tasks.ingest import discover as engine_discover
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError

ADAPTER = get_adapter("brax")


@pytest.fixture(scope="module")
def brax_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("brax")
    return root, write_brax(root, patients=5, seed=1)


def test_layout_quirks(brax_root, tmp_path):
    root, expect = brax_root
    header = (root / "master_spreadsheet_update.csv").read_text().splitlines()[0].split(",")
    assert header != COLUMNS  # column order differs from the documented one: read by name
    d = engine_discover(config("brax", root, tmp_path))
    assert d.found == expect["rows"]
    # ViewPosition NaN: an unknown view, filtered under frontal_only like the laterals (docs/datasets.md)
    unknown = [x for x in d.filtered if x.reason == "not frontal: view unknown (frontal_only)"]
    assert unknown and len(unknown) == d.notes["view_unknown"]
    assert len(d.filtered) - len(unknown) == expect["lateral"]
    assert all("LL" in x.reason for x in d.filtered if x not in unknown)
    assert not d.quarantined
    assert {c.report_origin for c in d.candidates} == {"labels"} and all(
        c.report_text is None for c in d.candidates
    )
    # AccessionNumber 1001 belongs to two patients: the study key keeps them apart.
    with open(root / "master_spreadsheet_update.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shared = {r["PatientID"] for r in rows if r["AccessionNumber"] == "1001"}
    assert len(shared) == 2
    studies = {c.study_id for c in d.candidates if c.study_id.endswith("-1001")}
    assert studies <= {f"{p}-1001" for p in shared} and len(studies) >= 1
    # Labels: 1.0/0.0/-1.0/empty -> 1/0/-1/None; "85 or more" ages and sex O do not disturb anything.
    by_image = {r["DicomPath"].rsplit("image-", 1)[1][:-4]: r for r in rows}
    for c in d.candidates:
        raw = by_image[c.image_id]
        for name, value in c.labels.items():
            assert value == ({"1.0": 1, "0.0": 0, "-1.0": -1, "": None}[raw[name]])
        assert c.kind == "dicom" and c.path.suffix == ".dcm" and "." not in c.image_key
    # Patient-level split: every image of a patient lands in one split.
    per_subject = pl.DataFrame(
        [(c.subject_id, c.split) for c in d.candidates], schema=["s", "split"], orient="row"
    )
    assert per_subject.group_by("s").agg(pl.col("split").n_unique()).get_column("split").max() == 1


def test_png_twin(brax_root, tmp_path):
    root, expect = brax_root
    d = engine_discover(config("brax", root, tmp_path, options={"images": "png"}))
    assert d.found == expect["rows"] and {c.kind for c in d.candidates} == {"png"}
    assert all(c.rel_path.startswith("images/") for c in d.candidates)


def test_missing_file_or_column_named(tmp_path):
    with pytest.raises(SourceLayoutError, match="master_spreadsheet_update.csv"):
        ADAPTER.check(tmp_path)
    write_brax(tmp_path, patients=2, seed=2)
    rewrite_csv(tmp_path / "master_spreadsheet_update.csv", drop_column="Pleural Effusion")
    with pytest.raises(SourceLayoutError, match="'Pleural Effusion'"):
        ADAPTER.check(tmp_path)
    rewrite_csv(tmp_path / "master_spreadsheet_update.csv", drop_column="AccessionNumber")
    with pytest.raises(SourceLayoutError, match="'AccessionNumber'"):
        engine_discover(config("brax", tmp_path, tmp_path / "out"))


@pytest.mark.slow
def test_defects_and_ingest_reconcile(tmp_path):
    from tasks.ingest import run_ingest

    root = tmp_path / "brax"
    expect = write_brax(root, patients=4, seed=3, defects=True)
    d = engine_discover(config("brax", root, tmp_path / "x"))
    got = reasons(d.quarantined)
    assert any(r == "label value outside the 1/0/-1/blank encoding: '2.0' for 'Edema'" for r in got)
    assert any(r == "image file missing (dicom)" for r in got)
    assert any(r.startswith("duplicate row") for r in got)
    summary = run_ingest(config("brax", root, tmp_path / "out"))
    assert_reconciles(summary)
    assert summary["found"] == expect["rows"]
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    truncated = q.filter(pl.col("source_path") == expect["defects"]["truncated"])
    assert truncated.height == 1 and truncated["stage"][0] == "decode"  # unreadable image: the engine's call
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m.height == summary["kept"] > 0 and set(m["report_origin"]) == {"labels"}


def test_image_on_disk_not_in_the_spreadsheet_is_accounted(tmp_path):
    root = tmp_path / "brax"
    write_brax(root, patients=3, seed=4)
    before = engine_discover(config("brax", root, tmp_path / "x"))
    listed = next(p for p in root.rglob("*.dcm"))
    stray = listed.parent / "image-9.9.9.dcm"
    stray.write_bytes(listed.read_bytes())
    after = engine_discover(config("brax", root, tmp_path / "y"))
    assert after.found == before.found + 1
    assert [d.reason for d in after.quarantined if d.source_path.endswith("image-9.9.9.dcm")] == [
        "image file not listed in master_spreadsheet_update.csv"
    ]
