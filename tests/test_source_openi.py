"""Open-I (Indiana University) adapter on both released forms (NLM XML, Kaggle CSVs), quirks and malformed inputs."""

from __future__ import annotations

import polars as pl
import pytest
from sources_support import assert_planted, count_reason, discover, ingest, rewrite_csv, tree_digest

from fixtures.openi import write_openi
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError
from tasks.sources.openi import image_id_from_filename, normalize_deid


@pytest.fixture(scope="module")
def xml_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("openi-xml")
    return root, write_openi(root, reports=8, seed=3)


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("openi-kaggle")
    return root, write_openi(root, reports=8, seed=3, variant="kaggle")


def test_xml_sections_parent_images_and_planted_defects(xml_root):
    root, facts = xml_root
    assert any("/>" in p.read_text() for p in (root / "ecgen-radiology").glob("*.xml"))  # self-closing sections
    # The XML states no projection: under frontal_only every film is an unknown view and filtered.
    framed = discover("openi", root)
    assert not framed.candidates and framed.notes["view_unknown"] == facts["images"]
    assert {d.reason for d in framed.filtered} == {"not frontal: view unknown (frontal_only)"}
    disc = discover("openi", root, frontal_only=False)
    assert_planted(disc, facts["quarantine"])
    # Every written image is a candidate, the truncated one too: only decoding finds it.
    assert len(disc.candidates) == facts["images"]
    assert not disc.filtered
    for c in disc.candidates:
        assert c.path.name == f"{c.image_id}.png" and c.image_id.startswith(c.study_id + "_")
        assert "XXXX" not in " ".join(v for v in c.sections.values() if v) if c.sections else True
    with_text = [c for c in disc.candidates if c.report_origin == "report"]
    assert with_text and all(c.report_method == "openi-sections" and c.sections["findings"] for c in with_text)
    empty = [c for c in disc.candidates if c.report_origin == "none"]
    assert empty and all(c.sections is None or not (c.sections["findings"] or c.sections["impression"]) for c in empty)
    # report_text keeps the original wording, de-identification token included.
    assert any("XXXX" in (c.report_text or "") for c in disc.candidates)


def test_xxxx_inside_words():
    assert normalize_deid("Normal chest x-XXXX.") == "Normal chest ___."
    assert normalize_deid("XXXX-year-old male") == "___ male"
    assert normalize_deid("Calcified granuloma in the right XXXX.") == "Calcified granuloma in the right ___."
    assert normalize_deid("No XXXXnal opacity") == "No ___ opacity"
    assert normalize_deid("Clear  lungs.\n") == "Clear lungs."


def test_kaggle_variant_projections_and_same_ids(kaggle_root, xml_root):
    root, facts = kaggle_root
    disc = discover("openi", root)
    assert disc.notes["variant"] == "kaggle"
    assert_planted(disc, facts["quarantine"])
    assert len(disc.filtered) == facts["lateral"]
    assert all(d.reason == "not frontal: view LATERAL (frontal_only)" for d in disc.filtered)
    assert all("." not in c.image_key for c in disc.candidates)  # '1_IM-0001-4001.dcm.png' -> no dots
    assert image_id_from_filename("1_IM-0001-4001.dcm.png") == "CXR1_IM-0001-4001"
    assert {c.view for c in disc.candidates} == {"FRONTAL"}  # the projections file says Frontal, not AP/PA
    xml_keys = {c.image_key for c in discover("openi", xml_root[0], frontal_only=False).candidates}
    assert {c.image_key for c in disc.candidates} <= xml_keys  # both releases key images alike
    kept_all = discover("openi", root, frontal_only=False)
    assert sum(c.view == "LATERAL" for c in kept_all.candidates) == facts["lateral"]


def test_missing_files_and_columns_named(tmp_path):
    with pytest.raises(SourceLayoutError, match="ecgen-radiology"):
        get_adapter("openi").check(tmp_path)
    write_openi(tmp_path, reports=2, seed=1, variant="kaggle", quirks=False)
    rewrite_csv(tmp_path / "indiana_reports.csv", drop_column="findings")
    with pytest.raises(SourceLayoutError, match="findings"):
        get_adapter("openi").check(tmp_path)
    write_openi(tmp_path / "k2", reports=2, seed=1, variant="kaggle", quirks=False)
    rewrite_csv(tmp_path / "k2" / "indiana_projections.csv", drop_column="projection")
    with pytest.raises(SourceLayoutError, match="projection"):
        get_adapter("openi").check(tmp_path / "k2")
    (tmp_path / "k2" / "indiana_projections.csv").unlink()
    with pytest.raises(SourceLayoutError, match="indiana_projections.csv"):
        get_adapter("openi").check(tmp_path / "k2")


