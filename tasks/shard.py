"""Deterministic WebDataset shards from the validated samples.

Shard boundaries are planned up front from member sizes (sorted keys per split, at most `max_samples`
samples and `max_bytes` tar bytes per shard) so a rerun knows which shards already exist and only writes
the missing ones. Each shard is written with webdataset's TarWriter (fixed mtime/user/group/mode, members
sorted by extension) into a hidden `.NAME.partial` file and renamed when complete. ShardWriter is not used:
it decides boundaries while writing, opens a shard before the first sample (empty shards) and cannot resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from schemas.manifest import MANIFEST_SCHEMA
from schemas.shards import (
    IMAGE_EXTENSIONS,
    SHARD_NAME_RE,
    SPLITS,
    TAR_GROUP,
    TAR_MODE,
    TAR_MTIME,
    TAR_USER,
    ShardConfig,
    shard_name,
)
from tasks.io import atomic_write_json, read_json

PLAN_FILE = "_shard_plan.json"
# Fault injection for the crash tests: SIGKILL this process after writing N samples.
FAULT_ENV = "CXRFLOW_SHARD_KILL_AFTER"
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads the archive to whole records


class ShardKeyError(ValueError):
    """A sample key WebDataset would split (dot) or that is not a plain name."""


@dataclass
class PlannedSample:
    key: str
    image_path: Path
    image_ext: str
    row: dict
    tar_bytes: int
    digest: str


@dataclass
class PlannedShard:
    name: str
    split: str
    samples: list[PlannedSample] = field(default_factory=list)
    tar_bytes: int = 0

    @property
    def filesize(self) -> int:
        # member blocks + two zero end blocks, padded to whole records (tarfile's layout)
        raw = self.tar_bytes + 2 * _BLOCK
        return -(-raw // _RECORD) * _RECORD

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{TAR_MTIME}|{TAR_MODE}|{TAR_USER}|{TAR_GROUP}".encode())
        for s in self.samples:
            h.update(f"{s.key}|{s.digest}\n".encode())
        return h.hexdigest()


@dataclass
class ShardInfo:
    name: str
    split: str
    nsamples: int
    filesize: int
    md5sum: str
    keys: list[str]
    reused: bool


def _member_bytes(size: int) -> int:
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


def sample_members(row: dict) -> tuple[bytes, bytes]:
    """The .json and .txt payloads of one validated sample."""
    meta = {name: row.get(name) for name in MANIFEST_SCHEMA.names}
    meta["targets"] = json.loads(row["targets_json"])
    meta["indication"] = row.get("indication_text")
    meta["primary_method"] = row["primary_method"]
    js = json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return js, row["findings_text"].encode()


def check_key(key: str) -> None:
    if not key or "." in key or "/" in key or key.startswith("_") or any(c.isspace() for c in key):
        raise ShardKeyError(
            f"sample key {key!r} is not a dot-free plain name (WebDataset splits keys at dots)"
        )


def plan_shards(accepted: pl.DataFrame, data_dir: Path, cfg: ShardConfig) -> list[PlannedShard]:
    """Assign every accepted sample to a shard, deterministically (sorted by key within each split)."""
    shards: list[PlannedShard] = []
    for split in SPLITS:
        part = accepted.filter(pl.col("split") == split).sort("image_key")
        current: PlannedShard | None = None
        for row in part.iter_rows(named=True):
            key = row["image_key"]
            check_key(key)
            ext = IMAGE_EXTENSIONS.get(str(row["image_format"]).lower())
            if ext is None:
                raise ValueError(f"{key}: image_format {row['image_format']!r} has no shard extension")
            path = Path(data_dir) / row["image_path"]
            size = path.stat().st_size
            js, txt = sample_members(row)
            tar_bytes = _member_bytes(size) + _member_bytes(len(js)) + _member_bytes(len(txt))
            digest = hashlib.sha256(
                f"{ext}|{size}|{row['image_sha256']}|".encode() + hashlib.sha256(js + b"\0" + txt).digest()
            ).hexdigest()
            if (
                current is None
                or len(current.samples) >= cfg.max_samples
                or (current.samples and current.tar_bytes + tar_bytes > cfg.max_bytes)
            ):
                current = PlannedShard(shard_name(split, len([s for s in shards if s.split == split])), split)
                shards.append(current)
            current.samples.append(PlannedSample(key, path, ext, row, tar_bytes, digest))
            current.tar_bytes += tar_bytes
    return shards


class _HashingFile:
    """File wrapper that hashes what tarfile writes, so the md5 for the wids index costs no re-read."""

    def __init__(self, f):
        self.f = f
        self.md5 = hashlib.md5()

    def write(self, data) -> int:
        self.md5.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_one(shard: PlannedShard, out_dir: Path, counter: list[int], kill_after: int | None) -> str:
    from webdataset import TarWriter

    final = out_dir / shard.name
    tmp = out_dir / f".{shard.name}.partial"
    with open(tmp, "wb") as raw:
        hf = _HashingFile(raw)
        writer = TarWriter(hf, encoder=False, mtime=TAR_MTIME, user=TAR_USER, group=TAR_GROUP, mode=TAR_MODE)
        for s in shard.samples:
            js, txt = sample_members(s.row)
            writer.write({"__key__": s.key, s.image_ext: s.image_path.read_bytes(), "json": js, "txt": txt})
            counter[0] += 1
            if kill_after is not None and counter[0] >= kill_after:
                raw.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        writer.close()
    size = tmp.stat().st_size
    if size != shard.filesize:
        tmp.unlink()
        raise RuntimeError(
            f"{shard.name}: wrote {size} bytes, planned {shard.filesize} (image changed on disk?)"
        )
    os.replace(tmp, final)
    return hf.md5.hexdigest()


def write_shards(accepted: pl.DataFrame, data_dir: Path, out_dir: Path, cfg: ShardConfig) -> list[ShardInfo]:
    """Write (or complete) the shard set for the accepted samples; returns one ShardInfo per shard."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.partial"):
        stale.unlink()
    shards = plan_shards(accepted, data_dir, cfg)
    plan_path = out_dir / PLAN_FILE
    old = read_json(plan_path).get("shards", {}) if plan_path.exists() else {}
    wanted = {s.name: s.fingerprint for s in shards}
    for existing in out_dir.iterdir():
        # Delete shards from a run with other input or limits BEFORE the new plan is recorded, so a crash
        # in between can never make an outdated shard look like part of the new set.
        if SHARD_NAME_RE.match(existing.name) and old.get(existing.name, {}).get("fingerprint") != wanted.get(
            existing.name
        ):
            existing.unlink()
    atomic_write_json(
        plan_path,
        {
            "config": cfg.model_dump(),
            "shards": {
                s.name: {"fingerprint": s.fingerprint, "nsamples": len(s.samples), "filesize": s.filesize}
                for s in shards
            },
        },
    )
    kill_env = os.environ.get(FAULT_ENV)
    kill_after = int(kill_env) if kill_env else None
    counter = [0]
    infos: list[ShardInfo] = []
    for s in shards:
        final = out_dir / s.name
        reusable = final.exists() and final.stat().st_size == s.filesize
        md5 = _md5_file(final) if reusable else _write_one(s, out_dir, counter, kill_after)
        infos.append(
            ShardInfo(s.name, s.split, len(s.samples), s.filesize, md5, [x.key for x in s.samples], reusable)
        )
    return infos
