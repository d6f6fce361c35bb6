"""One request and one answer of an LLM operation, shared by the synchronous runner (tasks/llm/runner.py) and
the Batch API path (tasks/llm/batch.py): the request body sent, and the cache entry an answer becomes."""

from __future__ import annotations

from typing import Any

from schemas.llm import LLMConfig
from tasks.llm.operation import InvalidAnswer, Operation, WorkItem


def request_body(op: Operation, payload: dict[str, Any], cfg: LLMConfig) -> dict[str, Any]:
    body = {
        "model": cfg.model,
        "messages": op.build_messages(payload),
        "response_format": op.response_format(),
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
    }
    if cfg.seed is not None:
        body["seed"] = cfg.seed
    for k, v in op.request_params.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def answer_entry(
    op: Operation, item: WorkItem, completion: dict[str, Any] | Any
) -> tuple[dict[str, Any] | None, InvalidAnswer | None, dict[str, int]]:
    """(ok entry, None, usage) or (None, error, usage) from a chat completion (object or JSON dict)."""
    if not isinstance(completion, dict):
        completion = completion.model_dump()
    usage = completion.get("usage") or {}
    tokens = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
              "completion_tokens": int(usage.get("completion_tokens") or 0)}
    try:
        choice = completion["choices"][0]
        message = choice["message"]
        out = op.parse_answer(message.get("content"), message.get("refusal"), choice.get("finish_reason"), item.payload)
    except InvalidAnswer as e:
        return None, e, tokens
    except (KeyError, IndexError, TypeError) as e:
        return None, InvalidAnswer(f"malformed completion: {type(e).__name__}: {e}"), tokens
    entry = {"status": "ok", "output": out, "operation": op.name, "version": op.version,
             "model_reported": completion.get("model"), "usage": tokens}
    return entry, None, tokens


def quarantine_entry(op: Operation, err: InvalidAnswer, attempts: int) -> dict[str, Any]:
    return {"status": "quarantined", "reason": f"invalid answer after {attempts} attempt(s): {err.reason}",
            "raw": err.raw, "operation": op.name, "version": op.version}
