"""Export the validated samples as LLaVA-Rad annotation JSON (one list per split), so the reference training
code can read cxrflow's output. One record per (image, findings version): training used both the rule-based
and the LLM-structured text; the test split carries the versions validation allowed (rule-based)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.shards import SPLITS
from tasks.io import atomic_write_bytes

# cxrflow's own wording (see docs/recipe.md: the user turn is <image> + a request for the findings, plus the
# indication when the report has one).
INSTRUCTION = "Write the findings section of a radiology report for this chest X-ray."
INDICATION_SUFFIX = " Clinical indication: {indication}"


def instruction(indication: str | None) -> str:
    text = INSTRUCTION
    if indication:
        text += INDICATION_SUFFIX.format(indication=indication.strip())
    return text


def generate_method(method: str) -> str:
    """LLaVA-Rad names versions 'rule-based' or the LLM ('gpt4'); cxrflow keeps '<backend>:<model>'."""
    return method


def llava_records(row: dict, image_prefix: str = "") -> list[dict]:
    labels = {}
    for name in CHEXPERT_LABELS:
        v = row.get(label_column(name))
        labels[name] = math.nan if v is None else int(v)
    indication = row.get("indication_text")
    records = []
    for target in json.loads(row["targets_json"]):
        records.append(
            {
                "id": f"{row['subject_id']}_{row['study_id']}",
                "image": image_prefix + row["image_path"],
                "image_key": row["image_key"],
                "generate_method": generate_method(target["method"]),
                # MIMIC calls the indication the "reason for study"; the release carries both fields.
                "reason": indication,
                "impression": row.get("impression"),
                "indication": indication,
                "history": row.get("history"),
                "view": row.get("view"),
                "orientation": row.get("orientation"),
                "chexpert_labels": labels,
                "conversations": [
                    {"from": "human", "value": "<image>\n" + instruction(indication)},
                    {"from": "gpt", "value": target["findings"]},
                ],
            }
        )
    return records


def export_llava(accepted: pl.DataFrame, out_dir: Path, image_prefix: str = "") -> dict[str, int]:
    """Write OUT/llava/{split}.json (NaN for unmentioned labels, as the release does); returns records per split.

    `image` is the manifest's image_path (relative to the data folder) with `image_prefix` prepended."""
    out = Path(out_dir) / "llava"
    counts: dict[str, int] = {}
    for split in SPLITS:
        part = accepted.filter(pl.col("split") == split).sort("image_key")
        records = [r for row in part.iter_rows(named=True) for r in llava_records(row, image_prefix)]
        atomic_write_bytes(out / f"{split}.json", json.dumps(records, ensure_ascii=False, indent=1).encode())
        counts[split] = len(records)
    return counts
