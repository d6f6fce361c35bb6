"""The data counts in the categories the LLaVA-Rad paper reports (docs/reports.md), for SHARDS/summary.json.

Per split: frontal `images` and `studies` in the manifest (before rows without findings are dropped),
`rule_based_reports` and `gpt4_reports` (images with a rule-based / an LLM-structured findings version among
the accepted samples; "gpt4" is the released annotations' name, an LLM backend's versions count there too),
and `pairs` (image-text pairs: one per findings version). The paper's own figures sit beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from schemas.shards import RULE_BASED, SPLITS, SYNTHESIZED

# The paper's data table (MIMIC-CXR, frontal views, official split); absent where the paper gives no figure.
PAPER: dict[str, dict[str, int]] = {
    "train": {
        "images": 237_972,
        "studies": 213_365,
        "rule_based_reports": 162_969,
        "gpt4_reports": 237_073,
        "pairs": 400_042,
    },
    "validate": {"images": 1_959, "rule_based_reports": 1_286, "gpt4_reports": 1_952},
    "test": {"images": 3_403, "rule_based_reports": 2_461, "pairs": 2_461},
}


def paper_counts(data_dir: Path, accepted: pl.DataFrame) -> dict:
    manifest = pl.read_parquet(
        Path(data_dir) / "manifest.parquet", columns=["split", "subject_id", "study_id"]
    )
    out: dict[str, dict] = {}
    for split in SPLITS:
        m = manifest.filter(pl.col("split") == split)
        part = accepted.filter(pl.col("split") == split) if accepted.height else accepted
        methods = [[t["method"] for t in json.loads(j)] for j in part["targets_json"]] if part.height else []
        by_method: dict[str, int] = {}
        for ms in methods:
            for name in ms:
                by_method[name] = by_method.get(name, 0) + 1
        out[split] = {
            "images": m.height,
            "studies": m.select("subject_id", "study_id").unique().height,
            "images_with_findings": part.height,
            "rule_based_reports": sum(RULE_BASED in ms for ms in methods),
            "gpt4_reports": sum(any(x not in (RULE_BASED, SYNTHESIZED) for x in ms) for ms in methods),
            "pairs": sum(len(ms) for ms in methods),
            "pairs_by_method": dict(sorted(by_method.items())),
        }
    return {"this_run": out, "paper": PAPER}
