"""Every `cxrflow fixtures <source>` command writes a layout that `cxrflow ingest` reconciles."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cxrflow_cli.main import app

# fixtures command -> ingest source
SOURCES = {
    "mimic-cxr": "mimic-cxr", "chexpert": "chexpert", "padchest": "padchest", "chestxray14": "chestxray14",
    "openi": "openi", "brax": "brax", "vindr-cxr": "vindr-cxr", "candid-ptx": "candid-ptx",
}


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_fixture_command_then_ingest_reconciles(tmp_path, command):
    runner = CliRunner()
    res = runner.invoke(app, ["fixtures", command, "--out", str(tmp_path / "root"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    # Open-I's XML release states no view: under the frontal-only policy (docs/datasets.md) it keeps nothing
    views = ["--all-views"] if command == "openi" else []
    res = runner.invoke(app, ["ingest", "--source", SOURCES[command], "--root", str(tmp_path / "root"),
                              "--out", str(tmp_path / "out"), "--size", "32", "--workers", "1", "--no-prefect",
                              *views])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["kept"] > 0
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]
    assert summary["quarantined"] > 0, "defects are planted by default and must be quarantined"
