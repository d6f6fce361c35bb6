"""The released LLaVA-Rad MIMIC-CXR annotations as the report source: join, accounting, no LLM request, the
test split rule-based only, and the paper-style counts."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxrflow_cli.main import app
from fixtures.mimic_cxr import ANNOTATIONS_DIR, write_mimic_cxr
from schemas.config import ImageConfig, IngestConfig
from schemas.llm import LLMConfig, StructureConfig
from schemas.shards import ValidateConfig
from tasks.ingest import run_ingest
from tasks.paper_counts import paper_counts
from tasks.reports.annotations import MALFORMED, NO_IMAGE, NO_RECORD, AnnotationsError, load_records
from tasks.reports.structure import run_structure
from tasks.validate import assemble_samples


def _clean(text):
    return " ".join(text.split()) if isinstance(text, str) else None


@pytest.mark.slow
def test_data_command_with_annotations_shards_the_released_texts(prefect_server, tmp_path):
    # first in this module, on its own fixture copy: after the in-process tests below, the captured-output
    # CliRunner run of the data flow fails on a closed stream (seen only with pytest capture on)
    root, out = tmp_path / "raw", tmp_path / "out"
    write_mimic_cxr(root, studies=8, seed=4, jpg=True, annotations=True)
    res = CliRunner().invoke(
        app,
        [
            "data",
            "--root",
            str(root),
            "--out",
            str(out),
            "--size",
            "32",
            "--workers",
            "1",
            "--annotations",
            str(root / ANNOTATIONS_DIR),
        ],
    )
    assert res.exit_code == 0, res.output
    structure = json.loads((out / "data" / "structure-summary.json").read_text())
    assert structure["requests"] == 0 and structure["released"]["records"] > 0
    summary = json.loads((out / "shards" / "summary.json").read_text())
    assert summary["reconciliation"]["balanced"]
    counts = summary["paper_counts"]["this_run"]
    assert counts["test"]["pairs"] > 0 and set(counts["test"]["pairs_by_method"]) == {"rule-based"}
    assert counts["train"]["pairs_by_method"].get("gpt4", 0) > 0
    assert summary["paper_counts"]["paper"]["train"]["pairs"] == 400_042
    test = json.loads((out / "shards" / "llava" / "test.json").read_text())
    assert test and {r["generate_method"] for r in test} == {"rule-based"}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A JPG fixture with annotation files, ingested with them and structured (rules backend configured)."""
    base = tmp_path_factory.mktemp("released")
    root, data = base / "raw", base / "data"
    truth = write_mimic_cxr(root, studies=8, seed=4, jpg=True, annotations=True)
    summary = run_ingest(
        IngestConfig(
            root=root, out=data, image=ImageConfig(size=32), workers=1, annotations=[root / ANNOTATIONS_DIR]
        )
    )
    return truth, root, data, summary


def test_join_accounts_for_images_without_records_and_records_without_images(released):
    truth, _, data, summary = released
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]
    assert truth.no_record and truth.records_without_image == 2
    assert summary["filtered_by_reason"][NO_RECORD.split(":")[0]] == len(truth.no_record)
    assert summary["quarantined_by_reason"][NO_IMAGE] == truth.records_without_image
    # without annotations the same archive has the records' images as its only extra inputs
    assert summary["found"] == len(truth.expected) + truth.records_without_image
    manifest = pq.read_table(data / "manifest.parquet").to_pylist()
    kept = {r["image_id"] for r in manifest}
    assert not kept & truth.no_record
    rows = pq.read_table(data / "annotations.parquet").to_pylist()
    assert {r["image_key"] for r in rows} == {r["image_key"] for r in manifest}
    assert summary["notes"]["annotations"]["records_without_image"] == 2


def test_released_texts_become_the_versions_with_zero_requests(released):
    truth, _, data, _ = released
    # an LLM backend is configured but never asked: every row has released texts (nothing listens on :9)
    llm = LLMConfig(
        backend="openai", model="gpt-4o", base_url="http://127.0.0.1:9/v1", cache_dir=data / "cache"
    )
    summary = run_structure(StructureConfig(manifest=data / "manifest.parquet", out=data, llm=llm))
    assert summary["requests"] == 0 and summary["reports"] == summary["ok"] + summary["quarantined"]
    assert summary["released"]["records"] == summary["reports"]
    assert summary["released"]["gpt4_vs_rule_based"]["status"] == "computed"

    accepted, filtered = assemble_samples(data, ValidateConfig())
    manifest = {r["image_key"]: r for r in pq.read_table(data / "manifest.parquet").to_pylist()}
    assert accepted.height + len(filtered) == len(manifest)
    splits_seen = set()
    for row in accepted.iter_rows(named=True):
        texts = truth.released[row["image_id"]]
        targets = {t["method"]: t["findings"] for t in json.loads(row["targets_json"])}
        want = {m: _clean(t) for m, t in texts.items() if _clean(t)}
        if row["split"] == "test":
            want = {m: t for m, t in want.items() if m == "rule-based"}
        assert targets == want, row["image_id"]
        splits_seen.add(row["split"])
    assert {"train", "test"} <= splits_seen
    both = [r for r in accepted.iter_rows(named=True) if r["split"] == "train" and r["other_findings"]]
    assert both and both[0]["primary_method"] == "rule-based"  # the .txt member stays rule-based
    # the texts and the indication (the record's `reason`) are the release's, not the parser's
    marked = accepted.filter(accepted["image_id"] == truth.marked).row(0, named=True)
    assert marked["indication_text"] == "Released reason." and "Released text." in marked["findings_text"]
    assert "Released text." not in (manifest[marked["image_key"]]["findings"] or "")

    counts = paper_counts(data, accepted)["this_run"]
    assert (
        counts["test"]["gpt4_reports"] == 0
        and counts["test"]["pairs"] == counts["test"]["rule_based_reports"]
    )
    train = counts["train"]
    assert (
        train["pairs"]
        == sum(train["pairs_by_method"].values())
        == train["rule_based_reports"] + train["gpt4_reports"]
    )
    assert train["images"] >= train["images_with_findings"]

    only_gpt4, _ = assemble_samples(data, ValidateConfig(train_methods=("gpt4",)))
    for row in only_gpt4.iter_rows(named=True):
        methods = {t["method"] for t in json.loads(row["targets_json"])}
        assert methods == ({"rule-based"} if row["split"] == "test" else {"gpt4"})


