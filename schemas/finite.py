"""One shared check that a config holds no inf/nan: `train.stage1.lr=.inf` must be refused, not trained to a NaN
loss. Attached to every top-level config model as `_finite = finite_check` (runs after validation, so "inf"
strings that pydantic coerced into float fields are caught too; str fields keep their text)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, model_validator


def _first_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, BaseModel):
        items = ((k, getattr(value, k)) for k in type(value).model_fields)
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _first_non_finite(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def no_non_finite(model: BaseModel) -> BaseModel:
    found = _first_non_finite(model, "")
    if found:
        raise ValueError(f"{found[0]} must be a finite number (got {found[1]})")
    return model


finite_check = model_validator(mode="after")(no_non_finite)
