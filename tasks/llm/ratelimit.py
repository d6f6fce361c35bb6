"""Client-side requests-per-minute / tokens-per-minute budget.

Own code because the openai client only reacts to 429s; it has no way to stay under a budget that the
server (or a shared Azure deployment) enforces, and backing off after 429s wastes the quota of a batch.
"""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()

    def wait_for(self, amount: float) -> float:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        amount = min(amount, self.capacity)  # a single oversized request must still go through eventually
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)


class RateLimiter:
    """Token buckets for requests and tokens; `await acquire(tokens)` before each request."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None):
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int = 0) -> None:
        if self._requests is None and self._tokens is None:
            return
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                wait = 0.0
                if self._requests:
                    wait = max(wait, self._requests.wait_for(1))
                if self._tokens:
                    wait = max(wait, self._tokens.wait_for(tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._requests:
                self._requests.take(1)
            if self._tokens:
                self._tokens.take(tokens)
