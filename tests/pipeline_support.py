"""Helpers for the orchestration tests: a tiny pipeline config on a clean MIMIC-CXR fixture."""

from __future__ import annotations

from pathlib import Path

from schemas.pipeline import PipelineConfig


def write_fixture(root: Path) -> Path:
    from fixtures.mimic_cxr import write_mimic_cxr

    write_mimic_cxr(root, studies=12, seed=7, jpg=False, size="small", defects=False)
    return root


def tiny_config(root: Path, out: Path, name: str = "t", **structure) -> PipelineConfig:
    """Every stage at its smallest: 32 px images, 2 optimizer steps per stage, 4 generated tokens."""
    small = {"global_batch_size": 2, "micro_batch_size": 2}
    return PipelineConfig.model_validate({
        "name": name, "out": str(out), "workers": 1,
        "data": {"source": "mimic-cxr", "root": str(root), "image": {"size": 32}},
        "structure": {"backend": "rules", **structure},
        "shard": {"validate": {"min_rows_fraction_of_found": 0.1}},
        "train": {"preset": "tiny", "max_steps": 2, "stage1": small, "stage2": small},
        "evaluate": {"batch_size": 4, "max_new_tokens": 4, "n_bootstrap": 20},
    })


def base_dict(cfg: PipelineConfig) -> dict:
    return cfg.model_dump(mode="json", by_alias=True)
