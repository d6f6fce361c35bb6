"""Data-use guard: credentialed data (PhysioNet and similar) must not reach third-party services.

A source whose adapter says `may_leave_premises = False` may only be sent to loopback or private
addresses, or to hosts named in `LLMConfig.allow_endpoints` (the lab's Azure deployment, a vLLM host).
The public OpenAI API is never acceptable for such data, allow-listed or not, sync or batch (PhysioNet's
licence forbids it and the Batch API stores files server-side). The check runs before any client exists.

The guard governs the transport, not a string: a proxy from the environment (HTTP(S)_PROXY/ALL_PROXY minus
NO_PROXY) is judged too, since the report body and the key go to it (a proxy forwards anywhere, so a
credentialed source may use one only when the proxy's host is in allow_endpoints); the HTTP client built
from the guard's view (`guarded_http_client`) uses exactly that proxy, follows no redirects and refuses any
request whose origin is not the configured endpoint's.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

from schemas.llm import LLMConfig
from tasks.secrets import redact_url

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
# Multi-tenant public LLM services no allow-list can bless for credentialed data: every host under these
# domains (api., eu.api., us.api., chatgpt., ...) and these exact hosts (shared public inference endpoints).
# A lab's own Azure OpenAI resource (`<resource>.openai.azure.com`) is not on it: an agreement can cover that
# one deployment, so it is allow-listed by its exact host (docs/recipe.md, "Data-use constraint").
PUBLIC_LLM_DOMAINS = ("openai.com", "chatgpt.com", "oaiusercontent.com")
PUBLIC_LLM_HOSTS = frozenset({"models.inference.ai.azure.com", "models.github.ai"})
# "Private" is this explicit table, not ipaddress.is_private (which also counts globally routable IPv6 ranges
# such as 2001:3::/32, 2001:20::/28 and Teredo 2001::/32, and documentation/benchmark blocks).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "::1/128",  # loopback
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
        "fc00::/7",  # unique local addresses
        "169.254.0.0/16", "fe80::/10",  # link-local
    )
)

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


def binding_source(sources: Iterable[str]) -> str:
    """The source whose data-use terms bind an LLM judge of data mixed from `sources`: the first one that may
    not leave the premises, else the first."""
    names = list(sources)
    return next((s for s in names if not source_policy(s)[0]), names[0])


def endpoint_url(cfg: LLMConfig) -> str:
    if cfg.backend == "azure":
        url = cfg.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not url:
            raise ValueError("azure backend needs azure_endpoint (or AZURE_OPENAI_ENDPOINT)")
        return _checked_env_url(url)
    return _checked_env_url(cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL)


def _checked_env_url(url: str) -> str:
    """Config fields are validated on construction; the environment variables are checked here."""
    from schemas.llm import no_credentials_in_url

    try:
        return no_credentials_in_url(url) or url
    except ValueError as e:
        raise DataUseError(str(e)) from None


def _host(parts) -> str:  # noqa: ANN001 - a urlsplit result
    """The host as a client connects to it: lower-case, IDNA-mapped ("api.openai。com" and fullwidth letters
    are api.openai.com to httpx), no trailing dot ("api.openai.com." is the same host)."""
    host = (parts.hostname or "").lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:  # not a valid name: no client connects to it, and no list names it
            pass
    return host.rstrip(".")


def _host_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = _host(parts)
    return host, f"{host}:{parts.port}" if parts.port else host


def canonical_endpoint(url: str) -> str:
    """scheme://host:port/path, lower-case host, default port filled in, no trailing slash: one server, one
    spelling (the answer cache keys on it)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host, port = _host_and_port(url if "://" in url else f"https://{url}")
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def is_public_llm_host(host: str) -> bool:
    host = _host(urlsplit(f"//{host}"))
    return host in PUBLIC_LLM_HOSTS or any(host == d or host.endswith("." + d) for d in PUBLIC_LLM_DOMAINS)


def _host_and_port(url: str) -> tuple[str, int | None]:
    """(host, port) with the scheme's default port filled in; None when neither is given."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return _host(parts), parts.port or default


def proxy_for(url: str) -> str | None:
    """The proxy the environment routes `url` through (None: direct), resolved the way urllib does."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url if "://" in url else f"//{url}")
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme or "https") or proxies.get("all")


def _origin(url: str) -> tuple[str, str, int | None]:
    return (urlsplit(url).scheme, *_host_and_port(url))


def guarded_http_client(cfg: LLMConfig):
    """The httpx client every LLM request goes through: no redirects, the guard's proxy (not the client's
    own environment lookup), and a hook re-checking each request's origin against the endpoint."""
    import openai

    want = _origin(endpoint_url(cfg))

    async def same_origin(request) -> None:
        got = _origin(str(request.url))
        if got != want:
            raise DataUseError(f"refusing a request to {got[0]}://{got[1]}:{got[2]}: LLM calls go only to the "
                               "configured endpoint (redirects are not followed)")

    # trust_env=False: the proxy is the one check_data_use judged, passed explicitly.
    return openai.DefaultAsyncHttpxClient(
        follow_redirects=False, trust_env=False, proxy=proxy_for(endpoint_url(cfg)),
        verify=os.environ.get("SSL_CERT_FILE") or True, event_hooks={"request": [same_origin]},
    )


def is_local_endpoint(url: str) -> bool:
    """Loopback, RFC 1918, ULA or link-local IP literal (PRIVATE_NETWORKS), or 'localhost'. Names are not
    resolved (DNS can lie); allow-list them."""
    host, _ = _host_port(url)
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: the zone does not change the address
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        ip = ip.ipv4_mapped
    return any(ip in net for net in PRIVATE_NETWORKS)


def _proxy_allowed(proxy: str, allowed: set[str]) -> bool:
    """A proxy is blessed only by an entry naming its host and its port (explicitly or through the entry's
    scheme): an allow-listed endpoint host does not bless a proxy listening on another port of it."""
    want = _host_and_port(proxy)
    return any(_host_and_port(a) == want for a in allowed)


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
        if is_public_llm_host(host):
            raise DataUseError(
                f"refusing to send {source} data ({licence}) to {shown} ({mode} mode): a public LLM service is a "
                "third-party service this licence forbids, allow-listed or not; use a local model or an "
                "approved deployment listed in allow_endpoints"
            )
        proxy = proxy_for(url)
        if proxy is not None:
            if is_public_llm_host(_host_port(proxy)[0]) or not _proxy_allowed(proxy, allowed):
                raise DataUseError(
                    f"refusing to send {source} data ({licence}) to {shown} through the proxy {redact_url(proxy)} "
                    "(HTTP_PROXY/HTTPS_PROXY/ALL_PROXY): a proxy forwards data anywhere; set NO_PROXY for the "
                    "endpoint, or list the proxy as host:port in allow_endpoints if your data-use agreement covers it"
                )
        if is_local_endpoint(url) or host_port in allowed_hosts or host in allowed_hosts:
            continue
        raise DataUseError(
            f"refusing to send {source} data ({licence}) to {shown}: not a loopback/private address and not in "
            "allow_endpoints; add the host to allow_endpoints only if your data-use agreement covers it"
        )
