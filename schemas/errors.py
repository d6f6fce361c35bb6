"""Typed user errors: a mistake in what was asked for, as opposed to a bug.

The CLI prints a UserError as one line (plus its hint) and exits 2; anything else keeps its traceback. The
same checks run at the top of each flow, so a deployment run fails with the same one-line message in its state.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input: `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """'did you mean X?' for the closest choice, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def validation_message(exc, model=None, prefix: str = "") -> UserError:
    """A pydantic ValidationError as one UserError: the first problem with its dotted location, and for an
    unknown key the closest known key of the same section (`model` is the top-level class, to find them;
    `prefix` is where that model sits in a bigger config, e.g. "train.")."""
    errors = exc.errors()
    first = errors[0]
    loc = prefix + ".".join(str(p) for p in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(first["loc"][-1]), _keys_at(model, first["loc"][:-1])) if model else None
        return UserError(f"unknown config key {loc!r}{more}", hint)
    value = first.get("input")
    secret = any(w in loc.lower() for w in ("url", "key", "secret", "token", "endpoint", "password"))
    # a refused endpoint may hold a key: never echo the value of such a field
    shown = "" if secret or isinstance(value, dict | list) or value is None else f" (got {value!r})"
    # a model-level check (schemas/finite.py) names its own field, relative to the model: "train: stage1.lr ..."
    where = f"{loc}: " if first["loc"] else f"{prefix.rstrip('.')}: " if prefix else ""
    return UserError(f"{where}{first['msg']}{shown}{more}".replace("Value error, ", ""))


def _keys_at(model, path: tuple) -> list[str]:
    """Field names (and aliases) of the sub-model reached by `path` from `model`, if it is one."""
    from pydantic import BaseModel

    for part in path:
        field = getattr(model, "model_fields", {}).get(part) or next(
            (f for f in getattr(model, "model_fields", {}).values() if f.alias == part), None
        )
        if field is None:
            return []
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    fields = getattr(model, "model_fields", {})
    return [*fields, *(f.alias for f in fields.values() if f.alias)]
