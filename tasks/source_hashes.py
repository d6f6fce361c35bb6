"""Source content hashes off the hot path (issue 28).

An output image is addressed by the sha256 of its source file (tasks/ingest.py). That sha256 comes, cheapest
first, from:

1. the (path, size, mtime) cache of earlier runs (OUT/.cache/source-hashes.parquet): a rerun hashes nothing;
2. the release's own `SHA256SUMS.txt` in the source root. PhysioNet publishes one with every project
   (MIMIC-CXR, MIMIC-CXR-JPG, BRAX, VinDr-CXR ...): one `<sha256> <path relative to the root>` line per file
   (docs/datasets.md). A deterministic sample of about 1 in VERIFY_SAMPLE files is checked by hashing it
   (all of them with `verify_checksums`); a file that disagrees is quarantined, never ingested. A file changed
   after the sums file was written (a later mtime) is always hashed: the listed value no longer vouches for it;
3. sha256 of the file read once for decoding (mapped: the engine decodes from the same mapping, no second read).

All three give the same sha256, so outputs are byte-identical whichever applied. BLAKE3 would hash ~2x faster
than SHA-NI sha256 here, but an address from it could not be taken from a release's SHA256SUMS.txt, so it
would make the two modes address the same film differently.

pyarrow, not polars, in what chunks call: they run in forked pool workers (tasks/ingest.py, worker_context).
"""

from __future__ import annotations

import bisect
import mmap
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cxrio import atomic_path, read_mapped, sha256_bytes

SUMS_FILE = "SHA256SUMS.txt"
SUMS_CACHE = Path(".cache") / "sha256sums.parquet"  # the parsed file, keyed by its size and mtime
HASH_CACHE = Path(".cache") / "source-hashes.parquet"
ROW_GROUP = 8192  # rows per row group of the caches: what a chunk reads at least
VERIFY_SAMPLE = 64  # about 1 in 64 listed files is hashed and compared on its first ingest
# PhysioNet writes "<hex> <path>" (one space); GNU sha256sum "<hex>  <path>" or "<hex> *<path>" (binary mode).
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(.+?)\r?$")
_CACHE_SCHEMA = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string()),
     ("verified", pa.bool_())]
)

Stat = tuple[int, int, str, bool]  # size, mtime_ns, sha256, verified (hashed here, not taken from the sums file)


# ------------------------------------------------------------------------------- SHA256SUMS.txt


def iter_sums(path: Path, block: int = ROW_GROUP) -> Iterator[tuple[list[str], list[str], int]]:
    """(relative paths, sha256s, malformed line count) of a checksum file, `block` lines at a time."""
    paths: list[str] = []
    digests: list[str] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            m = _LINE.match(line.rstrip("\n"))
            if m is None:
                bad += 1
                continue
            paths.append(m.group(2).removeprefix("./"))
            digests.append(m.group(1).lower())
            if len(paths) >= block:
                yield paths, digests, bad
                paths, digests, bad = [], [], 0
    yield paths, digests, bad


def parse_sums(path: Path) -> tuple[dict[str, str], int]:
    """{relative path: sha256} of a checksum file, and the count of lines that are not `<sha256> <path>`."""
    sums: dict[str, str] = {}
    bad = 0
    for paths, digests, n_bad in iter_sums(path):
        sums.update(zip(paths, digests, strict=True))
        bad += n_bad
    return sums, bad


