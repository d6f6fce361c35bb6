"""CheXpert and CheXpert-Plus adapters on their fixture layout, quirks and malformed inputs."""

from __future__ import annotations

import polars as pl
import pytest
from sources_support import assert_planted, count_reason, discover, ingest, rewrite_csv, tree_digest

from fixtures.chexpert import write_chexpert
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError
from tasks.sources.chexpert import plus_sections, split_embedded_impression, strip_prefix


@pytest.fixture(scope="module")
def cx(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    return root, write_chexpert(root, patients=6, seed=3)


def test_layout_prefix_split_labels_and_planted_defects(cx):
    root, facts = cx
    disc = discover("chexpert", root)
    assert disc.found == facts["rows"]
    assert len(disc.filtered) == facts["lateral"]
    assert all(d.reason == "not frontal: view LATERAL (frontal_only)" for d in disc.filtered)
    assert_planted(disc, facts["quarantine"])
    c = disc.candidates[0]
    # Path 'CheXpert-v1.0/train/patient00001/...' resolves against the folder holding train.csv.
    assert c.path.is_file() and c.rel_path.startswith("train/patient")
    assert c.subject_id.startswith("patient") and c.study_id.startswith(c.subject_id + "_study")
    assert {x.split for x in disc.candidates} == {"train", "validate"}
    assert all(x.split == "validate" for x in disc.candidates if "/valid/" in str(x.path))
    values = {v for x in disc.candidates for v in x.labels.values()}
    assert values == {1, 0, -1, None}  # 1.0 / 0.0 / -1.0 / blank
    assert all(x.report_origin == "labels" and x.report_text is None for x in disc.candidates)
    # LL/RL/blank AP/PA on a Frontal row: a frontal film without a named projection, kept under frontal_only
    assert {x.view for x in disc.candidates} == {"AP", "PA", "FRONTAL"}


def test_small_release_prefix_and_laterals_kept_without_frontal_only(tmp_path):
    facts = write_chexpert(tmp_path, patients=3, seed=5, small=True, quirks=False)
    assert (tmp_path / "CheXpert-v1.0-small" / "train.csv").is_file()
    disc = discover("chexpert", tmp_path, frontal_only=False)
    assert len(disc.candidates) == facts["rows"] and not disc.filtered and not disc.quarantined
    assert sum(c.view == "LATERAL" for c in disc.candidates) == facts["lateral"]
    # The root may also be the CheXpert-v1.0-small folder itself.
    assert len(discover("chexpert", tmp_path / "CheXpert-v1.0-small", frontal_only=False).candidates) == facts["rows"]


def test_plus_joins_reports_on_path_without_prefix(cx):
    root, facts = cx
    disc = discover("chexpert-plus", root)
    with_report = [c for c in disc.candidates if c.report_origin == "report"]
    without = [c for c in disc.candidates if c.report_origin == "labels"]
    assert with_report and without  # the fixture leaves labelled images without a report
    for c in with_report:
        assert c.report_text and c.report_method == "chexpert-plus-columns"
        assert c.sections["findings"] and "END OF IMPRESSION" not in (c.sections["impression"] or "")
    assert disc.notes["report_rows_without_labelled_image"] == 1
    assert disc.found == facts["rows"]


def test_plus_csv_without_leading_index(tmp_path):
    write_chexpert(tmp_path, patients=3, seed=4, plus_index=False, quirks=False)
    header = (tmp_path / "df_chexpert_plus_240401.csv").read_text().splitlines()[0]
    assert header.startswith("path_to_image,")
    disc = discover("chexpert-plus", tmp_path)
    assert all(c.report_origin == "report" for c in disc.candidates)


def test_plus_sections_that_do_not_map_one_to_one():
    assert split_embedded_impression("1. CLEAR LUNGS. IMPRESSION: NORMAL CHEST.") == ("1. CLEAR LUNGS.", "NORMAL CHEST.")
    row = {"section_findings": "1. EFFUSION. IMPRESSION: SMALL EFFUSION.", "section_impression": None,
           "section_clinical_history": "COUGH", "section_procedure_comments": "PORTABLE", "section_technique": "AP"}
    s = plus_sections(row)
    assert s["findings"] == "1. EFFUSION." and s["impression"] == "SMALL EFFUSION."
    assert s["indication"] == "COUGH" and s["technique"] == "AP\nPORTABLE"
    narrative = plus_sections({"section_narrative": "LUNGS ARE CLEAR.", "section_findings": ""})
    assert narrative["findings"] == "LUNGS ARE CLEAR." and narrative["impression"] is None
    assert strip_prefix("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg").startswith("valid/")


def test_missing_column_named_before_any_work(tmp_path):
    write_chexpert(tmp_path, patients=2, seed=1, quirks=False)
    rewrite_csv(tmp_path / "CheXpert-v1.0" / "valid.csv", drop_column="Pleural Effusion")
    with pytest.raises(SourceLayoutError, match="Pleural Effusion"):
        get_adapter("chexpert").check(tmp_path)
    with pytest.raises(SourceLayoutError, match="train.csv"):
        get_adapter("chexpert").check(tmp_path / "CheXpert-v1.0" / "train")
    plus = tmp_path / "plus"
    write_chexpert(plus, patients=2, seed=1, quirks=False)
    rewrite_csv(plus / "df_chexpert_plus_240401.csv", drop_column="path_to_image")
    with pytest.raises(SourceLayoutError, match="path_to_image"):
        get_adapter("chexpert-plus").check(plus)
    (plus / "df_chexpert_plus_240401.csv").unlink()
    with pytest.raises(SourceLayoutError, match="df_chexpert_plus_240401.csv"):
        get_adapter("chexpert-plus").check(plus)


def test_label_outside_encoding_and_empty_file_quarantined(tmp_path):
    write_chexpert(tmp_path, patients=2, seed=2, quirks=False)
    train = tmp_path / "CheXpert-v1.0" / "train.csv"
    first = pl.read_csv(train, infer_schema=False)["Path"][0]
    rewrite_csv(train, edit=lambda r: r.update(Cardiomegaly="yes") if r["Path"] == first else None)
    (tmp_path / first).write_bytes(b"")
    second = pl.read_csv(train, infer_schema=False)["Path"][1]
    rewrite_csv(train, edit=lambda r: r.update({"Frontal/Lateral": "Oblique"}) if r["Path"] == second else None)
    disc = discover("chexpert", tmp_path)
    assert count_reason(disc.quarantined, "image file is empty") == 1  # the file defect is found first
    (tmp_path / first).write_bytes((tmp_path / second).read_bytes())
    disc = discover("chexpert", tmp_path)
    assert count_reason(disc.quarantined, "outside the 1/0/-1/blank encoding: 'yes' for 'Cardiomegaly'") == 1
    assert count_reason(disc.quarantined, "Frontal/Lateral value outside Frontal/Lateral: 'Oblique'") == 1


def test_ingest_reconciles_and_quarantines_truncated_jpeg(cx, tmp_path):
    root, facts = cx
    summary = ingest("chexpert-plus", root, tmp_path / "out")
    assert summary["found"] == facts["rows"]
    assert summary["filtered"] == facts["lateral"]
    assert summary["quarantined"] == sum(facts["quarantine"].values()) + len(facts["truncated"])
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    decode = q.filter(pl.col("stage") == "decode")
    assert decode["source_path"].to_list() == facts["truncated"]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(m["report_origin"]) == {"report", "labels"}
    assert m.filter(pl.col("report_origin") == "report")["report_method"].unique().to_list() == ["chexpert-plus-columns"]
    assert set(m["split"]) <= {"train", "validate"}


def test_licence_and_premises():
    for name in ("chexpert", "chexpert-plus"):
        a = get_adapter(name)
        assert a.may_leave_premises is False and "Research Use Agreement" in a.licence


def test_fixture_deterministic_under_seed(tmp_path):
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_chexpert(tmp_path / name, patients=3, seed=seed)
        digests.append(tree_digest(tmp_path / name))
    assert digests[0] == digests[1] and digests[0] != digests[2]


def test_image_on_disk_not_in_label_csvs_is_accounted(tmp_path):
    write_chexpert(tmp_path, patients=3, seed=5)
    before = discover("chexpert", tmp_path).found
    some = next(tmp_path.rglob("train/*/*/*.jpg"))
    stray = some.parent / "view9_frontal.jpg"
    stray.write_bytes(some.read_bytes())
    disc = discover("chexpert", tmp_path)
    assert disc.found == before + 1
    (drop,) = [d for d in disc.quarantined if "not listed" in d.reason]
    assert drop.source_path.endswith("/view9_frontal.jpg") and "train.csv" in drop.reason
