"""The `shard` and `data` flows and their CLI commands, on the session's Prefect test server."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest
from typer.testing import CliRunner

from fixtures.shard_manifest import default_rows, write_dataset
from schemas.shards import ShardConfig, ShardParams


def _artifact(key: str):
    from prefect.artifacts import Artifact

    return Artifact.get(key)


@pytest.mark.slow  # ~15 s: GX over shards in a flow run
def test_flow_validates_shards_indexes_and_reconciles(prefect_server, tmp_path):
    from flows.shard import shard as shard_flow

    rows = default_rows(20)
    rows[3]["view"] = "LATERAL"  # quarantined
    rows[4]["findings"] = None  # filtered: no findings
    data = write_dataset(tmp_path / "data", rows, found=23)  # ingest dropped 3 (in its summary)
    out = tmp_path / "shards"
    summary = shard_flow(
        ShardParams(
            data=data, out=out, artifacts=tmp_path / "artifacts", shard=ShardConfig(max_samples=5)
        )
    )
    rec = summary["reconciliation"]
    assert rec == {"found": 23, "sharded": 18, "filtered": 4, "quarantined": 1, "balanced": True}
    assert summary["read_back"]["train"] == {"expected": 14, "webdataset": 14, "wids": 14}
    assert json.loads((out / "summary.json").read_text())["reconciliation"] == rec
    assert pl.read_parquet(out / "shards.parquet").height == 18
    assert sorted(p.name for p in out.glob("*.index.json")) == [
        "test.index.json",
        "train.index.json",
        "validation.index.json",
    ]
    assert summary["llava_records"]["train"] == 14
    assert "unmentioned" in (out / "README.md").read_text()  # the dataset card says how absence is written
    assert _artifact("validate-progress").data == 100.0 and _artifact("shard-progress").data == 100.0
    table = _artifact("gx-expectations")
    assert table is not None and "frontal view" in table.data
    docs = _artifact("gx-data-docs")  # the results rendered into the UI, not a file:// link
    assert docs is not None and docs.type == "markdown"
    assert "## `cxrflow-samples`" in docs.data and "✅ pass" in docs.data and "frontal view" in docs.data


@pytest.mark.slow  # ~15 s: GX over shards in a flow run
def test_leakage_fails_the_flow_and_the_cli(prefect_server, tmp_path, capsys, monkeypatch):
    from cxrflow_cli.main import run
    from cxrflow_cli.quiet import ENV_VARS

    for var in ENV_VARS:  # the CLI's quiet mode sets these: restored after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)
    from flows.shard import shard as shard_flow
    from tasks.validate import ValidationFailed

    rows = default_rows(12)
    rows[9]["subject_id"] = rows[0]["subject_id"]  # validate split and train split
    data = write_dataset(tmp_path / "data", rows)
    params = ShardParams(data=data, out=tmp_path / "shards", artifacts=tmp_path / "artifacts")
    with pytest.raises(ValidationFailed, match="leakage"):
        shard_flow(params)
    assert not list((tmp_path / "shards").glob("**/*.tar"))
    code = run(
        ["shard", "--data", str(data), "--out", str(tmp_path / "s2"), "--artifacts", str(tmp_path / "a2")]
    )
    assert code == 2
    assert "error: validation failed: patient-level split leakage" in capsys.readouterr().err
    assert not list((tmp_path / "s2").glob("**/*.tar"))


@pytest.mark.slow
def test_data_command_on_mimic_fixture_reconciles(prefect_server, mimic_small, tmp_path):
    from cxrflow_cli.main import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "--source",
            "mimic-cxr",
            "--root",
            str(mimic_small),
            "--out",
            str(out),
            "--size",
            "64",
            "--workers",
            "1",
            "--max-samples",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    ingest = json.loads((out / "data" / "summary.json").read_text())
    summary = json.loads((out / "shards" / "summary.json").read_text())
    rec = summary["reconciliation"]
    assert rec["found"] == ingest["found"] and rec["balanced"]
    assert rec["sharded"] + rec["filtered"] + rec["quarantined"] == ingest["found"]
    assert rec["sharded"] == sum(v["samples"] for v in summary["splits"].values()) > 0
    assert (out / "data" / "reports.parquet").exists()
    assert all(r["wids"] == r["webdataset"] == r["expected"] for r in summary["read_back"].values())
    assert (out / "artifacts" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


def test_ingest_then_validate_and_shard_without_prefect(mimic_small, tmp_path):
    """The mimic_small fixture through tasks.ingest.run_ingest, then the plain task functions."""
    from schemas.config import ImageConfig, IngestConfig
    from schemas.shards import SPLITS, ValidateConfig
    from tasks.ingest import run_ingest
    from tasks.shard import write_shards
    from tasks.shard_index import verify_shards, write_summary, write_wids_index
    from tasks.validate import run_validation

    data = tmp_path / "data"
    ingest = run_ingest(IngestConfig(root=mimic_small, out=data, workers=1, image=ImageConfig(size=64)))
    res = run_validation(data, tmp_path / "shards", tmp_path / "artifacts", ValidateConfig())
    infos = write_shards(res.accepted, data, tmp_path / "shards", ShardConfig(max_samples=3))
    for s in SPLITS:
        write_wids_index(tmp_path / "shards", s, infos)
    summary = write_summary(tmp_path / "shards", infos, res.counts)
    assert summary["reconciliation"]["found"] == ingest["found"]
    assert summary["reconciliation"]["balanced"]
    expected = {s: res.accepted.filter(pl.col("split") == s).height for s in SPLITS}
    assert verify_shards(tmp_path / "shards", expected)