def prepare_sums(root: Path, out: Path) -> dict | None:
    """Parse ROOT/SHA256SUMS.txt into OUT/.cache/sha256sums.parquet (once per version of the file: its size and
    mtime are kept in the parquet's metadata) so that each chunk reads only its own rows. None without one."""
    src = Path(root) / SUMS_FILE
    cache = Path(out) / SUMS_CACHE
    try:
        st = src.stat()
    except OSError:
        cache.unlink(missing_ok=True)
        return None
    stamp = f"{st.st_size}:{st.st_mtime_ns}".encode()  # the mtime is also what listed files are compared to
    if cache.exists():
        meta = _file_meta(cache)
        if meta.get(b"stamp") == stamp:
            return {"file": SUMS_FILE, "listed": int(meta[b"listed"]), "malformed_lines": int(meta[b"malformed"])}
    # In blocks: the MIMIC-CXR release lists ~600K files. The count and the stamp go into the metadata last.
    listed = bad = 0
    schema = pa.schema([("path", pa.string()), ("sha256", pa.string())])
    with atomic_path(cache) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for paths, digests, n_bad in iter_sums(src):
            writer.write_table(pa.table([paths, digests], schema=schema))
            listed, bad = listed + len(paths), bad + n_bad
        writer.add_key_value_metadata({"stamp": stamp, "listed": str(listed), "malformed": str(bad)})
    return {"file": SUMS_FILE, "listed": listed, "malformed_lines": bad}


def _file_meta(path: Path) -> dict[bytes, bytes]:
    return pq.ParquetFile(path).metadata.metadata or {}


def _read_filtered(path: Path, column: str, keys: list[str]) -> pa.Table | None:
    """The rows whose `column` is in `keys`, reading only the row groups whose min/max statistics can hold one
    of them (a chunk's paths are near each other in sorted order: a few groups of an archive-sized file).
    Not read_table(filters=): that imports pyarrow.dataset in every worker."""
    if not path.exists():
        return None
    import pyarrow.compute as pc

    f = pq.ParquetFile(path)
    at = f.schema_arrow.get_field_index(column)
    keys = sorted(keys)
    groups = []
    for i in range(f.num_row_groups):
        stats = f.metadata.row_group(i).column(at).statistics
        j = bisect.bisect_left(keys, stats.min) if stats is not None and stats.has_min_max else 0
        if stats is None or not stats.has_min_max or (j < len(keys) and keys[j] <= stats.max):
            groups.append(i)
    table = f.read_row_groups(groups) if groups else f.schema_arrow.empty_table()
    return table.filter(pc.is_in(table.column(column), value_set=pa.array(keys, pa.string())))


def load_sums(out: Path, rel_paths: Iterable[str]) -> tuple[dict[str, str], int]:
    """The listed sha256 of `rel_paths` and the sums file's mtime (ns); ({}, 0) without a sums file."""
    table = _read_filtered(Path(out) / SUMS_CACHE, "path", list(rel_paths))
    if table is None:
        return {}, 0
    mtime_ns = int(_file_meta(Path(out) / SUMS_CACHE)[b"stamp"].split(b":")[1])
    return dict(zip(table.column("path").to_pylist(), table.column("sha256").to_pylist(), strict=True)), mtime_ns


def sampled(sha256: str) -> bool:
    """The fixed sample verified without `verify_checksums`: chosen by the listed hash, so a rerun verifies the
    same files (and finds them in the cache), and no file is favoured by its name or position."""
    return int(sha256[:8], 16) % VERIFY_SAMPLE == 0


# ------------------------------------------------------------------------------- (path, size, mtime) cache


def load_hash_cache(out: Path, paths: Iterable[str]) -> dict[str, Stat]:
    """The cached source hashes of `paths` (a chunk reads just its own entries)."""
    table = _read_filtered(Path(out) / HASH_CACHE, "path", list(paths))
    if table is None:
        return {}
    verified = (
        table.column("verified").to_pylist() if "verified" in table.column_names else [True] * table.num_rows
    )  # caches written before this module hold only hashes computed here
    cols = [table.column(n).to_pylist() for n in ("path", "size", "mtime_ns", "sha256")]
    return {p: (s, m, h, v) for p, s, m, h, v in zip(*cols, verified, strict=True)}


def hash_table(hashes: dict[str, Stat]) -> pa.Table:
    values = list(hashes.values())
    return pa.table(
        [list(hashes), [v[0] for v in values], [v[1] for v in values], [v[2] for v in values],
         [v[3] for v in values]],
        schema=_CACHE_SCHEMA,
    )


