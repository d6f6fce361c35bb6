"""Indexes beside the shards, and the read-back check that proves every sample can be read.

- `{split}.index.json`: the wids shard index (`__kind__` "wids-shard-index-v1", `wids_version` 1, a
  `shardlist` of {url, nsamples, filesize, md5sum}; urls are relative to the index, as wids resolves them).
- `shards.parquet`: every key -> its shard (SHARD_MAP_SCHEMA).
- `summary.json`: samples per split, shard count, bytes, filtered/quarantined rows and the reconciliation.
- `README.md`: a dataset card saying what a sample holds and how absence is written in `K.json` (no nulls:
  `datasets` infers the types from five samples, and a field null in all five was typed null and failed the
  load at the first sample holding a value; docs/shards.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cxrio import atomic_write_bytes, atomic_write_json, atomic_write_parquet, quiet_wids
from schemas.sample_json import LABEL_STATES, SOURCE_LABEL_SEP
from schemas.shards import IMAGE_EXTENSIONS, SHARD_MAP_SCHEMA, SPLITS, index_name, shard_split
from tasks.accepted_rows import Accepted, batches, select
from tasks.shard import ShardInfo


def write_wids_index(out_dir: Path, split: str, infos: Sequence[ShardInfo]) -> Path | None:
    mine = [i for i in infos if i.split == split]
    path = Path(out_dir) / index_name(split)
    if not mine:
        path.unlink(missing_ok=True)  # no samples in this split: no index (wids rejects an empty list)
        return None
    desc = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"cxrflow-{shard_split(split)}",
        "shardlist": [
            {"url": i.name, "nsamples": i.nsamples, "filesize": i.filesize, "md5sum": i.md5sum} for i in mine
        ],
    }
    atomic_write_json(path, desc)
    return path


def _map_meta(accepted: Accepted) -> pl.DataFrame:
    """Per accepted key what the shard map says of it, read in batches (the targets' texts are never all held:
    only their count is kept)."""
    parts = [
        pl.DataFrame(
            {
                "image_key": b.get_column("image_key"),
                "image_member_ext": [  # as the shard writer names the member (tasks/shard.py)
                    IMAGE_EXTENSIONS.get(str(f).lower(), "jpg") for f in b.get_column("image_format").to_list()
                ],
                "primary_method": b.get_column("primary_method"),
                "n_targets": [len(json.loads(t)) for t in b.get_column("targets_json").to_list()],
            },
            schema_overrides={"image_member_ext": pl.String, "n_targets": pl.Int64},
        )
        for b in batches(accepted, ["image_key", "image_format", "primary_method", "targets_json"])
    ]
    return pl.concat(parts) if parts else pl.DataFrame(
        schema={"image_key": pl.String, "image_member_ext": pl.String, "primary_method": pl.String,
                "n_targets": pl.Int64}
    )


def write_shard_map(out_dir: Path, infos: Sequence[ShardInfo], accepted: Accepted) -> Path:
    """shards.parquet: every key -> its shard, in shard order; built as columns (no Python object per sample)."""
    placed = pl.DataFrame(
        {
            "image_key": [k for i in infos for k in i.keys],
            "split": [i.split for i in infos for _ in i.keys],
            "shard": [i.name for i in infos for _ in i.keys],
            "index_in_shard": [n for i in infos for n in range(len(i.keys))],
        },
        schema={"image_key": pl.String, "split": pl.String, "shard": pl.String, "index_in_shard": pl.Int64},
    )
    rows = placed.join(_map_meta(accepted), on="image_key", how="left", maintain_order="left")
    missing = rows.filter(pl.col("n_targets").is_null()).get_column("image_key")
    if len(missing):
        raise KeyError(f"{len(missing)} sharded key(s) not among the accepted samples, e.g. {missing[0]!r}")
    rows = rows.with_columns(image_member=pl.col("image_key") + "." + pl.col("image_member_ext"))
    table = rows.select(SHARD_MAP_SCHEMA.names).to_arrow().cast(SHARD_MAP_SCHEMA).combine_chunks()
    path = Path(out_dir) / "shards.parquet"
    atomic_write_parquet(path, table)
    return path


def write_summary(out_dir: Path, infos: Sequence[ShardInfo], counts: dict, write: bool = True) -> dict:
    """counts: validation counts (ingest_found/filtered/quarantined, filtered, quarantined, accepted).
    write=False: only build it (the flow writes summary.json once, complete, after the read-back: a killed run
    must not leave an intermediate one)."""
    per_split = {  # keyed by the shard split names (validation), like the files
        shard_split(s): {
            "samples": sum(i.nsamples for i in infos if i.split == s),
            "shards": sum(1 for i in infos if i.split == s),
            "bytes": sum(i.filesize for i in infos if i.split == s),
        }
        for s in SPLITS
    }
    sharded = sum(v["samples"] for v in per_split.values())
    filtered = counts.get("ingest_filtered", 0) + counts.get("filtered", 0)
    quarantined = counts.get("ingest_quarantined", 0) + counts.get("quarantined", 0)
    found = counts.get("ingest_found", sharded + filtered + quarantined)
    summary = {
        "splits": per_split,
        "shards": len(infos),
        "bytes": sum(i.filesize for i in infos),
        "samples": sharded,
        "reused_shards": sum(1 for i in infos if i.reused),
        "validation": counts,
        "reconciliation": {
            "found": found,
            "sharded": sharded,
            "filtered": filtered,
            "quarantined": quarantined,
            "balanced": found == sharded + filtered + quarantined,
        },
    }
    if write:
        atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary


def split_counts(accepted: Accepted) -> dict[str, int]:
    """Samples per manifest split of the accepted rows: what verify_shards must read back."""
    splits = select(accepted, ["split"])
    return {s: splits.filter(pl.col("split") == s).height for s in SPLITS}


def verify_shards(out_dir: Path, expected: dict[str, int]) -> dict:
    """Read every shard back with webdataset.WebDataset and with wids; counts must match `expected`
    (samples per split from the accepted manifest). Returns per-split counts; raises on any mismatch."""
    import webdataset as wds
    import wids

    out_dir = Path(out_dir).resolve()
    report: dict[str, dict] = {}
    problems: list[str] = []
    for split in SPLITS:
        want = expected.get(split, 0)
        index = out_dir / index_name(split)
        if not index.exists():
            if want:
                problems.append(f"{split}: {want} samples expected but no {index.name}")
            report[shard_split(split)] = {"expected": want, "webdataset": 0, "wids": 0}
            continue
        shardlist = json.loads(index.read_text())["shardlist"]
        urls = [str(out_dir / s["url"]) for s in shardlist]
        n_wds = 0
        keys_wds = []
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            if not {"json", "txt"} <= set(sample) or not ({"jpg", "png"} & set(sample)):
                problems.append(f"{split}: sample {sample.get('__key__')} lacks image/json/txt members")
            keys_wds.append(sample["__key__"])
            n_wds += 1
        # localname=identity: read the local shards in place instead of copying them into wids' cache.
        with quiet_wids():
            ds = wids.ShardListDataset(str(index), localname=lambda url: url, transformations=[])
        keys_wids = [ds[i]["__key__"] for i in range(len(ds))]
        ds.close()
        if any("." in k for k in keys_wds):
            problems.append(f"{split}: keys with dots")
        if n_wds != want or len(keys_wids) != want:
            problems.append(
                f"{split}: expected {want} samples, webdataset read {n_wds}, wids read {len(keys_wids)}"
            )
        if keys_wds != keys_wids:
            problems.append(f"{split}: webdataset and wids disagree on the sample order/keys")
        report[shard_split(split)] = {"expected": want, "webdataset": n_wds, "wids": len(keys_wids)}
    if problems:
        raise RuntimeError("shard read-back failed: " + "; ".join(problems))
    return report


def write_dataset_card(out_dir: Path, accepted: Accepted) -> Path:
    """README.md: what a sample holds and how absence is written. It declares no feature types: K.json has
    no nulls, so the types inferred from any sample are right (schemas/sample_json.py), and
    `load_dataset(SHARDS)` and `load_dataset("webdataset", data_dir=SHARDS)` read the same types."""
    formats = select(accepted, ["image_format"]).get_column("image_format").unique()
    exts = sorted({IMAGE_EXTENSIONS.get(str(f).lower(), str(f)) for f in formats})
    labels = ", ".join(f"{v} = {k}" for k, v in LABEL_STATES.items() if k is not None)
    # A metadata block without feature types (datasets warns when a card has none).
    body = f"""---
