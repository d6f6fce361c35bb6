"""The pipeline on a source mixture: one manifest from several sources, then every later stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_support import base_dict, tiny_config, write_fixture

from schemas.pipeline import PipelineConfig, load_ablation_spec
from tasks.llm.guard import binding_source


def _mixture(cfg: PipelineConfig, roots: dict[str, Path]) -> PipelineConfig:
    d = base_dict(cfg)
    d["data"] = {**d["data"], "root": None, "sources": [{"name": n, "root": str(r)} for n, r in roots.items()]}
    return PipelineConfig.model_validate(d)


def test_mixture_config_validation_and_binding_source(tmp_path):
    base = tiny_config(tmp_path / "m", tmp_path / "o")
    mix = _mixture(base, {"openi": tmp_path / "oi", "mimic-cxr": tmp_path / "m"})
    assert binding_source(mix.data.source_names()) == "mimic-cxr"  # the credentialed source's terms bind the LLM judge
    assert mix.stage_hashes()["ingest"] != base.stage_hashes()["ingest"]
    with pytest.raises(ValueError, match="either root"):
        PipelineConfig.model_validate({**base_dict(base), "data": {**base_dict(base)["data"], "sources": [
            {"name": "openi", "root": str(tmp_path)}]}})
    spec = load_ablation_spec(Path("configs/ablations/source-mixture.yaml"))
    assert [s.name for s in spec.variant_config("mimic-chexpert").data.sources] == ["mimic-cxr", "chexpert"]


@pytest.mark.slow
def test_pipeline_on_a_two_source_mixture(tmp_path, prefect_server):
    from fixtures.chexpert import write_chexpert
    from flows.pipeline import pipeline

    roots = {"mimic-cxr": write_fixture(tmp_path / "mimic"), "chexpert": tmp_path / "chexpert"}
    write_chexpert(roots["chexpert"], patients=4, seed=2, plus=False)
    result = pipeline(_mixture(tiny_config(roots["mimic-cxr"], tmp_path / "out"), roots))
    assert all(s["status"] == "ran" for s in result["stages"].values())
    ingest = json.loads((Path(result["stages"]["ingest"]["dir"]) / "summary.json").read_text())
    assert set(ingest["per_source"]) == {"mimic-cxr", "chexpert"}
    shards = json.loads((Path(result["shards"]) / "summary.json").read_text())
    assert shards["reconciliation"]["balanced"] and shards["reconciliation"]["found"] == ingest["found"]
    assert result["metrics"]