_SAVED_SCHEMA = pa.schema([f.with_type(pa.large_string()) if f.type == pa.string() else f for f in _CACHE_SCHEMA])


def save_hash_cache(out: Path, parts: list[Path]) -> None:
    """Old cache + this run's hash parts (each sorted by path, tasks/parquet_merge.write_sorted_part), the
    newest entry per path winning: a heap merge read a few rows ahead per file (issue 28), not the whole cache
    in memory."""
    from tasks.parquet_merge import Unsorted, merge_latest

    path = Path(out) / HASH_CACHE
    inputs = ([path] if path.exists() else []) + list(parts)
    if not inputs:
        return
    try:
        merge_latest(inputs, path, "path", _SAVED_SCHEMA, ROW_GROUP, fill={"verified": True})
    except Unsorted:  # a cache from before caches were sorted: rewritten whole, once
        _save_hash_cache_whole(path, inputs)


def _save_hash_cache_whole(path: Path, inputs: list[Path]) -> None:
    import polars as pl

    frames = [pl.scan_parquet(p) for p in inputs]
    frames = [
        f if "verified" in f.collect_schema().names() else f.with_columns(pl.lit(True).alias("verified"))
        for f in frames
    ]
    df = pl.concat(frames).unique(subset="path", keep="last", maintain_order=True).sort("path").collect()
    with atomic_path(path) as tmp:  # sorted, in row groups a chunk can skip (_read_filtered)
        pq.write_table(df.to_arrow(), tmp, row_group_size=ROW_GROUP)


# ------------------------------------------------------------------------------- per file


class ChecksumMismatch(Exception):
    """The file's bytes do not hash to the release's listed sha256: the message is the quarantine reason."""


@dataclass
class SourceHasher:
    """A chunk's view of the three sources of a file's sha256, and what it did (`counts`)."""

    known: dict[str, Stat]
    sums: dict[str, str]
    sums_mtime_ns: int = 0
    verify_all: bool = False
    hashes: dict[str, Stat] = field(default_factory=dict)  # this chunk's entries for the cache
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def for_chunk(cls, out: Path, paths: list[str], rel_paths: list[str], verify_all: bool) -> SourceHasher:
        return cls(load_hash_cache(out, paths), *load_sums(out, rel_paths), verify_all)

    def resolve(self, path: Path, rel_path: str) -> tuple[str, bytes | mmap.mmap | None]:
        """(sha256, the file's contents (a mapping, or bytes) when they had to be read for it, else None). Raises OSError for an
        unreadable file and ChecksumMismatch for one that disagrees with the sums file."""
        st = path.stat()
        listed = self.sums.get(rel_path)
        changed = st.st_mtime_ns > self.sums_mtime_ns  # written after the sums file: hash it
        verify = listed is not None and (self.verify_all or changed or sampled(listed))
        cached = self.known.get(str(path))
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns and (cached[3] or not verify):
            if listed is not None and cached[2] != listed:
                self.counts["mismatched"] += 1
                raise ChecksumMismatch(_mismatch(listed, cached[2]))
            self.counts["cached"] += 1
            self.hashes[str(path)] = cached
            return cached[2], None
        if listed is not None and not verify:
            self.counts["listed"] += 1
            self.hashes[str(path)] = (st.st_size, st.st_mtime_ns, listed, False)
            return listed, None
        data = read_mapped(path)  # hashed and then decoded in place: no copy of the file
        digest = sha256_bytes(data)
        if listed is not None and digest != listed:
            self.counts["mismatched"] += 1
            raise ChecksumMismatch(_mismatch(listed, digest))
        self.counts["verified" if listed is not None else "hashed"] += 1
        self.hashes[str(path)] = (st.st_size, st.st_mtime_ns, digest, True)
        return digest, data


def _mismatch(listed: str, actual: str) -> str:
    return (
        f"checksum mismatch: {SUMS_FILE} lists sha256 {listed[:12]}..., the file hashes to {actual[:12]}... "
        "(altered or corrupt copy)"
    )
