"""Deterministic WebDataset shards from the validated samples.

Shard boundaries are planned up front from member sizes (sorted keys per split, at most `max_samples`
samples and `max_bytes` tar bytes per shard), so a rerun knows which shards already exist and writes only
the missing ones, and shards can be written in parallel threads. Each shard goes to a hidden temporary file
(cxrio.atomic_path) and is renamed when complete; a crash leaves no partial shard under a shard name.

Why not webdataset's writers: ShardWriter decides boundaries while writing, opens a shard before the first
sample (empty shards) and cannot resume; TarWriter gives fixed mtime/user/group/mode but writes through
tarfile's stream mode, which re-buffers every member in 10 KB records (measured ~0.2x of a plain copy of the
image bytes here). We write plain ustar members instead: headers from `tarfile.TarInfo.tobuf` (fixed
mtime/uid/gid/mode/uname/gname), image bytes copied by the kernel (`os.copy_file_range`), and the tarfile
end-of-archive layout (two zero blocks, padded to 10 KB records). Members per sample: image, .json, .txt;
the .json has no nulls (schemas/sample_json.py), so readers that infer types from a few samples get them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from cxrio import atomic_path, atomic_write_json, clean_stale_temps, read_json
from schemas.sample_json import encode_sample_json
from schemas.shards import (
    IMAGE_EXTENSIONS,
    LEGACY_SHARD_NAME_RE,
    SHARD_DIR,
    SHARD_NAME_RE,
    SPLITS,
    TAR_GROUP,
    TAR_MODE,
    TAR_MTIME,
    TAR_USER,
    ShardConfig,
    shard_name,
)
from tasks.accepted_rows import Accepted, key_order, rows_at
from tasks.shard_publish import retire_published_set

PLAN_FILE = "_shard_plan.json"
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads the archive to whole records


class ShardKeyError(ValueError):
    """A sample key WebDataset would split (dot) or that is not a plain name."""


@dataclass(slots=True)
class PlannedSample:
    """What the plan keeps of a sample: its key and the digest of its members. The writer reads the row again
    (tasks/accepted_rows.py) and checks it still gives this digest: the plan never holds the payloads."""

    key: str
    digest: bytes  # sha256 of the image's extension, size and hash, and of the .json and .txt payloads


@dataclass
class PlannedShard:
    name: str
    split: str
    samples: list[PlannedSample] = field(default_factory=list)
    tar_bytes: int = 0
    positions: pl.Series | None = None  # its samples' row positions in the accepted rows, in shard order

    @property
    def filesize(self) -> int:
        # member blocks + two zero end blocks, padded to whole records (tarfile's layout)
        raw = self.tar_bytes + 2 * _BLOCK
        return -(-raw // _RECORD) * _RECORD

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{TAR_MTIME}|{TAR_MODE}|{TAR_USER}|{TAR_GROUP}".encode())
        for s in self.samples:
            h.update(f"{s.key}|{s.digest.hex()}\n".encode())
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


# Bidirectional overrides/isolates, zero-width characters, word joiners and BOMs: invisible, they make one text
# read (and tokenize) differently from how it looks, and can reorder what a reader sees.
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def strip_invisible(value):
    """`value` with invisible formatting characters removed from every string in it."""
    if isinstance(value, str):
        return _INVISIBLE.sub("", value)
    if isinstance(value, dict):
        return {k: strip_invisible(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_invisible(v) for v in value]
    return value


def sample_members(row: dict) -> tuple[bytes, bytes]:
    """The .json (null-free, schemas/sample_json.py) and .txt payloads of one validated sample, without
    invisible formatting characters (strip_invisible)."""
    meta = encode_sample_json(
        row, json.loads(row["targets_json"]), row.get("indication_text"), row["primary_method"]
    )
    js = json.dumps(strip_invisible(meta), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return js, strip_invisible(row["findings_text"]).encode()


def check_key(key: str) -> None:
    # ustar names hold 100 bytes and the key gets an extension: keep keys well under that.
    bad = not key or len(key.encode()) > 90 or key.startswith("_")
    if bad or "." in key or "/" in key or any(c.isspace() for c in key):
        raise ShardKeyError(
            f"sample key {key!r} is not a dot-free plain name of <= 90 bytes (WebDataset splits keys at dots)"
        )


@dataclass
class _Sample:
    """One accepted row made ready for its shard."""

    key: str
    image_ext: str
    image_path: Path
    image_size: int
    members: tuple[bytes, bytes]  # .json and .txt payloads
    tar_bytes: int
    digest: bytes


def _prepare(row: dict, data_dir: Path) -> _Sample:
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
    ).digest()
    return _Sample(key, ext, path, size, (js, txt), tar_bytes, digest)


def plan_shards(accepted: Accepted, data_dir: Path, cfg: ShardConfig) -> list[PlannedShard]:
    """Assign every accepted sample to a shard, deterministically (sorted by key within each split). The rows
    are read in bounded windows (tasks/accepted_rows.py); per sample the plan keeps its key and digest."""
    shards: list[PlannedShard] = []
    for split in SPLITS:
        order = key_order(accepted, split)
        current: PlannedShard | None = None
        first, start = len(shards), 0
        for i, row in enumerate(rows_at(accepted, order)):
            s = _prepare(row, data_dir)
            if (
                current is None
                or len(current.samples) >= cfg.max_samples
                or (current.samples and current.tar_bytes + s.tar_bytes > cfg.max_bytes)
            ):
                if current is not None:
                    current.positions = order.slice(start, i - start)
                current, start = PlannedShard("", split), i
                shards.append(current)
            current.samples.append(PlannedSample(s.key, s.digest))
            current.tar_bytes += s.tar_bytes
        if current is not None:
            current.positions = order.slice(start, len(order) - start)
        mine = shards[first:]  # names carry the split's shard count (`-of-N`), known once it is planned
        for i, s in enumerate(mine):
            s.name = shard_name(split, i, len(mine))
    return shards


def _md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = TAR_MTIME
    ti.mode = TAR_MODE
    ti.uid = ti.gid = 0
    ti.uname, ti.gname = TAR_USER, TAR_GROUP
    return ti.tobuf(tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_image(path: Path, fd: int, size: int) -> None:
    """Copy `size` bytes of the image into the shard, in the kernel where the filesystem allows."""
    src = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < size:
            try:
                n = os.copy_file_range(src, fd, size - done)
            except OSError:  # EXDEV/ENOSYS/EINVAL on some kernels and filesystems: plain read/write
                os.lseek(src, done, os.SEEK_SET)
                data = os.read(src, size - done)
                n = len(data)
                _write_all(fd, data)
            if n == 0:
                raise RuntimeError(f"{path}: shorter than the {size} bytes planned (changed on disk?)")
            done += n
    finally:
        os.close(src)


class _Fault:
    """Fault injection for the crash tests: SIGKILL the process after `after` samples (None: never)."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.count = 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        if self.after is None:
            return
        with self.lock:
            self.count += 1
            if self.count >= self.after:
                os.kill(os.getpid(), signal.SIGKILL)


