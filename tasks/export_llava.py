"""Export the validated samples as LLaVA-Rad annotation JSON (one list per split), so the reference training
code can read cxrflow's output. One record per (image, findings version): training used both the rule-based
and the LLM-structured text; the test split carries the versions validation allowed (rule-based)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from cxrio import atomic_path
from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.shards import SPLITS, shard_split
from tasks.accepted_rows import Accepted, key_order, rows_at
from tasks.shard import strip_invisible
from training.prompts import LLAVA_RAD


def instruction(indication: str | None) -> str:
    """LLaVA-Rad's own instruction (training/prompts.py cites its source): the reference training code reads
    these records, and the llava-rad preset trains with the same text."""
    return LLAVA_RAD.instruction_for(indication)


def generate_method(method: str) -> str:
    """LLaVA-Rad names versions 'rule-based' or the LLM ('gpt4'); cxrflow keeps '<backend>:<model>'."""
    return method


def llava_records(row: dict, image_prefix: str = "", nan_labels: bool = False) -> list[dict]:
    """`nan_labels`: NaN for an unmentioned label, as the release writes (not valid JSON); default null."""
    labels = {}
    for name in CHEXPERT_LABELS:
        v = row.get(label_column(name))
        labels[name] = (math.nan if nan_labels else None) if v is None else int(v)
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
                    {"from": "human", "value": LLAVA_RAD.human_turn(indication)},
                    {"from": "gpt", "value": target["findings"]},
                ],
            }
        )
    return strip_invisible(records)  # the shards' text rule: no bidi/zero-width characters


def image_prefix_for(out: Path, data_dir: Path, image_root: Path | None = None) -> str:
    """What to put before a manifest image_path (relative to the data folder) so that `image` resolves:
    the absolute `image_root` when given (where the images will live for the consumer), else the data folder
    relative to the JSON's own folder `out`."""
    if image_root is not None:
        if not Path(image_root).is_absolute():
            raise ValueError(f"image_root must be an absolute path, got {image_root}")
        return str(image_root).rstrip("/") + "/"
    rel = os.path.relpath(Path(data_dir).absolute(), Path(out).absolute())
    return "" if rel == "." else rel + "/"


def export_llava(
    accepted: Accepted,
    out_dir: Path,
    data_dir: Path | None = None,
    image_root: Path | None = None,
    nan_labels: bool = False,
) -> dict[str, int]:
    """Write OUT/llava/{split}.json (split names as the shards name them: train, validation, test); returns
    records per split. Strict JSON: null for an unmentioned label unless `nan_labels` (the release's NaN).
    `image` resolves against the JSON's folder (from `data_dir`, the folder the manifest paths are relative
    to), or is absolute under `image_root`. `accepted`: validation's accepted.parquet, read a window of rows at
    a time in key order (tasks/accepted_rows.py), or the rows as a DataFrame."""
    out = Path(out_dir) / "llava"
    prefix = image_prefix_for(out, data_dir or Path(out_dir), image_root) if (data_dir or image_root) else ""
    counts: dict[str, int] = {}
    for split in SPLITS:
        rows = rows_at(accepted, key_order(accepted, split))
        records = (r for row in rows for r in llava_records(row, prefix, nan_labels))
        counts[shard_split(split)] = _write_json_list(out / f"{shard_split(split)}.json", records, nan_labels)
    return counts


def _write_json_list(path: Path, records: Iterable[dict], nan_labels: bool) -> int:
    """Write `records` as `json.dumps(list(records), ensure_ascii=False, indent=1)` would, byte for byte, one
    record at a time (a split's records and its JSON text are never held whole: ~GBs at 700K images), to a
    temporary file renamed into place. Returns the record count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for rec in records:
            text = json.dumps(rec, ensure_ascii=False, indent=1, allow_nan=nan_labels)
            f.write(("[\n " if n == 0 else ",\n ") + text.replace("\n", "\n "))  # one level deeper
            n += 1
        f.write("\n]" if n else "[]")
    return n
