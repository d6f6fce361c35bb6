"""Keeping secrets out of everything cxrflow echoes: errors, logs, Prefect state messages and parameters.

A key or password may arrive inside a URL (user:password@) or inside a server's error body (an HTTP 401 that
quotes the key back); both are redacted here before the text is raised, logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# Bearer/Basic credentials and the shapes of common API keys (OpenAI sk-/sk-proj-, Azure 32-hex keys, JWT-like
# blobs), and any value labelled as a key, token or password (Azure's 84-character keys have no fixed shape).
_KEY_SHAPES = re.compile(
    r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_*-]{6,}"
    r"|\b[0-9a-f]{32}\b"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+"
)
_LABELLED = re.compile(r"(?i)\b((?:api[-_ ]?key|access[-_ ]?token|token|password|passwd|secret)[\"']?\s*[:=]\s*[\"']?)"
                       r"[^\s\"',;&]{6,}")
# Up to the last @ before the path: a password holding an unescaped "@" is redacted whole.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]+@")
REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL without user:password@ (a key put there must not reach an error message or a log)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=REDACTED + "@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def has_userinfo(url: str) -> bool:
    return "@" in urlsplit(url if "://" in url else f"//{url}").netloc


def redact_text(text: str, known: Iterable[str | None] = ()) -> str:
    """`text` with the `known` secrets, key-shaped tokens and URL userinfo replaced by ***."""
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _LABELLED.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY_SHAPES.sub(REDACTED, text)
