"""NIH ChestX-ray14 adapter on its fixture layout (both Data_Entry variants), quirks and malformed inputs."""

from __future__ import annotations

import polars as pl
import pytest
from PIL import Image
from sources_support import assert_planted, count_reason, discover, ingest, tree_digest

from fixtures.chestxray14 import HEADER_V2020, write_chestxray14
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError
from tasks.sources.chestxray14 import map_labels, parse_findings


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr14")
    return root, write_chestxray14(root, images=16, seed=3)


def test_bracket_comma_header_lists_split_and_planted_defects(nih):
    root, facts = nih
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    assert lines[0] == HEADER_V2020 and len(lines[0].split(",")) == 11 and len(lines[1].split(",")) == 11
    disc = discover("chestxray14", root)
    assert disc.found == facts["rows"]
    assert_planted(disc, facts["quarantine"])
    test_names = set((root / "test_list.txt").read_text().split())
    for c in disc.candidates:
        assert c.path.parent.name == "images" and c.path.parent.parent.name.startswith("images_")
        assert (c.split == "test") == (c.path.name in test_names)
    assert sum(c.split == "test" for c in disc.candidates) == facts["test"]
    # validate is carved from train_val by patient: every patient sits in exactly one split.
    by_patient: dict[str, set[str]] = {}
    for c in disc.candidates:
        by_patient.setdefault(c.subject_id, set()).add(c.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert all(c.report_origin == "labels" and c.report_text is None for c in disc.candidates)


def test_validate_carved_from_train_val_by_patient_hash(nih):
    root, _ = nih
    disc = discover("chestxray14", root, split_ratios=(0.5, 0.5, 0.0))
    splits = {c.split for c in disc.candidates}
    assert {"train", "validate", "test"} <= splits
    again = discover("chestxray14", root, split_ratios=(0.5, 0.5, 0.0))
    assert [c.split for c in disc.candidates] == [c.split for c in again.candidates]  # deterministic


def test_old_data_entry_with_trailing_commas(tmp_path):
    facts = write_chestxray14(tmp_path, images=8, seed=4, variant="2017")
    text = (tmp_path / "Data_Entry_2017.csv").read_text().splitlines()
    assert text[0].endswith(",") and all(line.endswith(",") for line in text[1:])
    disc = discover("chestxray14", tmp_path)
    assert disc.found == facts["rows"]
    assert disc.notes["data_entry"] == "Data_Entry_2017.csv"
    # Header without the trailing comma but rows with it (ragged) reads the same.
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join([text[0].rstrip(","), *text[1:]]) + "\n")
    assert [c.labels for c in discover("chestxray14", tmp_path).candidates] == [c.labels for c in disc.candidates]


def test_pipe_labels_mapping(nih):
    root, facts = nih
    assert map_labels(["No Finding"])["No Finding"] == 1
    labels = map_labels(parse_findings("Cardiomegaly|Emphysema"))
    assert labels["Cardiomegaly"] == 1 and labels["No Finding"] == 0 and labels["Pleural Effusion"] == 0
    assert labels["Fracture"] is None and labels["Support Devices"] is None  # never labelled by NIH
    assert map_labels(["Pleural_Thickening"])["Pleural Other"] == 1
    assert map_labels(["Mass", "Nodule"])["Lung Lesion"] == 1
    with pytest.raises(ValueError, match="'No Finding' with findings"):
        parse_findings("No Finding|Edema")
    findings = get_adapter("chestxray14").source_findings(root)
    c = discover("chestxray14", root).candidates[2]
    assert "|".join(findings[c.image_key]) == facts["labels"][c.path.name]


def test_rgba_png_and_truncated_png_through_ingest(nih, tmp_path):
    root, facts = nih
    rgba = next(root.glob(f"images_*/images/{facts['rgba'][0]}"))
    with Image.open(rgba) as im:
        assert im.mode == "RGBA"
    summary = ingest("chestxray14", root, tmp_path / "out")
    assert summary["found"] == facts["rows"]
    assert summary["quarantined"] == sum(facts["quarantine"].values()) + len(facts["truncated"])
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet").filter(pl.col("stage") == "decode")
    assert [p.rsplit("/", 1)[-1] for p in q["source_path"]] == facts["truncated"]
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(facts["rgba"]) <= {p.rsplit("/", 1)[-1] for p in m["source_path"]}  # RGBA decoded, kept


def test_missing_column_and_files_named(tmp_path):
    write_chestxray14(tmp_path, images=4, seed=1, quirks=False)
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.write_text(path.read_text().replace("Finding Labels,", "Labels,", 1))
    with pytest.raises(SourceLayoutError, match="Finding Labels"):
        get_adapter("chestxray14").check(tmp_path)
    path.unlink()
    with pytest.raises(SourceLayoutError, match="Data_Entry_2017_v2020.csv"):
        get_adapter("chestxray14").check(tmp_path)


def test_label_outside_encoding_empty_file_and_missing_lists(tmp_path):
    write_chestxray14(tmp_path, images=6, seed=2, quirks=False)
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[1], "Cardiomegaly|Covid", 1)
    path.write_text("\n".join(lines) + "\n")
    second = lines[2].split(",")[0]
    next(tmp_path.glob(f"images_*/images/{second}")).write_bytes(b"")
    (tmp_path / "test_list.txt").unlink()
    disc = discover("chestxray14", tmp_path)
    assert count_reason(disc.quarantined, "outside the ChestX-ray14 label set: 'Covid'") == 1
    assert count_reason(disc.quarantined, "image file is empty") == 1
    assert "hash split" in disc.notes["split"]


def test_fixture_deterministic_under_seed(tmp_path):
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_chestxray14(tmp_path / name, images=6, seed=seed)
        digests.append(tree_digest(tmp_path / name))
    assert digests[0] == digests[1] and digests[0] != digests[2]


def test_image_on_disk_not_in_data_entry_is_accounted(tmp_path):
    facts = write_chestxray14(tmp_path, images=8, seed=5)
    folder = next(tmp_path.glob("images_*/images"))
    stray = folder / "99999999_000.png"
    stray.write_bytes(next(folder.glob("*.png")).read_bytes())
    disc = discover("chestxray14", tmp_path)
    assert disc.found == facts["rows"] + 1
    (drop,) = [d for d in disc.quarantined if "not listed" in d.reason]
    assert drop.source_path == "images_001/images/99999999_000.png" and "Data_Entry" in drop.reason