pretty_name: cxrflow chest X-ray report-generation shards
task_categories:
- image-to-text
---

# Chest X-ray report-generation shards (cxrflow)

WebDataset tars under `data/` (`{{split}}-NNNNN-of-NNNNN.tar`, splits train / validation / test), a wids
index per split beside them (`{{split}}.index.json`), `shards.parquet` (key -> shard) and `summary.json`.

Each sample `K` has three members:

- `K.{"|".join(exts) or "jpg"}`: the processed image;
- `K.txt`: the primary findings text (the training target);
- `K.json`: the manifest fields, `targets` (every findings version: `findings`, `method`), `indication` and
  `primary_method`. Nothing in it is null, so every sample shows every type: absent text is `""`,
  `source_labels` is one string joined by `{SOURCE_LABEL_SEP}`, and `chexpert_labels` maps each of the 14 CheXpert
  observations to {labels} or "unmentioned" (the LLaVA-Rad release writes 1.0 / 0.0 / -1.0 / NaN).
  `absent` names the fields that were null (joined by `|`), so "" written by a source stays apart from absent.

Load with `datasets.load_dataset("<this folder>")` or `datasets.load_dataset("webdataset",
data_dir="<this folder>")`, or with `webdataset` / `wids` from the index files.
"""
    path = Path(out_dir) / "README.md"
    atomic_write_bytes(path, body.encode())
    return path


def write_indexes(out_dir: Path, data_dir: Path, infos: Sequence[ShardInfo], accepted: Accepted,
                  counts: dict) -> dict:
    """Every file beside the shards (wids index per split, shard map, dataset card, summary); returns the
    summary with the paper's selection counts (tasks/paper_counts.py)."""
    from tasks.paper_counts import paper_counts

    for split in SPLITS:
        write_wids_index(out_dir, split, infos)
    write_shard_map(out_dir, infos, accepted)
    write_dataset_card(out_dir, accepted)
    summary = write_summary(out_dir, infos, counts, write=False)
    summary["paper_counts"] = paper_counts(data_dir, _methods_only(accepted))
    return summary


def _methods_only(accepted: Accepted) -> pl.DataFrame:
    """split and targets_json with each target's method only: all paper_counts reads of the accepted rows,
    without every findings text held at once."""
    parts = [
        b.with_columns(
            pl.Series(
                "targets_json",
                [json.dumps([{"method": t["method"]} for t in json.loads(j)]) for j in b["targets_json"].to_list()],
                dtype=pl.String,
            )
        )
        for b in batches(accepted, ["split", "targets_json"])
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema={"split": pl.String, "targets_json": pl.String})