def _write_one(
    shard: PlannedShard, out_dir: Path, fault: _Fault, accepted: Accepted, data_dir: Path
) -> str:
    """Write SHARD from its rows, read again a window at a time: each must give the digest planned."""
    with atomic_path(out_dir / shard.name) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            for planned, row in zip(shard.samples, rows_at(accepted, shard.positions), strict=True):
                s = _prepare(row, data_dir)
                if (s.key, s.digest) != (planned.key, planned.digest):
                    raise RuntimeError(f"{shard.name}: sample {s.key} changed since it was planned (input changed?)")
                js, txt = s.members
                _write_all(fd, _header(f"{s.key}.{s.image_ext}", s.image_size))
                _copy_image(s.image_path, fd, s.image_size)
                tail = [_pad(s.image_size)]
                for ext, data in (("json", js), ("txt", txt)):
                    tail += [_header(f"{s.key}.{ext}", len(data)), data, _pad(len(data))]
                _write_all(fd, b"".join(tail))
                fault.tick()
            _write_all(fd, b"\0" * (shard.filesize - shard.tar_bytes))  # end blocks + record padding
        finally:
            os.close(fd)
        size = tmp.stat().st_size
        if size != shard.filesize:
            raise RuntimeError(f"{shard.name}: wrote {size} bytes, planned {shard.filesize} (input changed?)")
        return _md5_file(tmp)


def write_shards(accepted: Accepted, data_dir: Path, out_dir: Path, cfg: ShardConfig,
                 progress=None, *, kill_after_samples: int | None = None) -> list[ShardInfo]:
    """Write (or complete) the shard set for the accepted samples; returns one ShardInfo per shard.
    `progress(samples_done, samples_total)` is called as shards complete. `kill_after_samples` is a test hook:
    the process SIGKILLs itself after that many samples (the crash-recovery test). `accepted`: validation's
    accepted.parquet (read in bounded batches, tasks/accepted_rows.py) or the rows as a DataFrame."""
    out_dir = Path(out_dir)
    (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir / SHARD_DIR)  # what a killed run was writing
    shards = plan_shards(accepted, data_dir, cfg)
    plan_path = out_dir / PLAN_FILE
    old = read_json(plan_path).get("shards", {}) if plan_path.exists() else {}
    wanted = {s.name: s.fingerprint for s in shards}
    if {n: v.get("fingerprint") for n, v in old.items()} != wanted:
        retire_published_set(out_dir)  # before any tar changes: no index may name a tar that goes away
    for existing in [*out_dir.iterdir(), *(out_dir / SHARD_DIR).iterdir()]:
        # Delete shards from a run with other input or limits BEFORE the new plan is recorded, so a crash
        # in between can never make an outdated shard look like part of the new set.
        name = existing.relative_to(out_dir).as_posix()
        if LEGACY_SHARD_NAME_RE.match(name) or (
            SHARD_NAME_RE.match(existing.name) and old.get(name, {}).get("fingerprint") != wanted.get(name)
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
    fault = _Fault(kill_after_samples)

    def one(s: PlannedShard) -> ShardInfo:
        final = out_dir / s.name
        reused = final.exists() and final.stat().st_size == s.filesize
        md5 = _md5_file(final) if reused else _write_one(s, out_dir, fault, accepted, data_dir)
        return ShardInfo(s.name, s.split, len(s.samples), s.filesize, md5, [x.key for x in s.samples], reused)

    # Threads suffice: the byte work (copy_file_range, md5) releases the GIL.
    workers = cfg.workers or min(4, os.cpu_count() or 1)
    total, infos = sum(len(s.samples) for s in shards), []

    def collect(results) -> list[ShardInfo]:
        for info in results:  # in plan order, on the calling thread (progress callbacks may not be thread-safe)
            infos.append(info)
            if progress is not None:
                progress(sum(i.nsamples for i in infos), total)
        return infos

    if workers == 1:
        return collect(one(s) for s in shards)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return collect(pool.map(one, shards))
