"""Batch report generation over one split of the shards, writing predictions.jsonl.

Each record is `{id, query, reference, prediction}` in LLaVA-Rad's prediction format (id `<subject>_<study>`,
query the user turn) plus `key` (the shard sample), `indication` and `study`.
The reference is the sample's primary target (`K.txt`: rule-based findings when present). Generation is
the model contract's: greedy, left-padded mixed-length batches, max 256 new tokens.
Every sample of the split is accounted for: unreadable samples are listed in `skipped` with a reason.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from cxrio import atomic_path, clean_stale_temps
from schemas.safe_load import load_json_text
from schemas.sample_json import decode_sample_json

IMAGE_MEMBERS = ("jpg", "jpeg", "png")


@dataclass
class TestSample:
    id: str
    image: Image.Image
    reference: str
    indication: str | None
    study: str | None = None


@dataclass
class InferenceSummary:
    found: int = 0
    generated: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # id -> reason


def shard_paths(shards: Path, split: str) -> list[Path]:
    from schemas.shards import SHARD_DIR, index_name, shard_split

    index = shards / index_name(split)
    if index.exists():
        spec = json.loads(index.read_text())
        paths = [Path(s["url"]) for s in spec.get("shardlist", []) if int(s.get("nsamples", 1)) > 0]
        paths = [p if p.is_absolute() else shards / p for p in paths]
    else:
        paths = sorted((shards / SHARD_DIR).glob(f"{shard_split(split)}-*.tar"))
    if not paths and not _split_is_empty(shards, split):
        raise FileNotFoundError(
            f"no {split} shards under {shards} ({index.name} or {SHARD_DIR}/{shard_split(split)}-*.tar)"
        )
    return paths


def split_size(shards: Path, split: str) -> int | None:
    """Samples of the split according to its wids index (None without one)."""
    from schemas.shards import index_name

    index = Path(shards) / index_name(split)
    if not index.exists():
        return None
    return sum(int(s.get("nsamples", 0)) for s in json.loads(index.read_text()).get("shardlist", []))


def _split_is_empty(shards: Path, split: str) -> bool:
    """The shard stage wrote no index for this split because it has no samples (SHARDS/summary.json says 0):
    evaluation then scores nothing and every metric is `not computed`, instead of failing the run."""
    summary = shards / "summary.json"
    if not summary.exists():
        return False
    from schemas.shards import shard_split

    samples = json.loads(summary.read_text()).get("splits", {}).get(shard_split(split), {}).get("samples")
    return samples == 0


def iter_samples(
    shards: Path, split: str, summary: InferenceSummary, limit: int | None = None
) -> Iterator[TestSample]:
    import webdataset as wds

    urls = [str(p) for p in shard_paths(shards, split)]
    if not urls:
        return
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        if limit is not None and summary.found >= limit:
            return
        key = sample["__key__"]
        summary.found += 1
        meta: dict[str, Any] = decode_sample_json(json.loads(sample["json"])) if "json" in sample else {}
        sid = str(meta.get("key") or key)
        raw = next((sample[m] for m in IMAGE_MEMBERS if m in sample), None)
        text = sample.get("txt")
        if raw is None:
            summary.skipped[sid] = "no image member (jpg/png)"
            continue
        if not text:
            summary.skipped[sid] = "no reference findings (txt member missing or empty)"
            continue
        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except Exception as e:  # a corrupt image is one skipped sample, not a failed run
            summary.skipped[sid] = f"image does not decode: {type(e).__name__}"
            continue
        yield TestSample(
            sid,
            image,
            text.decode() if isinstance(text, bytes) else str(text),
            meta.get("indication"),
            study_key(meta.get("subject_id"), meta.get("study_id")),
        )


def query_text(indication: str | None, stage: int = 2, prompt_format: str = "tiny") -> str:
    """The user turn, as the reference's prediction files hold it, not the whole chat prompt: model_mimic_cxr.py
    writes the record's `conversations[0].value` as its data loader made it ("<image>\n" + the instruction, the
    reason's line breaks as spaces, not stripped; the prompt itself is built from the stripped turn). Stage 1
    has no user turn: its query is the plain prompt."""
    from training.prompts import IMAGE_TOKEN
    from training.prompts import prompt_format as format_of
    from training.text import prompt_text

    if stage == 1:
        return prompt_text(1, indication, prompt_format)
    f = format_of(prompt_format)
    if f.name == "llava-rad" and indication is not None:  # the loader's value, unstripped, as the files hold it
        return f"{IMAGE_TOKEN}\n" + f.instruction_with_indication.format(indication=indication.replace("\n", " "))
    return f.human_turn(indication)


def record_id(sample: TestSample) -> str:
    """The reference's id, `<subject>_<study>` (repeated for the images of one study, as its files do), where
    the sample's study is a MIMIC-style one; else the shard key (unique per image)."""
    return sample.study if sample.study and _STUDY_ID.match(sample.study) else sample.id