def test_label_value_outside_encoding_and_empty_image(tmp_path):
    write_openi(tmp_path, reports=3, seed=2, variant="kaggle", quirks=False)
    rewrite_csv(tmp_path / "indiana_projections.csv", edit=lambda r: r.update(projection="AP-ish") if r["uid"] == "2" else None)
    first = next((tmp_path / "images" / "images_normalized").glob("1_*.dcm.png"))
    first.write_bytes(b"")
    disc = discover("openi", tmp_path)
    assert count_reason(disc.quarantined, "projection outside Frontal/Lateral: 'AP-ish'") >= 1
    assert count_reason(disc.quarantined, "image file is empty") == 1


def test_ingest_reconciles_and_quarantines_truncated_png(xml_root, tmp_path):
    root, facts = xml_root
    summary = ingest("openi", root, tmp_path / "out", frontal_only=False)  # the XML states no view
    assert summary["quarantined"] == sum(facts["quarantine"].values()) + len(facts["truncated"])
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet").filter(pl.col("stage") == "decode")
    assert [p.rsplit("/", 1)[-1] for p in q["source_path"]] == facts["truncated"]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(m["report_method"].drop_nulls()) == {"openi-sections"}
    assert not m["findings"].drop_nulls().str.contains("XXXX").any()


def test_fixture_deterministic_under_seed(tmp_path):
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_openi(tmp_path / name, reports=3, seed=seed)
        digests.append(tree_digest(tmp_path / name))
    assert digests[0] == digests[1] and digests[0] != digests[2]


@pytest.mark.parametrize("variant", ["xml", "kaggle"])
def test_png_not_referenced_by_any_report_is_accounted(tmp_path, variant):
    write_openi(tmp_path, reports=6, seed=5, variant=variant)
    before = discover("openi", tmp_path).found
    some = next(tmp_path.rglob("*.png"))
    name = "CXR9999_IM-9999-1001.png" if variant == "xml" else "9999_IM-9999-1001.dcm.png"
    (some.parent / name).write_bytes(some.read_bytes())
    disc = discover("openi", tmp_path)
    assert disc.found == before + 1
    assert count_reason(disc.quarantined, "not listed in") == 1


def test_xml_release_with_dicom_metadata_keeps_exactly_its_pa_ap_films(tmp_path):
    """torchxrayvision's nlmcxr_dicom_metadata.csv.gz in the root gives the XML release its views: the default
    frontal-only ingest keeps exactly the PA/AP films it names (less the planted missing/truncated files),
    filters laterals by their view and films with a blank View Position as unknown."""
    root = tmp_path / "openi"
    facts = write_openi(root, reports=12, seed=5, dicom_metadata=True)
    views = facts["dicom_views"]
    assert {"PA", "AP", ""} <= set(views.values()) and {"LL", "LATERAL"} & set(views.values())
    lost = {f"CXR{facts['missing']}"} | {n.removesuffix(".png") for n in facts["truncated"]}
    summary = ingest("openi", root, tmp_path / "out")  # no --all-views
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    kept = {k for k, v in views.items() if v in ("PA", "AP")} - lost
    assert set(m["image_id"]) == kept and set(m["view"]) <= {"PA", "AP"}
    assert dict(zip(m["image_id"], m["view"], strict=True)) == {k: views[k] for k in kept}
    disc = discover("openi", root)
    assert disc.notes["view_source"] == "nlmcxr_dicom_metadata.csv.gz"
    assert count_reason(disc.filtered, "view unknown") == sum(
        v == "" for k, v in views.items() if k != f"CXR{facts['missing']}"
    ) == disc.notes["view_unknown"]
    assert count_reason(disc.filtered, "view LL") == sum(v == "LL" for v in views.values())
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]


def test_dicom_metadata_named_by_option_and_checked(tmp_path):
    root = tmp_path / "openi"
    write_openi(root, reports=4, seed=1, quirks=False, dicom_metadata=True)
    moved = tmp_path / "elsewhere.csv.gz"
    (root / "nlmcxr_dicom_metadata.csv.gz").rename(moved)
    # without the file: every film's view is unknown, and the hint names the file
    disc = discover("openi", root)
    assert not disc.candidates and "nlmcxr_dicom_metadata.csv.gz" in disc.notes["hint"]
    named = discover("openi", root, options={"dicom_metadata": str(moved)})
    assert named.candidates and {c.view for c in named.candidates} <= {"PA", "AP"}
    with pytest.raises(SourceLayoutError, match="dicom_metadata file named by the option"):
        get_adapter("openi").check(root, {"dicom_metadata": "nope.csv.gz"})
    (root / "nlmcxr_dicom_metadata.csv").write_text("imageid,ViewPosition\nCXR1_IM-1001-1001,PA\n")
    with pytest.raises(SourceLayoutError, match="View Position"):
        get_adapter("openi").check(root)
