"""What an LLM operation is: a prompt, a response schema, a version, and how items become messages.

An Operation is pure data plus small functions; the runner (tasks/llm/runner.py) does all I/O. The
version is a hash of everything that shapes the answer (system prompt, few-shot examples, user-message
template version, response JSON schema), so changing a prompt invalidates exactly the cached answers
that depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from cxrio import sha256_json


class InvalidAnswer(ValueError):
    """The model answered, but not with a usable instance of the response schema (or it refused)."""

    def __init__(self, reason: str, raw: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class RulesUnsupported(RuntimeError):
    """The offline `rules` backend cannot do this item (e.g. translation); the item is quarantined."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. `payload` is everything the prompt sees; its hash is the cache's input hash."""

    id: str
    source: str
    payload: dict[str, Any]

    @property
    def input_hash(self) -> str:
        return sha256_json(self.payload)


@dataclass(frozen=True, eq=False)
class Operation:
    name: str
    system_prompt: str
    response_model: type[BaseModel]
    # payload -> text of the user message. Bump `template_version` when its wording changes.
    render_user: Callable[[dict[str, Any]], str]
    template_version: str = "1"
    # Few-shot pairs (user text, assistant JSON text), sent before the item.
    examples: tuple[tuple[str, str], ...] = ()
    # Validated answer (+ payload) -> output fields; raise InvalidAnswer to reject a schema-valid answer.
    postprocess: Callable[[BaseModel, dict[str, Any]], dict[str, Any]] | None = None
    # Offline backend: payload -> output fields; raise RulesUnsupported when it cannot answer honestly.
    rules: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Request-body overrides of an operation with a published protocol (its decoding settings; a None value
    # removes the key, e.g. response_format for a text-answer protocol). Part of the version and cache key.
    request_params: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        # openai's own converter to the strict subset that structured outputs accept (all fields required,
        # additionalProperties false); the same one `chat.completions.parse` uses.
        from openai.lib._pydantic import to_strict_json_schema

        return to_strict_json_schema(self.response_model)

    @cached_property
    def version(self) -> str:
        shaped = {
            "name": self.name,
            "system": self.system_prompt,
            "examples": list(self.examples),
            "template": self.template_version,
            "schema": self.json_schema,
        }
        if self.request_params:  # absent for other operations, so their versions (and caches) are unchanged
            shaped["request"] = self.request_params
        return sha256_json(shaped)[:16]

    def response_format(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": f"cxrflow_{self.name}", "schema": self.json_schema, "strict": True},
        }

    def build_messages(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}]
        for user, assistant in self.examples:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": self.render_user(payload)})
        return messages

    def parse_answer(
        self, content: str | None, refusal: str | None, finish_reason: str | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate one chat answer; returns output fields or raises InvalidAnswer (raw answer kept)."""
        if refusal:
            raise InvalidAnswer(f"refusal: {refusal[:200]}", raw=refusal)
        if content is None:
            raise InvalidAnswer(f"empty answer (finish_reason={finish_reason})", raw=None)
        if finish_reason == "length":
            raise InvalidAnswer("answer cut off at max_tokens (finish_reason=length)", raw=content)
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise InvalidAnswer(f"answer is not valid JSON: {e.msg} at char {e.pos}", raw=content) from None
        try:
            parsed = self.response_model.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise InvalidAnswer(f"answer does not match schema: {loc}: {first['msg']}", raw=content) from None
        if self.postprocess is not None:
            return self.postprocess(parsed, payload)
        return parsed.model_dump()

    def run_rules(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.rules is None:
            raise RulesUnsupported(f"operation {self.name!r} has no rules backend")
        return self.rules(payload)
