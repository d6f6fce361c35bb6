"""Indexes beside the shards, and the read-back check that proves every sample can be read.

- `{split}.index.json`: the wids shard index (`__kind__` "wids-shard-index-v1", `wids_version` 1, a
  `shardlist` of {url, nsamples, filesize, md5sum}; urls are relative to the index, as wids resolves them).
- `shards.parquet`: every key -> its shard (SHARD_MAP_SCHEMA).
- `summary.json`: samples per split, shard count, bytes, filtered/quarantined rows and the reconciliation.
- `README.md`: a dataset card whose `dataset_info.features` declare every member's type, so
  `datasets.load_dataset(folder)` does not infer them from the first five samples (a field that is null there,
  such as an absent report section or an unmentioned label, was inferred as null and the load failed on the
  first sample that had a value).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa

from schemas.manifest import MANIFEST_SCHEMA
from schemas.shards import IMAGE_EXTENSIONS, SHARD_MAP_SCHEMA, SPLITS, index_name, shard_split
from tasks.io import atomic_write_bytes, atomic_write_json, atomic_write_parquet, quiet_wids
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


def write_shard_map(out_dir: Path, infos: Sequence[ShardInfo], accepted: pl.DataFrame) -> Path:
    meta = {
        r["image_key"]: r
        for r in accepted.select(["image_key", "image_format", "primary_method", "targets_json"]).iter_rows(
            named=True
        )
    }
    rows = []
    for info in infos:
        for idx, key in enumerate(info.keys):
            m = meta[key]
            ext = "png" if str(m["image_format"]).lower() == "png" else "jpg"
            rows.append(
                {
                    "image_key": key,
                    "split": info.split,
                    "shard": info.name,
                    "index_in_shard": idx,
                    "image_member": f"{key}.{ext}",
                    "primary_method": m["primary_method"],
                    "n_targets": len(json.loads(m["targets_json"])),
                }
            )
    table = pa.Table.from_pylist(rows, schema=SHARD_MAP_SCHEMA)
    path = Path(out_dir) / "shards.parquet"
    atomic_write_parquet(path, table)
    return path


def write_summary(out_dir: Path, infos: Sequence[ShardInfo], counts: dict) -> dict:
    """counts: validation counts (ingest_found/filtered/quarantined, filtered, quarantined, accepted)."""
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
    atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary


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


def _hf_feature(name: str, typ: pa.DataType) -> dict:
    """One Hugging Face `features` entry (YAML form of datasets.Features) for an Arrow type of the manifest."""
    if pa.types.is_list(typ):
        return {"name": name, "list": _hf_feature("", typ.value_type)["dtype"]}
    dtype = {pa.string(): "string", pa.bool_(): "bool"}.get(typ, str(typ))  # int8, int32, int64, float64
    return {"name": name, "dtype": dtype}


def shard_features(image_ext: str) -> list[dict]:
    """The members of every sample as `datasets` types: the .json member is the manifest row (see
    tasks.shard.sample_members) plus targets, indication and primary_method."""
    row = [_hf_feature(f.name, f.type) for f in MANIFEST_SCHEMA]
    row += [
        {"name": "targets", "list": [{"name": "findings", "dtype": "string"}, {"name": "method", "dtype": "string"}]},
        {"name": "indication", "dtype": "string"},
        {"name": "primary_method", "dtype": "string"},
    ]
    row.sort(key=lambda f: f["name"])
    return [
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
        {"name": image_ext, "dtype": "image"},
        {"name": "json", "struct": row},
        {"name": "txt", "dtype": "string"},
    ]


def write_dataset_card(out_dir: Path, accepted: pl.DataFrame) -> Path | None:
    """README.md declaring the features (None when the samples mix image formats: no one schema fits)."""
    import yaml

    exts = {IMAGE_EXTENSIONS.get(str(f).lower()) for f in accepted.get_column("image_format").unique().to_list()}
    path = Path(out_dir) / "README.md"
    if len(exts) != 1 or None in exts:
        path.unlink(missing_ok=True)
        return None
    meta = yaml.safe_dump({"dataset_info": {"features": shard_features(exts.pop())}}, sort_keys=False)
    body = (
        "Chest X-ray report-generation shards written by cxrflow (WebDataset tars under data/, one per "
        "split and shard; wids indexes beside them).\n"
    )
    atomic_write_bytes(path, f"---\n{meta}---\n\n{body}".encode())
    return path


def write_indexes(out_dir: Path, data_dir: Path, infos: Sequence[ShardInfo], accepted: pl.DataFrame,
                  counts: dict) -> dict:
    """Every file beside the shards (wids index per split, shard map, dataset card, summary); returns the
    summary with the paper's selection counts (tasks/paper_counts.py)."""
    from tasks.paper_counts import paper_counts

    for split in SPLITS:
        write_wids_index(out_dir, split, infos)
    write_shard_map(out_dir, infos, accepted)
    write_dataset_card(out_dir, accepted)
    summary = write_summary(out_dir, infos, counts)
    summary["paper_counts"] = paper_counts(data_dir, accepted)
    return summary
