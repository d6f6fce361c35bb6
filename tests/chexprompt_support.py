"""Run a microsoft/chexprompt checkout's own code (the stand-in of fixtures/chexprompt_checkout.py, or a real
checkout named by CXRFLOW_CHEXPROMPT_SRC) to get what IT builds and parses: the reference side of the tests.

Its evaluator imports openai 0.28, aiolimiter, aiohttp and tqdm.asyncio; they are stubbed with empty modules for
the duration of the load (only `format_for_evaluation`, `format_full_prompt` and the parser run)."""

from __future__ import annotations

import importlib
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path

_STUBS = ("openai", "openai.error", "aiolimiter", "aiohttp", "tqdm.asyncio")


class _Stub(types.ModuleType):
    """Any attribute is a placeholder class (the evaluator's annotations name `aiolimiter.AsyncLimiter`...)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def real_checkout() -> Path | None:
    src = os.environ.get("CXRFLOW_CHEXPROMPT_SRC")
    return Path(src) if src and (Path(src) / "src" / "chexprompt" / "evaluator.py").is_file() else None


@contextmanager
def checkout_modules(root: Path):
    """(evaluator, eval_utils) modules of the checkout, imported in isolation and removed afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k == "chexprompt" or k.startswith("chexprompt.")}
    stubbed = []
    for name in _STUBS:
        stubbed.append((name, sys.modules.get(name)))
        sys.modules[name] = _Stub(name)
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(Path(root) / "src"))
    try:
        evaluator = importlib.import_module("chexprompt.evaluator")
        eval_utils = importlib.import_module("chexprompt.eval_utils")
        yield evaluator, eval_utils
    finally:
        sys.path.remove(str(Path(root) / "src"))
        for k in [k for k in sys.modules if k == "chexprompt" or k.startswith("chexprompt.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        for name, old in stubbed:
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def reference_messages(root: Path, reference: str, candidate: str) -> list[dict[str, str]]:
    """What the checkout sends for one pair: format_full_prompt(*ReportEvaluator().format_for_evaluation())."""
    with checkout_modules(root) as (evaluator, eval_utils):
        system, user = evaluator.ReportEvaluator().format_for_evaluation(reference, candidate)
        return eval_utils.format_full_prompt(system, user)
