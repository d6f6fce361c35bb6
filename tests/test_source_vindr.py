"""VinDr-CXR adapter: reader consensus, label mapping, test-file spelling, split, malformed inputs, ingest."""

from __future__ import annotations

import polars as pl
import pydicom
import pytest
from sources_support import assert_reconciles, config, reasons, rewrite_csv

from fixtures.vindr_cxr import write_vindr_cxr
from tasks.ingest import discover as engine_discover
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError
from tasks.sources.vindr_cxr import consensus, to_chexpert

ADAPTER = get_adapter("vindr-cxr")


@pytest.fixture(scope="module")
def vindr(tmp_path_factory):
    root = tmp_path_factory.mktemp("vindr")
    return root, write_vindr_cxr(root, train=6, test=3, seed=4)


def test_consensus_and_mapping_rules():
    assert consensus([1, 1, 0]) == 1 and consensus([1, 0, 0]) == 0 and consensus([1, 0]) == -1
    assert consensus([1]) == 1 and consensus([0, 0, 0]) == 0
    mapped = to_chexpert({"Nodule/Mass": 0, "Lung tumor": 1, "Rib fracture": -1, "Clavicle fracture": 0,
                          "Pleural thickening": 0, "Infiltration": 1, "Lung Opacity": 0})  # fmt: skip
    assert mapped["Lung Lesion"] == 1 and mapped["Fracture"] == -1 and mapped["Pleural Other"] == 0
    assert mapped["Lung Opacity"] == 1
    assert mapped["Support Devices"] is None and mapped["Enlarged Cardiomediastinum"] is None


def test_layout_quirks(vindr, tmp_path):
    root, expect = vindr
    assert all(p.suffix == ".dicom" for p in (root / "train").iterdir())
    assert "Other disease," in (root / "annotations/image_labels_test.csv").read_text().splitlines()[0] + ","
    d = engine_discover(config("vindr-cxr", root, tmp_path))
    assert d.found == expect["found"] and not d.quarantined and not d.filtered
    by_id = {c.image_id: c for c in d.candidates}
    # Readers disagree: 2 of 3 -> positive, 1 of 3 -> negative.
    assert by_id[expect["train"][0]].labels["Cardiomegaly"] == 1
    assert by_id[expect["train"][1]].labels["Cardiomegaly"] == 0
    assert d.notes["reader_counts"]["train"] == {3: 6} and d.notes["reader_counts"]["test"] == {1: 3}
    assert not d.notes["unmapped_columns_absent"]  # 'Other disease' was recognised as 'Other diseases'
    # Official split, validate carved from train only, and reproducibly.
    assert {by_id[i].split for i in expect["test"]} == {"test"}
    assert {by_id[i].split for i in expect["train"]} <= {"train", "validate"}
    carved = engine_discover(config("vindr-cxr", root, tmp_path, options={"validate_fraction": 0.5}))
    assert [c.split for c in carved.candidates] == [c.split for c in engine_discover(
        config("vindr-cxr", root, tmp_path, options={"validate_fraction": 0.5})).candidates]  # fmt: skip
    assert {c.split for c in carved.candidates if c.image_id in expect["train"]} == {"train", "validate"}
    assert all(c.report_origin == "labels" and c.kind == "dicom" for c in d.candidates)
    # Films carry the decoder traps: MONOCHROME1 and a BitsStored smaller than the data.
    headers = [pydicom.dcmread(c.path, stop_before_pixels=True) for c in d.candidates]
    assert any(h.PhotometricInterpretation == "MONOCHROME1" for h in headers)
    assert any(h.BitsStored == 12 and h.BitsAllocated == 16 and "RescaleIntercept" in h for h in headers)


def test_missing_folder_or_column_named(tmp_path):
    with pytest.raises(SourceLayoutError, match="train/"):
        ADAPTER.check(tmp_path)
    write_vindr_cxr(tmp_path, train=2, test=1, seed=5)
    rewrite_csv(tmp_path / "annotations/image_labels_test.csv", drop_column="Pleural effusion")
    with pytest.raises(SourceLayoutError, match="image_labels_test.csv.*'Pleural effusion'"):
        ADAPTER.check(tmp_path)
    rewrite_csv(tmp_path / "annotations/image_labels_train.csv", drop_column="rad_id")
    with pytest.raises(SourceLayoutError, match="'rad_id'"):
        ADAPTER.check(tmp_path)


def test_defects_and_ingest_reconcile(tmp_path):
    from tasks.ingest import run_ingest

    root = tmp_path / "vindr"
    expect = write_vindr_cxr(root, train=5, test=2, seed=6, defects=True, jpeg2000=True)
    d = engine_discover(config("vindr-cxr", root, tmp_path / "x"))
    by_reason = {q.image_key.split("_", 1)[1]: q.reason for q in d.quarantined}
    defects = expect["defects"]
    assert by_reason[defects["missing"]] == "image file missing"
    assert by_reason[defects["orphan"]].startswith("no rows in")
    assert "Edema" in by_reason[defects["bad_label"]] and "'2'" in by_reason[defects["bad_label"]]
    summary = run_ingest(config("vindr-cxr", root, tmp_path / "out"))
    assert_reconciles(summary)
    assert summary["found"] == expect["found"]
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert q.filter(pl.col("source_path") == f"train/{defects['truncated']}.dicom")["stage"].to_list() == [
        "decode"
    ]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m.height == summary["kept"] == expect["found"] - 4
    assert (
        m["decoder"].str.contains("JPEG 2000", literal=True).all()
    )  # every film JPEG 2000 compressed, all decoded
    assert reasons(d.filtered) == []
