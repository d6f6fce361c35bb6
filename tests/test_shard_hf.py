"""Shard folders load with one plain Hugging Face `datasets` call, both ways, on output the shard stage wrote
(GX validation, shards, indexes, dataset card, LLaVA export) from a manifest whose first samples have every
nullable field null: `datasets` infers the types from five samples, so a null there used to break the load."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from fixtures.shard_manifest import default_rows, write_dataset
from schemas.labels import LABEL_COLUMNS
from schemas.manifest import MANIFEST_SCHEMA
from schemas.sample_json import decode_sample_json, encode_sample_json
from schemas.shards import SPLITS, ShardConfig, ValidateConfig

NULLABLE_TEXT = ("technique", "history", "indication", "comparison", "view", "orientation", "report_language")


def _rows() -> list[dict]:
    """24 rows (train 20, validate 2, test 2); in each split the first five by key have no labels, no optional
    section, no view, no source labels; the later train rows have all of them."""
    rows = default_rows(24)
    seen: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: r["image_key"]):  # the shard order within a split
        seen[row["split"]] = seen.get(row["split"], 0) + 1
        if seen[row["split"]] <= 5:
            row.update(dict.fromkeys((*LABEL_COLUMNS, *NULLABLE_TEXT, "has_addendum", "source_labels")))
        else:
            row.update(
                technique="PA and lateral", history="Fever.", source_labels=["pleural effusion", "loc basal"]
            )
            row.update(report_language="en", label_edema=1)
    return rows


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """What the shard flow writes, through its task functions (no Prefect server)."""
    from tasks.export_llava import export_llava
    from tasks.shard import write_shards
    from tasks.shard_index import write_dataset_card, write_shard_map, write_summary, write_wids_index
    from tasks.validate import run_validation

    tmp = tmp_path_factory.mktemp("hf")
    rows = _rows()
    data = write_dataset(tmp / "data", rows)
    out = tmp / "shards"
    res = run_validation(data, out, tmp / "artifacts", ValidateConfig())
    assert res.counts["accepted"] == 24
    infos = write_shards(res.accepted, data, out, ShardConfig(max_samples=4))
    for s in SPLITS:
        write_wids_index(out, s, infos)
    write_shard_map(out, infos, res.accepted)
    write_dataset_card(out, res.accepted)
    write_summary(out, infos, res.counts)
    export_llava(res.accepted, out, data_dir=data)
    return out, {r["image_key"]: r for r in rows}


@pytest.mark.parametrize("how", ["folder", "webdataset"])
def test_one_plain_call_loads_the_shard_folder(shards, tmp_path, monkeypatch, how):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out, rows = shards
    kwargs = {"path": str(out)} if how == "folder" else {"path": "webdataset", "data_dir": str(out)}
    ds = datasets.load_dataset(**kwargs, cache_dir=str(tmp_path / "hf"))
    assert {k: len(v) for k, v in ds.items()} == {"train": 20, "validation": 2, "test": 2}
    assert ds["train"].features["json"]["chexpert_labels"]["Edema"].dtype == "string"
    first, last = ds["train"][0], ds["train"][-1]
    assert {"jpg", "json", "txt", "__key__"} <= set(first) and first["txt"]
    assert first["json"]["technique"] == "" and last["json"]["technique"] == "PA and lateral"
    assert first["json"]["chexpert_labels"]["Edema"] == "unmentioned"
    assert last["json"]["chexpert_labels"]["Edema"] == "positive"
    assert last["json"]["source_labels"] == "pleural effusion|loc basal"
    for split in ds.values():  # the manifest's values come back from what datasets read
        for sample in split:
            meta, row = decode_sample_json(sample["json"]), rows[sample["__key__"]]
            assert {c: meta[c] for c in LABEL_COLUMNS} == {c: row[c] for c in LABEL_COLUMNS}
            assert {c: meta[c] for c in NULLABLE_TEXT} == {c: row[c] for c in NULLABLE_TEXT}
            assert meta["source_labels"] == row["source_labels"]


def _nulls(v) -> bool:
    return (
        v is None
        or (isinstance(v, dict) and any(_nulls(x) for x in v.values()))
        or (isinstance(v, list) and (not v or any(_nulls(x) for x in v)))
    )


@pytest.mark.parametrize("case", ["values", "nulls", "empty"])
def test_sample_json_has_no_nulls_and_decodes_to_the_manifest_row_exactly(case):
    """Every manifest field and the indication, null or not, is written as a typed value and read back exactly
    as the manifest has it: "" apart from absent (a released record's empty reason is an indication to the
    LLaVA-Rad prompt), has_addendum unknown apart from false, no source labels apart from an empty list, and
    every label state."""
    row = dict(default_rows(4)[1])
    indication: str | None = "Fever, from the structured report."
    if case == "values":
        row.update(
            has_addendum=True, source_labels=["Nodule/Mass", "loc left"], label_edema=1, label_fracture=-1
        )
        row.update(label_atelectasis=0, label_pneumonia=None)
    elif case == "nulls":
        row.update({f.name: None for f in MANIFEST_SCHEMA if f.nullable})
        indication = None
    else:  # present but empty
        row.update({f.name: "" for f in MANIFEST_SCHEMA if f.nullable and pa.types.is_string(f.type)})
        row.update(has_addendum=False, source_labels=[])
        indication = ""
    meta = encode_sample_json(row, [{"findings": "x", "method": "rule-based"}], indication, "rule-based")
    assert not [k for k, v in meta.items() if _nulls(v) and k != "targets"], meta
    back = decode_sample_json(json.loads(json.dumps(meta)))
    # `indication` is the validated one (the manifest's section, or a structured/released version's reason)
    fields = [n for n in MANIFEST_SCHEMA.names if n != "indication"]
    assert {n: back[n] for n in fields} == {n: row.get(n) for n in fields}
    assert back["indication"] == indication and back["targets"][0]["findings"] == "x"
    if case == "values":
        states = {
            c: back[c] for c in ("label_edema", "label_fracture", "label_atelectasis", "label_pneumonia")
        }
        assert states == {
            "label_edema": 1,
            "label_fracture": -1,
            "label_atelectasis": 0,
            "label_pneumonia": None,
        }


def test_layout_four_sample_json_still_decodes():
    """K.json written before `absent` (layout 4): "" reads as absent, as it was written."""
    meta = encode_sample_json(default_rows(4)[0], [], None, "rule-based")
    meta.pop("absent")
    assert decode_sample_json({**meta, "technique": ""})["technique"] is None


def test_old_layout_passes_through_decode():
    old = {"label_edema": 1, "technique": None, "indication": "Cough."}
    assert decode_sample_json(old) == old


def test_dataset_card_explains_the_encoding(shards):
    card = (shards[0] / "README.md").read_text()
    assert "unmentioned" in card and "dataset_info" not in card
    assert pl.read_parquet(shards[0] / "shards.parquet").height == 24


def test_training_reads_the_indication_as_the_manifest_has_it():
    """The LLaVA-Rad prompt tests `indication is None` ("" takes the indication wording): training reads an
    absent indication as None and a released record's empty one as ""."""
    import io

    from training.data import sample_meta

    row = default_rows(4)[0]
    for indication in (None, "", "Cough."):
        meta = encode_sample_json(row, [{"findings": "x", "method": "rule-based"}], indication, "rule-based")
        raw = json.dumps(meta).encode()
        assert sample_meta({".json": io.BytesIO(raw)})["indication"] == indication


def test_a_layout_bump_gives_the_shard_stage_and_everything_after_it_new_hashes(monkeypatch):
    """A pipeline never reuses a shard stage written in another K.json layout (nor training on it)."""
    import schemas.pipeline as pipeline

    cfg = pipeline.PipelineConfig.model_validate({"out": "/tmp/o", "data": {"root": "/tmp"}})
    before = cfg.stage_hashes()
    monkeypatch.setattr(pipeline, "LAYOUT_VERSION", pipeline.LAYOUT_VERSION - 1)
    after = cfg.stage_hashes()
    assert before["ingest"] == after["ingest"] and before["structure"] == after["structure"]
    assert all(before[s] != after[s] for s in ("shard", "train", "evaluate"))
