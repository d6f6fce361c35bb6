"""Runs an Operation over WorkItems with one backend: cache lookup, data-use guard, concurrent requests
under a rate budget, validation, one re-ask on invalid answers, quarantine, ledger.

Retries of transport failures (429 with Retry-After, 5xx, timeouts, connection errors) are openai's own
(`max_retries`, exponential backoff with jitter). This module only adds what the client lacks: the
re-ask after an invalid/refused answer, client-side RPM/TPM budgets and per-item isolation of failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from schemas.llm import LLMConfig
from tasks.llm.answers import answer_entry, quarantine_entry, request_body
from tasks.llm.cache import ResponseCache, cache_key
from tasks.llm.guard import DataUseError, canonical_endpoint, check_data_use, endpoint_url
from tasks.llm.ledger import Ledger, LedgerEntry, estimate_cost
from tasks.llm.operation import InvalidAnswer, Operation, RulesUnsupported, WorkItem
from tasks.llm.ratelimit import RateLimiter
from tasks.secrets import redact_text

log = logging.getLogger("cxrflow.llm")
T = TypeVar("T")


@dataclass
class ItemResult:
    item_id: str
    status: str  # "ok" | "quarantined"
    output: dict[str, Any] | None
    reason: str | None = None
    raw: str | None = None  # the model's answer, kept for quarantined items
    cache_hit: bool = False
    cache_key: str | None = None


@dataclass
class RunResult:
    operation: str
    backend: str
    model: str
    version: str
    params: dict[str, Any]
    results: dict[str, ItemResult]
    ledger: Ledger
    cache_hits: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        quarantined = sum(1 for r in self.results.values() if r.status != "ok")
        return {
            "operation": self.operation,
            "backend": self.backend,
            "model": self.model,
            "prompt_version": self.version,
            "parameters": self.params,
            "reports": len(self.results),
            "ok": len(self.results) - quarantined,
            "quarantined": quarantined,
            "cache_hits": self.cache_hits,
            **self.ledger.totals(),
            **self.notes,
        }


def generation_params(op: Operation, cfg: LLMConfig) -> dict[str, Any]:
    """The generation parameters actually sent (the config's, as an operation's protocol overrides them)."""
    params = cfg.parameters()
    for k, v in op.request_params.items():
        if k != "response_format":
            params[k] = v
    return params


def _estimated_tokens(body: dict[str, Any]) -> int:
    # ~4 characters per token for English; good enough for a client-side budget.
    return len(json.dumps(body["messages"])) // 4 + int(body.get("max_tokens", 0))


def model_name(cfg: LLMConfig) -> str:
    return "rules" if cfg.backend == "rules" else cfg.model


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from inside a running loop (Prefect async contexts, notebooks): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="cxrflow-llm")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_operation(op: Operation, items: Sequence[WorkItem], cfg: LLMConfig, **kw: Any) -> RunResult:
    return run_sync(run_operation_async(op, items, cfg, **kw))


async def run_operation_async(
    op: Operation,
    items: Sequence[WorkItem],
    cfg: LLMConfig,
    *,
    ledger_path: Path | None = None,
    ledger: Ledger | None = None,
    client: Any = None,
    progress: Any = None,
) -> RunResult:
    """`progress(done, total, cost_usd_so_far)` as answers arrive (cached ones count at once)."""
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError("WorkItem ids must be unique")
    # Before any client is built or byte is sent.
    check_data_use({i.source for i in items}, cfg)
    ledger = ledger if ledger is not None else Ledger(ledger_path)
    params = generation_params(op, cfg) if cfg.backend != "rules" else {}
    result = RunResult(op.name, cfg.backend, model_name(cfg), op.version, params, {}, ledger)
    if cfg.backend == "rules":
        for item in items:
            try:
                out = op.run_rules(item.payload)
                result.results[item.id] = ItemResult(item.id, "ok", out)
            except RulesUnsupported as e:
                result.results[item.id] = ItemResult(item.id, "quarantined", None, reason=str(e))
            if progress is not None:
                progress(len(result.results), len(items), 0.0)
        return result

    cache = ResponseCache(cfg.cache_dir)
    endpoint = canonical_endpoint(endpoint_url(cfg))
    keys = {
        i.id: cache_key(
            backend=cfg.backend, model=cfg.model, operation=op.name, version=op.version,
            input_hash=i.input_hash, params=params, endpoint=endpoint,
        )
        for i in items
    }
    entries: dict[str, dict[str, Any]] = {}
    misses: dict[str, WorkItem] = {}
    for item in items:
        key = keys[item.id]
        if key in entries or key in misses:
            continue
        entry = cache.get(key)
        if entry is not None and (entry["status"] == "ok" or not cfg.retry_quarantined):
            entries[key] = entry
        else:
            misses[key] = item
    hit_keys = set(entries)
    log.info("%s: %d items, %d unique inputs, %d cached", op.name, len(items), len(entries) + len(misses), len(entries))

    if misses:
        import openai

        own_client = client is None
        if own_client:
            from tasks.llm.client import make_client

            client = await make_client(cfg)
        try:
            if cfg.batch:
                from tasks.llm.batch import run_batch

                entries.update(await run_batch(op, misses, cfg, client, ledger, cache))
            else:
                def tick(answered: int) -> None:
                    if progress is not None:
                        progress(len(entries) + answered, len(entries) + len(misses), ledger.cost_so_far)

                tick(0)
                entries.update(await _run_requests(op, misses, cfg, client, ledger, cache, tick))
        except DataUseError:
            raise
        except (openai.APIError, TimeoutError) as exc:  # refused key or redirect, failed batch: one redacted line
            from tasks.llm.client import service_error

            raise service_error(exc, getattr(client, "api_key", None)) from None
        finally:
            if own_client:
                await client.close()

    for item in items:
        key = keys[item.id]
        e = entries[key]
        hit = key in hit_keys
        result.cache_hits += hit
        if e["status"] == "ok":
            result.results[item.id] = ItemResult(item.id, "ok", e["output"], cache_hit=hit, cache_key=key)
        else:
            result.results[item.id] = ItemResult(
                item.id, "quarantined", None, reason=e["reason"], raw=e.get("raw"), cache_hit=hit, cache_key=key
            )
    return result


async def _run_requests(
    op: Operation, misses: dict[str, WorkItem], cfg: LLMConfig, client: Any, ledger: Ledger, cache: ResponseCache,
    tick: Any = None,
) -> dict[str, dict[str, Any]]:
    import httpx2
    import openai

    limiter = RateLimiter(cfg.rpm, cfg.tpm)
    queue: asyncio.Queue[tuple[str, WorkItem]] = asyncio.Queue()
    for key, item in misses.items():
        queue.put_nowait((key, item))
    done: dict[str, dict[str, Any]] = {}

    def record(key: str, item: WorkItem, status: str, tokens: dict[str, int], model: str, retries: int) -> None:
        ledger.record(LedgerEntry(
            item_id=item.id, cache_key=key, operation=op.name, model=model, mode="sync", status=status,
            prompt_tokens=tokens["prompt_tokens"], completion_tokens=tokens["completion_tokens"],
            cost_usd=estimate_cost(model, tokens["prompt_tokens"], tokens["completion_tokens"], batch=False,
                                   extra=cfg.prices),
            retries=retries,
        ))

    async def ask(key: str, item: WorkItem) -> dict[str, Any]:
        body = request_body(op, item.payload, cfg)
        last: InvalidAnswer | None = None
        attempts = 1 + cfg.invalid_answer_retries
        for _ in range(attempts):
            await limiter.acquire(_estimated_tokens(body) if cfg.tpm else 0)
            try:
                # client.post rather than chat.completions.create: the typed create re-walks the request
                # (messages + JSON schema) through its TypedDict transform, ~6 ms of CPU per request, which
                # capped throughput on 2 shared cores. Retries, auth and Azure deployment routing are the same.
                response = await client.post("/chat/completions", cast_to=httpx2.Response, body=body)
            except (openai.AuthenticationError, openai.PermissionDeniedError):
                raise  # configuration errors: every item would fail the same way
            except openai.APIError as e:
                status = getattr(e, "status_code", None)
                reason = f"API error after {cfg.max_retries} retries: {type(e).__name__}" + (
                    f" (HTTP {status})" if status else "")
                # after max_retries retries (openai does not report how many it made before giving up)
                record(key, item, "error", {"prompt_tokens": 0, "completion_tokens": 0}, cfg.model, cfg.max_retries)
                log.warning("%s item %s: %s", op.name, item.id, reason)
                return {"status": "error", "reason": reason}  # not cached: a rerun tries again
            retries = int(response.request.headers.get("x-stainless-retry-count", "0"))
            try:
                completion = json.loads(response.content)
            except ValueError as e:  # a body that is not JSON (cut-off HTTP response): re-ask like a bad answer
                record(key, item, "invalid", {"prompt_tokens": 0, "completion_tokens": 0}, cfg.model, retries)
                last = InvalidAnswer(f"response body is not JSON: {e}", raw=response.text[:2000])
                continue
            entry, err, tokens = answer_entry(op, item, completion)
            priced_model = cfg.model if cfg.backend == "azure" else (completion.get("model") or cfg.model)
            record(key, item, "ok" if entry else "invalid", tokens, priced_model, retries)
            if entry is not None:
                await asyncio.to_thread(cache.put, key, entry)  # file creation is slow on overlay disks
                return entry
            last = err
            log.info("%s item %s: invalid answer (%s)", op.name, item.id, err.reason)
        assert last is not None
        entry = quarantine_entry(op, last, attempts)
        await asyncio.to_thread(cache.put, key, entry)
        return entry

    async def worker() -> None:
        while True:
            try:
                key, item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                done[key] = await ask(key, item)
            except (openai.AuthenticationError, openai.PermissionDeniedError, DataUseError):
                raise  # a transport the guard refused fails the run, not one item
            except Exception as e:  # one bad report never fails the batch
                log.warning("%s item %s: unexpected %s", op.name, item.id, type(e).__name__)
                reason = redact_text(f"unexpected error: {type(e).__name__}: {e}", [getattr(client, "api_key", None)])
                done[key] = {"status": "error", "reason": reason[:500]}
            if tick is not None:
                tick(len(done))

    workers = [asyncio.create_task(worker()) for _ in range(min(cfg.concurrency, len(misses)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    return done
