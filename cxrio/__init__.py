"""Small file helpers shared by every stage: content hashes, atomic writes, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary file in `path`'s folder to write; renamed onto `path` when the block ends, removed if it
    raises, so readers never see a partial file. Every atomic write here goes through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see a partial file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_parquet(path: Path, data: Any) -> None:
    """A pyarrow Table (pyarrow's writer: safe in forked pool workers) or a polars DataFrame (its own writer),
    written to a temporary file in the same folder and renamed, so readers never see a partial file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        if isinstance(data, pa.Table):
            pq.write_table(data, tmp)
        else:
            data.write_parquet(tmp)


def reason_category(reason: str | None) -> str:
    """What by-reason summaries count: the text before the first colon ("not frontal: view LATERAL" -> "not
    frontal"), at most 80 characters; "unknown" for a missing reason."""
    return (reason or "unknown").split(":", 1)[0].strip()[:80]


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def quiet_wids():
    """wids prints a summary line to stderr for every dataset it opens, unconditionally: swallow it unless
    CXRFLOW_VERBOSE is set (`cxrflow --verbose`)."""
    if os.environ.get("CXRFLOW_VERBOSE") == "1":
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield
