"""Data-use guard: credentialed data (PhysioNet and similar) must not reach third-party services.

A source whose adapter says `may_leave_premises = False` may only be sent to loopback or private
addresses, or to hosts named in `LLMConfig.allow_endpoints` (the lab's Azure deployment, a vLLM host).
The public OpenAI API is never acceptable for such data, allow-listed or not, sync or batch (PhysioNet's
licence forbids it and the Batch API stores files server-side). The check runs before any client exists.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from schemas.llm import LLMConfig

PUBLIC_OPENAI_HOSTS = frozenset({"api.openai.com"})
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"

_PHYSIONET = "PhysioNet Credentialed Health Data License 1.5.0"
# Used for sources with no adapter registered (yet). Unknown sources are treated as credentialed.
FALLBACK_POLICY: dict[str, tuple[bool, str]] = {
    "mimic-cxr": (False, _PHYSIONET),
    "brax": (False, _PHYSIONET),
    "vindr-cxr": (False, _PHYSIONET),
    "chexpert": (False, "Stanford CheXpert Dataset Research Use Agreement"),
    "padchest": (False, "PadChest Dataset Research Use Agreement (BIMCV)"),
    "chestxray14": (True, "NIH Clinical Center, CC0 1.0"),
    "openi": (True, "NLM Open-i, public research use"),
}


class DataUseError(PermissionError):
    """Sending this data to this endpoint would break the data's licence."""


def source_policy(source: str) -> tuple[bool, str]:
    """(may_leave_premises, licence) from the source's adapter, else the fallback table, else refuse."""
    try:
        from tasks.sources import adapters

        adapter = adapters().get(source)
    except Exception:  # an adapter module that fails to import must not open the gate
        adapter = None
    if adapter is not None:
        return bool(adapter.may_leave_premises), str(adapter.licence)
    return FALLBACK_POLICY.get(source, (False, "unknown licence (no adapter registered; treated as credentialed)"))


def endpoint_url(cfg: LLMConfig) -> str:
    if cfg.backend == "azure":
        url = cfg.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not url:
            raise ValueError("azure backend needs azure_endpoint (or AZURE_OPENAI_ENDPOINT)")
        return url
    return cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL


def _host_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = (parts.hostname or "").lower().rstrip(".")  # "api.openai.com." is the same host
    return host, f"{host}:{parts.port}" if parts.port else host


def redact_url(url: str) -> str:
    """The URL without user:password@ (a key put there must not reach an error message or a log)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def is_local_endpoint(url: str) -> bool:
    """Loopback or private IP literal, or 'localhost'. Names are not resolved (DNS can lie); allow-list them."""
    host, _ = _host_port(url)
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def check_data_use(sources: Iterable[str], cfg: LLMConfig) -> None:
    """Raise DataUseError for the first source whose licence forbids the configured endpoint."""
    if cfg.backend == "rules":
        return
    url = endpoint_url(cfg)
    host, host_port = _host_port(url)
    shown = redact_url(url)
    allowed = {a.lower().rstrip("/") for a in cfg.allow_endpoints}
    allowed_hosts = {_host_port(a)[1] for a in allowed} | {_host_port(a)[0] for a in allowed if "://" in a}
    mode = "batch" if cfg.batch else "request"
    for source in sorted(set(sources)):
        may_leave, licence = source_policy(source)
        if may_leave:
            continue
        if host in PUBLIC_OPENAI_HOSTS:
            raise DataUseError(
                f"refusing to send {source} data ({licence}) to {shown} ({mode} mode): the public OpenAI API is a "
                "third-party service this licence forbids; use a local model or an approved deployment "
                "listed in allow_endpoints"
            )
        if is_local_endpoint(url) or host_port in allowed_hosts or host in allowed_hosts:
            continue
        raise DataUseError(
            f"refusing to send {source} data ({licence}) to {shown}: not a loopback/private address and not in "
            "allow_endpoints; add the host to allow_endpoints only if your data-use agreement covers it"
        )
