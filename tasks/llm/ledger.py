"""Token and cost ledger: one line per API request (JSONL, appended as requests finish), plus the
per-model price table used to estimate cost."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

# USD per 1M tokens (input, output), list prices (docs/recipe.md, cost reference). Batch API: half price.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
}
BATCH_DISCOUNT = 0.5


def price_for(model: str, extra: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """Exact name first, then the longest table name the model starts with ('gpt-4o-2024-08-06' -> 'gpt-4o')."""
    table = {**PRICES, **(extra or {})}
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name + "-")]
    return table[max(prefixes, key=len)] if prefixes else None


def estimate_cost(
    model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool, extra: dict | None = None
) -> float | None:
    price = price_for(model, extra)
    if price is None:
        return None
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
    return cost * BATCH_DISCOUNT if batch else cost


@dataclass
class LedgerEntry:
    item_id: str
    cache_key: str
    operation: str
    model: str
    mode: str  # "sync" | "batch"
    status: str  # "ok" | "invalid" | "error"
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    retries: int = 0  # HTTP retries the openai client made inside this request
    ts: float = 0.0
    run_id: str = ""


class Ledger:
    """Append-only: every entry carries the run id, so one file can hold the history of many runs."""

    def __init__(self, path: Path | None = None, run_id: str | None = None):
        self.path = Path(path) if path else None
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.entries: list[LedgerEntry] = []
        self.cost_so_far = 0.0  # running sum of priced entries (progress display; totals() is authoritative)
        self._lock = threading.Lock()
        self._file = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, entry: LedgerEntry) -> None:
        entry.ts = entry.ts or time.time()
        entry.run_id = self.run_id
        with self._lock:
            self.entries.append(entry)
            self.cost_so_far += entry.cost_usd or 0.0
            if self.path:
                if self._file is None:  # one handle per run: opening per entry is slow on overlay disks
                    self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
                self._file.write(json.dumps(asdict(entry)) + "\n")
                self._file.flush()  # an interrupted run keeps every line it paid for

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def totals(self) -> dict:
        prompt = sum(e.prompt_tokens for e in self.entries)
        completion = sum(e.completion_tokens for e in self.entries)
        unpriced = sorted({e.model for e in self.entries if e.cost_usd is None})
        out = {
            "run_id": self.run_id,
            "requests": len(self.entries),
            "http_attempts": sum(1 + e.retries for e in self.entries),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "estimated_cost_usd": None if unpriced else round(sum((e.cost_usd or 0.0 for e in self.entries), 0.0), 8),
        }
        if unpriced:
            out["estimated_cost_note"] = f"not computed: no price for model(s) {', '.join(unpriced)}"
        return out


def read_ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
