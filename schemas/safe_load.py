"""YAML and JSON read with limits, for configs and records a user hands in.

YAML aliases are refused (a 1 KB "billion laughs" file of nested aliases expands to gigabytes; cxrflow's
configs never need one) and nesting deeper than MAX_DEPTH is refused (deep nesting otherwise ends in a
RecursionError). The errors are the parsers' own error types, so every caller's existing one-line handling
applies.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

MAX_DEPTH = 64  # a cxrflow config nests 4-5 levels, a record 3-4


class _LimitedLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed in cxrflow files", event.start_mark
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_text(text: str) -> Any:
    """yaml.safe_load without aliases and with a depth cap; a yaml.YAMLError otherwise."""
    return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def load_json_text(text: str | bytes) -> Any:
    """json.loads with a depth cap: a json.JSONDecodeError (a ValueError) for nesting deeper than MAX_DEPTH
    or deep enough to exhaust the parser's recursion."""
    doc = text if isinstance(text, str) else text.decode("utf-8")
    try:
        value = json.loads(doc)
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", doc, 0) from None
    if _too_deep(value):
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", doc, 0)
    return value
