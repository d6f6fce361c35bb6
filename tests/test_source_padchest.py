"""PadChest adapter on its fixture layout, quirks and malformed inputs."""

from __future__ import annotations

import ast

import numpy as np
import polars as pl
import pytest
from PIL import Image
from sources_support import assert_planted, count_reason, discover, ingest, rewrite_csv, tree_digest

from fixtures.padchest import CSV_NAME, write_padchest
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError, make_key
from tasks.sources.padchest import PADCHEST_TO_CHEXPERT, map_labels, parse_list_literal


@pytest.fixture(scope="module")
def pc(tmp_path_factory):
    root = tmp_path_factory.mktemp("padchest")
    return root, write_padchest(root, images=16, seed=3)


def test_layout_36_columns_unnamed_index_and_16bit_png(pc):
    root, _ = pc
    header = (root / CSV_NAME).read_text().splitlines()[0].split(",")
    assert len(header) == 36 and header[0] == ""
    disc = discover("padchest", root)
    c = disc.candidates[0]
    assert c.path.parent.name.isdigit() and c.rel_path == f"{c.path.parent.name}/{c.path.name}"
    with Image.open(c.path) as im:
        assert im.mode.startswith("I;16")
        assert np.asarray(im).max() > 255


def test_projections_planted_defects_and_reconciliation(pc):
    root, facts = pc
    disc = discover("padchest", root)
    assert disc.found == facts["rows"]
    assert_planted(disc, facts["quarantine"])
    p = facts["projections"]
    assert count_reason(disc.filtered, "projection EXCLUDE") == p["EXCLUDE"]
    assert count_reason(disc.filtered, "view LATERAL") == p["L"]
    assert count_reason(disc.filtered, "view COSTAL") == p["COSTAL"]
    views = [c.view for c in disc.candidates]
    assert set(views) == {"PA", "AP"}
    assert sum(c.orientation == "Recumbent" for c in disc.candidates) == p["AP_horizontal"]
    # Without frontal_only, laterals and rib views are kept; EXCLUDE never is.
    all_views = discover("padchest", root, frontal_only=False)
    assert len(all_views.filtered) == p["EXCLUDE"]
    assert {c.view for c in all_views.candidates} == {"PA", "AP", "LATERAL", "COSTAL"}


def test_labels_from_literals_spanish_report_kept_and_translation_recorded(pc):
    root, facts = pc
    disc = discover("padchest", root)
    assert disc.notes["report_language"] == "es" and "LLM backend" in disc.notes["translation"]
    for c in disc.candidates:
        if c.image_id not in facts["labels"]:
            continue
        terms = facts["labels"][c.image_id]
        assert c.report_origin == "labels" and c.sections is None
        assert c.report_text and c.report_text.endswith(" .")  # stemmed Spanish, sentences ' . '
        for term in terms:
            if term in PADCHEST_TO_CHEXPERT:
                assert c.labels[PADCHEST_TO_CHEXPERT[term]] == 1
        assert set(c.labels.values()) <= {1, None}  # PadChest lists positives only
    findings = get_adapter("padchest").source_findings(root)
    some = disc.candidates[1]
    assert findings[some.image_key].labels == facts["labels"][some.image_id]
    assert all(loc.startswith("loc ") and "  " not in loc for loc in findings[some.image_key].localizations)


def test_literal_parsing_and_cui_columns_are_not_parsed(pc):
    root, _ = pc
    row = pl.read_csv(root / CSV_NAME, infer_schema=False).row(1, named=True)
    with pytest.raises((ValueError, SyntaxError)):
        ast.literal_eval(row["labelCUIS"])  # numpy repr without commas: the adapter must not need it
    assert ast.literal_eval(row["LocalizationsCUIS"]) == ["C0018787C0443246"]  # silently wrong if parsed
    assert parse_list_literal("Labels", "['loc  cardiac', ' pleural effusion']") == ["loc cardiac", "pleural effusion"]
    assert parse_list_literal("Labels", "") == []
    with pytest.raises(ValueError, match="not a list of strings"):
        parse_list_literal("Labels", "[1, 2]")
    assert map_labels(["normal"])["No Finding"] == 1
    assert map_labels(["aortic elongation"]) == dict.fromkeys(map_labels([]))  # unmapped -> not mentioned


def test_missing_column_named_before_any_work(tmp_path):
    write_padchest(tmp_path, images=4, seed=1, quirks=False)
    rewrite_csv(tmp_path / CSV_NAME, drop_column="Projection")
    with pytest.raises(SourceLayoutError, match="Projection"):
        get_adapter("padchest").check(tmp_path)
    (tmp_path / CSV_NAME).unlink()
    with pytest.raises(SourceLayoutError, match=CSV_NAME):
        get_adapter("padchest").check(tmp_path)


def test_label_value_outside_encoding_and_bad_projection(tmp_path):
    write_padchest(tmp_path, images=4, seed=2, quirks=False)
    ids = pl.read_csv(tmp_path / CSV_NAME, infer_schema=False)["ImageID"].to_list()

    def edit(r):
        if r["ImageID"] == ids[0]:
            r["Labels"] = "{'normal': 1}"
        if r["ImageID"] == ids[2]:
            r["Projection"] = "OBLIQUE"
        if r["ImageID"] == ids[3]:
            r["Labels"] = "['exclude']"

    rewrite_csv(tmp_path / CSV_NAME, edit=edit)
    disc = discover("padchest", tmp_path)
    assert count_reason(disc.quarantined, "Labels not a list of strings") == 1
    assert count_reason(disc.quarantined, "Projection outside PA/L/AP/AP_horizontal/COSTAL/EXCLUDE: 'OBLIQUE'") == 1
    assert count_reason(disc.filtered, "Labels mark the image 'exclude'") == 1
    bad = next(d for d in disc.quarantined if "Labels" in d.reason)
    assert bad.image_key == make_key("padchest", ids[0].rsplit(".", 1)[0])


def test_ingest_reconciles_and_quarantines_truncated_16bit_png(pc, tmp_path):
    root, facts = pc
    summary = ingest("padchest", root, tmp_path / "out")
    assert summary["found"] == facts["rows"]
    assert summary["quarantined"] == sum(facts["quarantine"].values()) + len(facts["truncated"])
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert q.filter(pl.col("stage") == "decode")["source_path"].to_list() == facts["truncated"]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["report_origin"].unique().to_list() == ["labels"]
    assert m["findings"].null_count() == len(m)  # Spanish text never becomes English findings
    assert m["report_text"].null_count() == 0


def test_fixture_deterministic_under_seed(tmp_path):
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_padchest(tmp_path / name, images=6, seed=seed)
        digests.append(tree_digest(tmp_path / name))
    assert digests[0] == digests[1] and digests[0] != digests[2]


def test_image_on_disk_not_in_csv_is_accounted(tmp_path):
    facts = write_padchest(tmp_path, images=8, seed=5)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    (folder / "stray_unlisted.png").write_bytes(next(folder.glob("*.png")).read_bytes())
    disc = discover("padchest", tmp_path)
    assert disc.found == facts["rows"] + 1
    (drop,) = [d for d in disc.quarantined if "not listed" in d.reason]
    assert drop.source_path == f"{folder.name}/stray_unlisted.png"
