"""Content-addressed, persistent answer cache: one JSON file per key, written atomically.

One file per key (not sqlite) because concurrent processes and interrupted runs then need no locking:
a reader sees either no file or a complete one, and two writers of the same key write the same answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cxrio import atomic_write_bytes, sha256_json


def cache_key(
    *, backend: str, model: str, operation: str, version: str, input_hash: str, params: dict, endpoint: str
) -> str:
    """The answer's identity: which server (`endpoint`: one server's answers are never reused for another's),
    which model, which prompt version, which input and generation parameters."""
    return sha256_json(
        {
            "backend": backend,
            "endpoint": endpoint,
            "model": model,
            "operation": operation,
            "version": version,
            "input": input_hash,
            "params": params,
        }
    )


class ResponseCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            return json.loads(p.read_bytes())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            # Cannot happen with atomic writes unless the disk was tampered with; treat as a miss.
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entry = {**entry, "key": key, "cached_at": time.time()}
        atomic_write_bytes(self.path(key), json.dumps(entry, sort_keys=True).encode())

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0
