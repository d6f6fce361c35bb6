"""Configuration of the LLM layer (tasks/llm) and of the report-structuring stage.

Secrets are never part of a config: a config names where the key lives (an environment variable or a
Prefect Secret block), so configs can be logged, hashed and shown in the Prefect UI safely.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from schemas.config import DEFAULT_ARTIFACTS
from schemas.finite import finite_check

Backend = Literal["rules", "openai", "azure"]
OperationName = Literal["structure", "translate", "synthesize"]


_KEY_LIKE = re.compile(r"^(?:sk|key|api[-_]?key|token)[-_]|^(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}$",
                       re.IGNORECASE)  # fmt: skip


def no_credentials_in_url(url: str | None) -> str | None:
    """Endpoint URLs are flow parameters (shown in the Prefect UI, hashed into summaries): a key in any part of
    one (user:password@, a query, a fragment, a key-like path segment) is refused. The message never echoes
    the URL. OpenAI-compatible and Azure endpoints need no query: the client adds api-version itself."""
    if not url:
        return url
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):  # a tab or newline: no client accepts it
        raise ValueError("endpoint URL must not contain whitespace or control characters")
    parts = urlsplit(url if "://" in url else f"//{url}")
    # Percent-decoded, and split at path parameters too (";api-key=...", "/key=..." and "%2D" spellings).
    path = unquote(parts.path)
    tokens = [tok for tok in re.split(r"[^A-Za-z0-9_-]+", path) if tok]
    if (
        "@" in parts.netloc or parts.query or parts.fragment or ";" in path or "=" in path
        or any(_KEY_LIKE.search(tok) for tok in tokens)
    ):
        raise ValueError(
            "endpoint URL must not carry credentials (user:password@, a query, a fragment or a key-like path "
            "segment); put the key in api_key_env or secret_block"
        )
    return url


EndpointURL = Annotated[str, AfterValidator(no_credentials_in_url)]


class LLMEndpoint(BaseModel):
    """Which model answers, where, with which key, how many requests at once: the part of LLMConfig a pipeline
    config's `structure` section sets (schemas/pipeline.py StructureSection)."""

    # A rejected value is not echoed in the error: it may be a URL someone put a key into.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    backend: Backend = "rules"
    model: str = Field("gpt-4o", description="model name (openai) or deployment name (azure)")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp); default OPENAI_BASE_URL or the public API"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    azure_endpoint: str | None = Field(None, description="https://<resource>.openai.azure.com (azure backend)")
    concurrency: int = Field(8, ge=1, le=1024)

    @field_validator("base_url", "azure_endpoint")
    @classmethod
    def _no_credentials_in_url(cls, url: str | None) -> str | None:
        return no_credentials_in_url(url)


class LLMConfig(LLMEndpoint):
    """Which model answers, how fast we may ask, where answers are cached, and which endpoints data may reach."""

    secret_block: str | None = Field(None, description="Prefect Secret block holding the key (wins over env)")
    azure_api_version: str = "2024-10-21"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = 0
    rpm: int | None = Field(None, ge=1, description="requests per minute budget (client side)")
    tpm: int | None = Field(None, ge=1, description="tokens per minute budget (estimated prompt + max_tokens)")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, description="openai client retries on 408/409/429/5xx/timeouts")
    invalid_answer_retries: int = Field(1, ge=0, description="re-asks after an invalid answer or a refusal")
    cache_dir: Path = Field(DEFAULT_ARTIFACTS / "llm-cache")
    retry_quarantined: bool = Field(False, description="re-ask items whose cached answer was quarantined")
    allow_endpoints: list[str] = Field(
        default_factory=list,
        description="hosts (host or host:port) that credentialed data may reach besides loopback/private addresses",
    )
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="USD per 1M tokens (input, output) by model; extends the built-in table"
    )
    # Batch API
    batch: bool = False
    batch_max_requests: int = Field(50_000, ge=1, le=50_000)
    batch_max_bytes: int = Field(200 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    batch_poll_s: float = Field(30.0, gt=0)
    batch_timeout_s: float = Field(26 * 3600.0, gt=0)
    batch_requeue_rounds: int = Field(1, ge=0, description="resubmissions of items a batch reported as failed")

    def parameters(self) -> dict:
        """Generation parameters that change an answer: part of every cache key and every output row."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


def checked_llm_fields(fields: dict | None) -> dict | None:
    """LLMConfig fields kept as a dict (a flow parameter, hashed into stage keys) but checked when the config
    is read: a key in a URL, an `api_key` field or a typo is refused before the dict reaches Prefect's stored
    parameters or a run has trained for hours. One line, never echoing a value."""
    if fields is None:
        return fields
    from pydantic import ValidationError

    from schemas.errors import did_you_mean

    try:
        LLMConfig.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(err["loc"][-1]), LLMConfig.model_fields)
            raise ValueError(f"unknown LLM config key {where!r}" + (f" ({hint})" if hint else "")) from None
        raise ValueError(f"{where}: {err['msg'].replace('Value error, ', '')}") from None
    return fields


LLMFields = Annotated[dict | None, AfterValidator(checked_llm_fields)]


class StructureConfig(BaseModel):
    """One manifest through one report operation."""

    model_config = ConfigDict(extra="forbid")
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    manifest: Path
    out: Path
    operation: OperationName | None = Field(None, description="None: per row (labels -> synthesize, else structure)")
    llm: LLMConfig = Field(default_factory=LLMConfig)
    compare_rules: bool = Field(True, description="also run rules `structure` and compare findings with the LLM")


# DIR/reports.parquet: one row per manifest row, the original text beside the structured fields.
def _reports_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("image_key", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("subject_id", pa.string()),
            pa.field("study_id", pa.string()),
            pa.field("split", pa.string()),
            pa.field("view", pa.string()),
            pa.field("report_origin", pa.string()),
            pa.field("report_text", pa.string()),  # original, as in the manifest
            pa.field("operation", pa.string(), nullable=False),
            pa.field("backend", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("prompt_version", pa.string(), nullable=False),
            pa.field("parameters", pa.string(), nullable=False),  # JSON
            # "rule-based" | "synthesized-rules" | "<backend>:<model>" (the shard contract's target method)
            pa.field("method", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),  # "ok" | "quarantined"
            pa.field("reason", pa.string()),
            pa.field("raw_answer", pa.string()),
            pa.field("cache_hit", pa.bool_(), nullable=False),
            pa.field("examination", pa.string()),
            pa.field("indication", pa.string()),
            pa.field("findings", pa.string()),
            pa.field("impression", pa.string()),
            pa.field("translation", pa.string()),
            pa.field("comparison_sentences_removed", pa.int32()),
            # rules `structure` output kept beside an LLM's for the comparison (null when not computed)
            pa.field("rule_findings", pa.string()),
            pa.field("rule_impression", pa.string()),
        ]
    )


REPORTS_SCHEMA = _reports_schema()
