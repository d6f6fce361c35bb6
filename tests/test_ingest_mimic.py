"""MIMIC-CXR fixtures, adapter and ingest engine: layout, bad inputs, reconciliation, incrementality."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fixtures.mimic_cxr import CHEXPERT_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS, write_mimic_cxr
from fixtures.reports import VARIANTS, make_report
from schemas.config import ImageConfig, IngestConfig
from schemas.labels import CHEXPERT_LABELS
from schemas.manifest import DROP_SCHEMA, MANIFEST_SCHEMA
from tasks.ingest import run_ingest
from tasks.reports.sections import parse_report
from tasks.sources import SourceLayoutError, get_adapter


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _cfg(root: Path, out: Path, **kw) -> IngestConfig:
    return IngestConfig(root=root, out=out, image=ImageConfig(size=64), workers=1, **kw)


def test_fixture_layout_columns_and_same_seed_same_bytes(tmp_path):
    write_mimic_cxr(tmp_path / "a", studies=5, seed=11)
    write_mimic_cxr(tmp_path / "b", studies=5, seed=11)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(write_mimic_cxr(tmp_path / "c", 5, seed=12) and tmp_path / "c")
    root = tmp_path / "a"
    for name, cols in (("metadata", METADATA_COLUMNS), ("split", SPLIT_COLUMNS), ("chexpert", CHEXPERT_COLUMNS)):
        with gzip.open(root / f"mimic-cxr-2.0.0-{name}.csv.gz", "rt") as f:
            assert f.readline().strip().split(",") == cols
    image = re.compile(r"files/p1\d/p1\d{7}/s5\d{7}/[0-9a-f]{8}(-[0-9a-f]{8}){4}\.dcm")
    dcms = [p.relative_to(root).as_posix() for p in root.rglob("*.dcm")]
    assert dcms and all(image.fullmatch(p) for p in dcms)
    for p in root.glob("files/p1*/p1*/s5*"):
        if p.is_dir():
            assert p.with_suffix(".txt").exists() or "p19999999" in p.as_posix()
    meta = pl.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema=False)
    assert set(meta["ViewPosition"]) >= {"PA", "AP", "LATERAL"}
    assert any("." in t and not t.startswith("0") for t in meta["StudyTime"])  # float, leading zero lost
    labels = pl.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", infer_schema=False)
    assert set(labels["Edema"].fill_null("")) <= {"1.0", "0.0", "-1.0", ""}


def test_report_format_follows_the_official_text_format(tmp_path):
    truth = write_mimic_cxr(tmp_path, studies=12, seed=2, defects=False)
    texts = [r.text for r in truth.reports.values()]
    for text in texts:
        lines = text.splitlines()
        assert all(len(line) <= 79 for line in lines)
        assert all(line.startswith(" ") for line in lines if line.strip())
    assert any("___" in t for t in texts)
    assert any(r.has_addendum for r in truth.reports.values())
    assert any(r.expected["findings"] is None for r in truth.reports.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("addendum", [False, True])
def test_section_parser_on_every_generated_variant(variant, addendum):
    import random

    for seed in range(6):  # seeds vary header spellings (misspellings included) and inline/below layouts
        labels = {n: random.Random(seed).choice([1, 0, -1, None]) for n in CHEXPERT_LABELS}
        report = make_report(labels, random.Random(seed), variant=variant, addendum=addendum)
        parsed = parse_report(report.text)
        assert parsed.sections == report.expected, report.text
        assert parsed.has_addendum == addendum


def test_bad_inputs_become_quarantine_rows_with_reasons_and_everything_reconciles(tmp_path):
    root, out = tmp_path / "mimic", tmp_path / "out"
    truth = write_mimic_cxr(root, studies=6, seed=5)
    summary = run_ingest(_cfg(root, out))
    assert summary["found"] == len(truth.expected) == summary["kept"] + summary["filtered"] + summary["quarantined"]
    assert summary["kept"] == truth.count("kept")
    assert summary["filtered"] == truth.count("filtered")
    assert summary["quarantined"] == truth.count("quarantined")
    quarantine = pq.read_table(out / "quarantine.parquet")
    assert quarantine.schema.equals(DROP_SCHEMA)
    by_id = {row["image_key"].split("_", 1)[1]: row["reason"] for row in quarantine.to_pylist()}
    for dicom_id, expected in truth.reasons.items():
        assert expected in by_id[dicom_id], (expected, by_id[dicom_id])
    assert set(summary["quarantined_by_reason"]) == {
        "truncated pixel data", "unreadable DICOM", "missing report", "report is not valid UTF-8",
        "study absent from the metadata", "DICOM has no Pixel Data element", "unsupported transfer syntax",
    }
    assert summary["filtered_by_reason"] == {"not frontal": truth.count("filtered")}


def test_manifest_matches_schema_and_points_at_real_images(tmp_path):
    root, out = tmp_path / "mimic", tmp_path / "out"
    write_mimic_cxr(root, studies=4, seed=9, defects=False)
    run_ingest(_cfg(root, out))
    table = pq.read_table(out / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA)
    df = pl.from_arrow(table)
    assert df["image_key"].is_unique().all() and not df["image_key"].str.contains(r"\.").any()
    assert set(df["view"]) <= {"PA", "AP"}
    assert (df["width"] == 64).all() and (df["height"] == 64).all()
    for rel, sha in zip(df["image_path"], df["image_sha256"], strict=True):
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha
    assert df["report_method"].unique().to_list() == ["mimic-cxr-sections"]
    assert df["decoder"].str.contains("pydicom").all()


def test_rerun_decodes_nothing_and_parameter_changes_redo_only_what_they_affect(tmp_path):
    root, out = tmp_path / "mimic", tmp_path / "out"
    write_mimic_cxr(root, studies=4, seed=1, defects=False)
    first = run_ingest(_cfg(root, out))
    assert first["decoded"] == first["kept"] > 0
    again = run_ingest(_cfg(root, out))
    assert again["decoded"] == 0 and again["reused"] == first["kept"]
    with_laterals = run_ingest(_cfg(root, out, frontal_only=False))
    assert with_laterals["decoded"] == first["filtered"]  # only the newly kept laterals
    changed = run_ingest(IngestConfig(root=root, out=out, image=ImageConfig(size=64, jpeg_quality=80), workers=1))
    assert changed["decoded"] == first["kept"]


def test_jpg_layout_is_detected(tmp_path):
    root, out = tmp_path / "jpg", tmp_path / "out"
    truth = write_mimic_cxr(root, studies=4, seed=4, jpg=True)
    assert (root / "IMAGE_FILENAMES").exists() and not list(root.rglob("*.dcm"))
    summary = run_ingest(_cfg(root, out))
    assert summary["notes"]["layout"] == "jpg"
    assert summary["kept"] == truth.count("kept")
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]


def test_parallel_workers_give_the_same_manifest(tmp_path, mimic_small):
    one = run_ingest(IngestConfig(root=mimic_small, out=tmp_path / "one", image=ImageConfig(size=64), workers=1))
    two = run_ingest(IngestConfig(root=mimic_small, out=tmp_path / "two", image=ImageConfig(size=64), workers=2,
                                  batch_size=2))
    assert {k: one[k] for k in ("found", "kept", "quarantined")} == {k: two[k] for k in ("found", "kept", "quarantined")}
    a = pl.read_parquet(tmp_path / "one" / "manifest.parquet").drop("preprocess")
    b = pl.read_parquet(tmp_path / "two" / "manifest.parquet").drop("preprocess")
    assert a.equals(b)


def test_layout_errors_name_the_missing_file_or_column_before_any_work(tmp_path):
    adapter = get_adapter("mimic-cxr")
    with pytest.raises(SourceLayoutError, match="does not exist"):
        adapter.check(tmp_path / "nowhere")
    root = tmp_path / "m"
    write_mimic_cxr(root, studies=2, seed=0, defects=False)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(SourceLayoutError, match="split.csv.gz"):
        adapter.check(root)
    write_mimic_cxr(root, studies=2, seed=0, defects=False)
    meta = pl.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema=False).drop("ViewPosition")
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wb") as f:
        meta.write_csv(f)
    with pytest.raises(SourceLayoutError, match="ViewPosition"):
        run_ingest(_cfg(root, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_label_value_outside_the_encoding_is_quarantined(tmp_path):
    root = tmp_path / "m"
    write_mimic_cxr(root, studies=4, seed=3, defects=False)
    labels = pl.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", infer_schema=False)
    labels = labels.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("2.0")).otherwise(pl.col("Edema"))
                                 .alias("Edema"))
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wb") as f:
        labels.write_csv(f)
    summary = run_ingest(_cfg(root, tmp_path / "out"))
    assert summary["quarantined_by_reason"].get("label value outside the 1/0/-1/blank encoding", 0) >= 1
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]


def test_cli_fixtures_and_ingest_without_prefect(tmp_path):
    from cxrflow_cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["fixtures", "mimic-cxr", "--out", str(tmp_path / "m"), "--studies", "3", "--seed", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", "--root", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--size", "32",
                              "--no-prefect", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert '"found"' in res.output and (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_ingest_flow_on_the_prefect_server_reconciles_and_publishes_artifacts(tmp_path, mimic_small, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ingest import ingest_flow
    from flows.runners import runner_for

    cfg = IngestConfig(root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=2, batch_size=2)
    state = ingest_flow.with_options(task_runner=runner_for(cfg))(cfg, return_state=True)
    summary = state.result()
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]
    assert summary["kept"] > 0

    async def artifacts():
        async with get_client() as client:  # this run's artifacts only: keys are shared across runs
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))

    import asyncio

    found = {a.key: a for a in asyncio.run(artifacts())}
    assert {"ingest-summary-mimic-cxr", "ingest-progress-mimic-cxr"} <= set(found)
    table = found["ingest-summary-mimic-cxr"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert {"measure": "found", "value": summary["found"]} in table
