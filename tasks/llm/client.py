"""Builds the official openai async client for a config. Keys come from a Prefect Secret block or the
environment and are handed straight to the client: never stored on configs, results or logs."""

from __future__ import annotations

import os

from schemas.llm import LLMConfig
from tasks.llm.guard import endpoint_url, guarded_http_client, is_local_endpoint


class MissingKeyError(RuntimeError):
    pass


class KeyRejectedError(MissingKeyError):
    """The endpoint refused the key (HTTP 401/403). The message is redacted: servers quote the key back."""


class LLMServiceError(RuntimeError):
    """A request the service could not serve for every item alike (a redirect refused, a batch upload or
    job that failed): one line, redacted, no traceback."""


def service_error(exc: BaseException, key: str | None = None) -> RuntimeError:
    """A one-line, redacted error for an openai exception that fails the whole run."""
    from tasks.secrets import redact_text

    status = getattr(exc, "status_code", None)
    text = redact_text(" ".join(str(exc).split()), [key])[:300]
    if status in (401, 403):
        return KeyRejectedError(f"the LLM endpoint refused the API key (HTTP {status}): {text}")
    return LLMServiceError(f"LLM request failed ({type(exc).__name__}{f', HTTP {status}' if status else ''}): {text}")


async def resolve_api_key(cfg: LLMConfig) -> str:
    if cfg.secret_block:
        from prefect.blocks.system import Secret

        return str((await Secret.aload(cfg.secret_block)).get())
    key = os.environ.get(cfg.api_key_env)
    if cfg.backend == "azure" and not key:
        key = os.environ.get("AZURE_OPENAI_API_KEY")
    if key:
        return key
    if is_local_endpoint(endpoint_url(cfg)):
        return "no-key-local-endpoint"  # local servers (vLLM, Ollama) usually take any key
    raise MissingKeyError(
        f"no API key: set the environment variable {cfg.api_key_env} or name a Prefect Secret block (secret_block)"
    )


async def make_client(cfg: LLMConfig):
    """AsyncOpenAI / AsyncAzureOpenAI with openai's own retry machinery (exponential backoff with jitter on
    408/409/429/5xx, connection errors and timeouts, honouring Retry-After) configured from cfg."""
    import openai

    key = await resolve_api_key(cfg)
    common = {"api_key": key, "timeout": cfg.timeout_s, "max_retries": cfg.max_retries,
              "http_client": guarded_http_client(cfg)}
    if cfg.backend == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint_url(cfg), azure_deployment=cfg.model, api_version=cfg.azure_api_version, **common
        )
    if cfg.backend == "openai":
        return openai.AsyncOpenAI(base_url=endpoint_url(cfg), **common)
    raise ValueError(f"backend {cfg.backend!r} has no API client")
