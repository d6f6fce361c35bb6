"""One view policy per run: `data.frontal_only` decides what ingest keeps AND what validation expects.

Before issue 24 the pipeline's plan gave ingest the data section's policy but validation its own default
(frontal only), so `data.frontal_only: false` ingested laterals that Great Expectations then quarantined."""

from __future__ import annotations

import polars as pl
from pipeline_support import tiny_config

from schemas.pipeline import PipelineConfig


def _no_frontal_config(root, out) -> PipelineConfig:
    cfg = tiny_config(root, out)
    raw = cfg.model_dump(mode="json", by_alias=True, exclude_unset=True)
    raw["data"]["frontal_only"] = False
    return PipelineConfig.model_validate(raw)


def test_pipeline_keeps_laterals_through_validation_and_sharding(mimic_small, tmp_path):
    """The pipeline's own stage plan, run through the plain task functions (no Prefect server)."""
    from schemas.shards import SPLITS
    from tasks.ingest import run_ingest
    from tasks.plan import link_ingest_outputs, stage_configs
    from tasks.reports.structure import run_structure
    from tasks.shard import write_shards
    from tasks.validate import run_validation

    confs = stage_configs(_no_frontal_config(mimic_small, tmp_path / "out"))
    assert confs.ingest.frontal_only is False and confs.shard.validate_cfg.frontal_only is False
    ingest = run_ingest(confs.ingest.model_copy(update={"workers": 1}))
    link_ingest_outputs(confs.ingest.out, confs.structure.out)
    run_structure(confs.structure)
    p = confs.shard
    res = run_validation(p.data, p.out, p.artifacts, p.validate_cfg)
    views = set(res.accepted["view"].to_list())
    assert "LATERAL" in views, views
    quarantine = pl.read_parquet(p.out / "validation" / "quarantine.parquet")
    assert not any("frontal" in str(r) for r in quarantine.to_dicts()), quarantine
    infos = write_shards(res.accepted, p.data, p.out, p.shard)
    assert sum(i.nsamples for i in infos) == res.accepted.height
    laterals = res.accepted.filter(pl.col("view") == "LATERAL").height
    assert 0 < laterals and ingest["kept"] >= res.accepted.height and set(res.accepted["split"]) <= set(SPLITS)


def test_view_policy_is_derived_once_for_every_plan(tmp_path):
    """Single source, mixture (a per-source override counts) and the `data` flow: validation follows data."""
    from schemas.shards import DataParams
    from tasks.plan import data_stage_configs, stage_configs

    cfg = _no_frontal_config(tmp_path / "mimic", tmp_path / "out")
    assert stage_configs(cfg).shard.validate_cfg.frontal_only is False
    frontal = tiny_config(tmp_path / "mimic", tmp_path / "out")
    assert stage_configs(frontal).shard.validate_cfg.frontal_only is True
    raw = frontal.model_dump(mode="json", by_alias=True, exclude_unset=True)
    raw["data"] = {"sources": [{"name": "mimic-cxr", "root": str(tmp_path)},
                               {"name": "openi", "root": str(tmp_path), "frontal_only": False}]}
    mixed = stage_configs(PipelineConfig.model_validate(raw))
    assert mixed.mixture.frontal_only is True  # the openi source alone keeps every view ...
    assert mixed.shard.validate_cfg.frontal_only is False  # ... so validation must not quarantine them
    flow = data_stage_configs(DataParams(root=tmp_path, out=tmp_path / "d", frontal_only=False))
    assert flow.ingest.frontal_only is False and flow.shard.validate_cfg.frontal_only is False


def test_old_validate_frontal_only_loads_when_it_agrees_and_names_the_conflict_otherwise(tmp_path):
    import pytest

    raw = tiny_config(tmp_path, tmp_path / "out").model_dump(mode="json", by_alias=True, exclude_unset=True)
    old = {k: v for k, v in raw.items() if k != "shard"}
    with pytest.warns(DeprecationWarning, match="data.frontal_only"):
        cfg = PipelineConfig.model_validate({**old, "validate": {"min_rows_fraction_of_found": 0.1,
                                                                 "frontal_only": True}})
    assert cfg.validation().frontal_only is True and cfg.validation().min_rows_fraction_of_found == 0.1
    assert cfg.stage_hashes() == PipelineConfig.model_validate(raw).stage_hashes()  # the old layout: same keys
    with pytest.raises(ValueError, match="contradicts data.frontal_only"):
        PipelineConfig.model_validate({**old, "shard": {"validate": {"frontal_only": False}}})