def test_reingest_without_annotations_leaves_no_stale_file(released, tmp_path):
    _, root, _, _ = released
    out = tmp_path / "again"
    run_ingest(
        IngestConfig(
            root=root, out=out, image=ImageConfig(size=32), workers=1, annotations=[root / ANNOTATIONS_DIR]
        )
    )
    assert (out / "annotations.parquet").exists()
    run_ingest(IngestConfig(root=root, out=out, image=ImageConfig(size=32), workers=1))
    assert not (out / "annotations.parquet").exists()


def test_malformed_records_and_unreadable_files(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "1_2",
                    "image": "mimic/p10/p1/s2/abc.jpg",
                    "generate_method": "gpt4",
                    "conversations": [
                        {"from": "human", "value": "<image>"},
                        {"from": "gpt", "value": "Clear."},
                    ],
                },
                {
                    "id": "1_2",
                    "image": "mimic/p10/p1/s2/abc.jpg",
                    "generate_method": "gpt5",
                    "conversations": [],
                },
                {"id": "1_3"},
            ]
        )
    )
    records, bad = load_records([path])
    assert [r.dicom_id for r in records] == ["abc"] and records[0].findings == "Clear."
    assert len(bad) == 2 and all(d.reason.startswith(MALFORMED) for d in bad)
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(AnnotationsError, match="is not JSON"):
        load_records([tmp_path / "b.json"])
    with pytest.raises(AnnotationsError, match="does not exist"):
        load_records([tmp_path / "missing.json"])
    with pytest.raises(ValueError, match="MIMIC-CXR"):
        IngestConfig(source="chexpert", root=tmp_path, out=tmp_path, annotations=[path])


def test_cli_reports_a_missing_annotations_file_without_a_traceback(tmp_path):
    write_mimic_cxr(tmp_path / "raw", studies=1, seed=0, jpg=True, defects=False)
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            "--root",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "o"),
            "--annotations",
            str(tmp_path / "nope.json"),
            "--no-prefect",
        ],
    )
    unwrapped = re.sub(r"[\s│]", "", res.output)  # click's error box wraps the path where its length falls
    assert res.exit_code == 2 and "nope.json" in unwrapped and "Traceback" not in res.output


def test_cli_reports_an_unreadable_annotations_file_without_a_traceback(tmp_path):
    """A file that exists but is not the release's JSON is found only when ingest reads it: still a one-line
    user error (exit 2), not an exception."""
    write_mimic_cxr(tmp_path / "raw", studies=1, seed=0, jpg=True, defects=False)
    (tmp_path / "bad.json").write_text("{not json")
    args = ["ingest", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, [*args, "--annotations", str(tmp_path / "bad.json"), "--no-prefect"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 2, res.exception
    assert "bad.json is not JSON" in res.output and "Traceback" not in res.output


def test_released_reason_reaches_the_prompt_as_written(tmp_path):
    """The record's `reason` is the prompt's indication as LLaVA-Rad's loader takes it: only `None` selects the
    plain instruction; an empty reason or one with surrounding line breaks keeps the indication wording, with
    the reference's own handling (line breaks -> spaces, then the human turn stripped). Expected prompts are
    derived by hand from llava/utils.py and llava/train/train.py."""
    import polars as pl

    from training.text import prompt_text

    keys = ["k1", "k2", "k3"]
    pl.DataFrame(
        {
            "image_key": keys,
            "source": ["mimic-cxr"] * 3,
            "split": ["train"] * 3,
            "findings": ["Own parser text."] * 3,
            "report_method": ["mimic-cxr-sections"] * 3,
            "report_origin": ["report"] * 3,
            "indication": ["Parser indication."] * 3,
            "image_path": [None] * 3,
        }
    ).write_parquet(tmp_path / "manifest.parquet")
    pl.DataFrame(
        {
            "image_key": keys,
            "operation": ["annotations"] * 3,
            "method": ["gpt4"] * 3,
            "status": ["ok"] * 3,
            "findings": ["Clear lungs."] * 3,
            "indication": ["", "\nCough. ", None],
            "rule_findings": [None, None, None],
        },
        schema_overrides={"rule_findings": pl.String},
    ).write_parquet(tmp_path / "reports.parquet")
    accepted, _ = assemble_samples(tmp_path, ValidateConfig())
    by_key = dict(zip(accepted["image_key"], accepted["indication_text"], strict=True))
    head = "Provide a description of the findings in the radiology image"
    assert prompt_text(2, by_key["k1"], "llava-rad").endswith(
        f"{head} given the following indication: ASSISTANT:"
    )
    assert prompt_text(2, by_key["k2"], "llava-rad").endswith(
        f"{head} given the following indication:  Cough. ASSISTANT:"
    )
    assert prompt_text(2, by_key["k3"], "llava-rad").endswith(f"{head}. ASSISTANT:")
