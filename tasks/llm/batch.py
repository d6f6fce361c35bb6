"""OpenAI Batch API mode: JSONL request files within the API limits, upload, create, poll, download
outputs and error files, merge answers into the same cache, re-queue failed items.

Submitted batches are recorded under <cache_dir>/batches/ by the hash of their input file, so a run that
is interrupted while a batch is in flight picks the same batch up again instead of paying twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any

from cxrio import atomic_write_json, read_json, sha256_bytes
from schemas.llm import LLMConfig
from tasks.llm.answers import answer_entry, quarantine_entry, request_body
from tasks.llm.cache import ResponseCache
from tasks.llm.ledger import Ledger, LedgerEntry, estimate_cost
from tasks.llm.operation import InvalidAnswer, Operation, WorkItem
from tasks.secrets import redact_text

log = logging.getLogger("cxrflow.llm.batch")
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def split_request_files(lines: list[bytes], max_requests: int, max_bytes: int) -> list[bytes]:
    """Pack JSONL lines into files of at most max_requests lines and max_bytes bytes."""
    files: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"one batch request is {len(line)} bytes, over the {max_bytes}-byte file limit")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            files.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        files.append(b"".join(current))
    return files


async def _submit(client: Any, data: bytes, op: Operation, state_dir) -> str:
    state_path = state_dir / f"{sha256_bytes(data)[:32]}.json"
    if state_path.exists():
        state = read_json(state_path)
        batch = await client.batches.retrieve(state["batch_id"])
        if batch.status not in {"failed", "expired", "cancelled"}:
            log.info("resuming batch %s (%s)", batch.id, batch.status)
            return batch.id
    f = await client.files.create(file=(f"cxrflow-{op.name}.jsonl", data, "application/jsonl"), purpose="batch")
    batch = await client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"cxrflow_operation": op.name, "cxrflow_version": op.version},
    )
    atomic_write_json(state_path, {"batch_id": batch.id, "input_file_id": f.id, "submitted_at": time.time()})
    return batch.id


async def _wait(client: Any, batch_id: str, cfg: LLMConfig):
    deadline = time.monotonic() + cfg.batch_timeout_s
    polls = 0
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.status} after {cfg.batch_timeout_s:.0f}s")
        # quick first polls (small batches finish in seconds), then every batch_poll_s
        await asyncio.sleep(min(cfg.batch_poll_s, 0.25 * 2**polls))
        polls += 1


async def _lines(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines() if line.strip()]


async def run_batch(
    op: Operation, misses: dict[str, WorkItem], cfg: LLMConfig, client: Any, ledger: Ledger, cache: ResponseCache
) -> dict[str, dict[str, Any]]:
    state_dir = cfg.cache_dir / "batches"
    state_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    todo = dict(misses)
    attempts: Counter[str] = Counter()
    last_invalid: dict[str, InvalidAnswer] = {}
    failures: dict[str, str] = {}
    for round_no in range(1 + cfg.batch_requeue_rounds):
        if not todo:
            break
        lines = [
            (json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                         "body": request_body(op, item.payload, cfg)}) + "\n").encode()
            for key, item in todo.items()
        ]
        files = split_request_files(lines, cfg.batch_max_requests, cfg.batch_max_bytes)
        log.info("%s batch round %d: %d requests in %d file(s)", op.name, round_no, len(lines), len(files))
        batch_ids = [await _submit(client, data, op, state_dir) for data in files]
        batches = await asyncio.gather(*(_wait(client, b, cfg) for b in batch_ids))
        answered: set[str] = set()
        for batch in batches:
            if batch.status != "completed":
                log.warning("batch %s ended %s", batch.id, batch.status)
            for line in await _lines(client, batch.output_file_id) + await _lines(client, batch.error_file_id):
                key = line.get("custom_id")
                if key not in todo or key in answered:
                    continue
                response = line.get("response") or {}
                if line.get("error") or response.get("status_code") != 200:
                    err = line.get("error") or (response.get("body") or {}).get("error") or {}
                    failures[key] = redact_text(  # an error body may quote the key back
                        f"batch request failed: HTTP {response.get('status_code')} {err.get('code') or ''} "
                        f"{err.get('message') or ''}".strip(), [getattr(client, "api_key", None)])
                    continue
                answered.add(key)
                item = todo[key]
                attempts[key] += 1
                entry, invalid, tokens = answer_entry(op, item, response["body"])
                model = cfg.model if cfg.backend == "azure" else (response["body"].get("model") or cfg.model)
                ledger.record(LedgerEntry(
                    item_id=item.id, cache_key=key, operation=op.name, model=model, mode="batch",
                    status="ok" if entry else "invalid", prompt_tokens=tokens["prompt_tokens"],
                    completion_tokens=tokens["completion_tokens"],
                    cost_usd=estimate_cost(model, tokens["prompt_tokens"], tokens["completion_tokens"], batch=True,
                                           extra=cfg.prices),
                ))
                if entry is not None:
                    cache.put(key, entry)
                    done[key] = entry
                    del todo[key]
                elif attempts[key] > cfg.invalid_answer_retries:
                    qe = quarantine_entry(op, invalid, attempts[key])
                    cache.put(key, qe)
                    done[key] = qe
                    del todo[key]
                else:
                    last_invalid[key] = invalid
        for key in todo:
            if key in last_invalid:
                continue
            failures.setdefault(key, f"no answer in batch output (batch status {[b.status for b in batches]})")
    for key in todo:
        if key in last_invalid:  # answered, but never validly: quarantined like the sync path
            done[key] = quarantine_entry(op, last_invalid[key], attempts[key])
            cache.put(key, done[key])
        else:  # never answered: not cached, so a rerun re-queues it
            done[key] = {"status": "error", "reason": failures.get(key, "not answered")}
    return done
