"""Source adapters, one module per dataset. Each module defines ADAPTER (a SourceAdapter with a `name`), or
ADAPTERS when one release serves several (chexpert: CheXpert and CheXpert-Plus); `get_adapter(name)` finds it,
so adding a source means adding a module, not editing a list here."""

from __future__ import annotations

import pkgutil
from functools import cache
from importlib import import_module

from tasks.sources.base import SourceAdapter, SourceLayoutError


@cache
def adapters() -> dict[str, SourceAdapter]:
    import tasks.sources as pkg

    found: dict[str, SourceAdapter] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = import_module(f"tasks.sources.{info.name}")
        for adapter in getattr(module, "ADAPTERS", None) or filter(None, [getattr(module, "ADAPTER", None)]):
            found[adapter.name] = adapter
    return found


def get_adapter(name: str) -> SourceAdapter:
    known = adapters()
    if name not in known:
        from schemas.errors import did_you_mean

        raise SourceLayoutError(f"unknown source {name!r}; known: {', '.join(sorted(known))}",
                                did_you_mean(name, known))
    return known[name]


__all__ = ["SourceAdapter", "SourceLayoutError", "adapters", "get_adapter"]