def generate_predictions(
    generator: Any,
    shards: Path,
    out_path: Path,
    *,
    split: str = "test",
    batch_size: int = 8,
    max_new_tokens: int = 256,
    limit: int | None = None,
    progress: Any = None,
) -> InferenceSummary:
    """Run `generator.generate` over the split in batches; write predictions.jsonl atomically.
    `progress(generated, total)` after every batch (total from the wids index, capped by `limit`)."""
    summary = InferenceSummary()
    total = split_size(shards, split)
    total = min(total, limit) if limit and total is not None else total
    batch: list[TestSample] = []
    clean_stale_temps(out_path.parent)  # what a run killed mid-generation left (its temporary file)
    with atomic_path(out_path) as tmp, open(tmp, "w") as f:

        def flush() -> None:
            preds = generator.generate(
                [s.image.convert("RGB") for s in batch],
                [s.indication for s in batch],
                max_new_tokens=max_new_tokens,
            )
            if len(preds) != len(batch):
                raise RuntimeError(f"generator returned {len(preds)} reports for {len(batch)} images")
            for s, pred in zip(batch, preds, strict=True):
                rec = {
                    "id": record_id(s),
                    "key": s.id,  # the shard sample: which image this line is
                    "query": query_text(
                        s.indication,
                        getattr(generator, "stage", 2),
                        getattr(generator, "prompt_format", "tiny"),
                    ),
                    "reference": s.reference,
                    "prediction": pred,
                    "indication": s.indication,
                    "study": s.study,
                }
                f.write(json.dumps(rec) + "\n")
            summary.generated += len(batch)
            batch.clear()
            if progress is not None:
                progress(summary.generated, total or summary.generated)

        for sample in iter_samples(shards, split, summary, limit):
            batch.append(sample)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return summary


# LLaVA-Rad's prediction files carry the annotation release's ids, `<subject>_<study>`, once per image line.
_STUDY_ID = re.compile(r"^p?(\d+)_s?(\d+)$")


def study_key(subject_id: Any, study_id: Any) -> str | None:
    """`<subject>_<study>` as the LLaVA-Rad annotation release spells it (MIMIC's p/s prefixes dropped)."""
    if subject_id in (None, "") or study_id in (None, ""):
        return None
    return f"{str(subject_id).lstrip('p')}_{str(study_id).lstrip('s')}"


class PredictionsFileError(ValueError):
    """A predictions file that cannot be read as records: a one-line user error naming the line."""


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """predictions.jsonl -> records; each needs id, reference and prediction (or candidate).

    A cxrflow file's lines carry `key`, the shard sample (unique): that is the row id, so two evaluations of
    one split pair image by image whatever their line order; its `id` (`<subject>_<study>`, as the reference
    writes it) stays the study. A LLaVA-Rad file (ids `<subject>_<study>`, repeated for each image of a study, no
    key) is read as written: every line is one scored row, given the row id `<id>#<k>` (k-th line of that
    study) and `study = <id>`, the way the reference scores every line. Any other repeated id or key is an
    error."""
    records = []
    seen: dict[str, int] = {}
    keys: set[str] = set()
    with open(path, "rb") as f:  # bytes: a file that is not UTF-8 is named with its line, not a traceback
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PredictionsFileError(f"{path}:{line_no}: not UTF-8 text (expected JSON Lines)") from None
            if not line.strip():
                continue
            try:
                rec = load_json_text(line)
            except json.JSONDecodeError as e:
                raise PredictionsFileError(f"{path}:{line_no}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise PredictionsFileError(f"{path}:{line_no}: a record must be a JSON object")
            if "prediction" not in rec and "candidate" in rec:
                rec["prediction"] = rec["candidate"]
            missing = [k for k in ("id", "reference", "prediction") if rec.get(k) is None]
            if missing:
                raise PredictionsFileError(f"{path}:{line_no}: record lacks {', '.join(missing)}")
            rid = str(rec["id"])
            if rec.get("key") is not None:  # cxrflow's own line: the image it is
                key = str(rec["key"])
                if key in keys:
                    raise PredictionsFileError(f"{path}:{line_no}: duplicate key {key!r}")
                keys.add(key)
                if _STUDY_ID.match(rid):
                    rec.setdefault("study", rid)
                rec["id"] = key
                records.append(rec)
                continue
            k = seen.get(rid, 0)
            seen[rid] = k + 1
            if _STUDY_ID.match(rid):
                rec.setdefault("study", rid)
                rec["id"] = f"{rid}#{k}"
            elif k:
                raise PredictionsFileError(f"{path}:{line_no}: duplicate id {rid!r}")
            else:
                rec["id"] = rid
            records.append(rec)
    return records
