"""`make test` runs pytest with pytest-xdist options (Makefile PYTEST_XDIST) and tests/conftest.py orders the
modules it hands out: the options must exist in every pytest-xdist the project's test extra allows, and the
ordering must keep each module's tests together and in their own order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist options and the release that added them (its changelog)
OPTION_SINCE = {"--no-loadscope-reorder": (3, 8), "--loadscope-reorder": (3, 8), "--maxprocesses": (1, 0),
                "--dist": (1, 0), "-n": (1, 0)}


def test_the_make_test_xdist_options_exist_in_the_oldest_pytest_xdist_allowed():
    options = re.search(r"^PYTEST_XDIST \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    floor = next(re.match(r"pytest-xdist>=([\d.]+)", r).group(1) for r in extra if r.startswith("pytest-xdist"))
    allowed = tuple(int(p) for p in floor.split("."))
    for option in (o for o in options if o.startswith("-")):
        assert option in OPTION_SINCE, f"{option}: add the pytest-xdist release that added it"
        assert allowed >= OPTION_SINCE[option], f"{option} needs pytest-xdist>={OPTION_SINCE[option]}, not {floor}"


def test_slow_modules_go_first_each_module_whole_and_in_its_order():
    from conftest import pytest_collection_modifyitems

    def item(module: str, name: str, slow: bool = False):
        return SimpleNamespace(module=SimpleNamespace(__name__=module), name=name,
                               get_closest_marker=lambda mark, slow=slow: object() if slow and mark == "slow" else None)

    items = [item("a", "a1"), item("b", "b1"), item("b", "b2", slow=True), item("b", "b3"), item("c", "c1"),
             item("d", "d1", slow=True), item("d", "d2")]
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["b1", "b2", "b3", "d1", "d2", "a1", "c1"]
