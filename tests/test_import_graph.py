"""The layering of the code base, read from the source with ast (nothing is imported): no import cycles among
project modules, and no upward imports. schemas/ (the contracts) imports nothing of tasks/, flows/, training/ or
the CLI; tasks/ (the work) imports nothing of flows/ or the CLI; training/ nothing of flows/ or the CLI.
Imports inside functions count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "tasks", "flows", "training", "cxrflow_cli")
FORBIDDEN = {
    "schemas": {"tasks", "flows", "training", "cxrflow_cli"},
    "tasks": {"flows", "cxrflow_cli"},
    "training": {"flows", "cxrflow_cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (`from pkg import sub` names the submodule)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` where c is a name: the deepest module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = project_modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return exc.args[1]
    return None


def test_the_graph_sees_the_project(graph):
    """Guards the checks below against passing on an empty or unresolved graph, and the cycle finder."""
    assert len(graph) > 100
    assert "tasks.plan" in graph["flows.pipeline"] and "schemas.pipeline" in graph["tasks.plan"]
    assert "tasks.sources.base" in graph["tasks.sources"]  # `from pkg.mod import x` resolves to the module
    assert "tasks.env" in graph["flows"]  # `from pkg import submodule` names the submodule
    assert find_cycle({**graph, "schemas.errors": graph["schemas.errors"] | {"flows.pipeline"}})


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(graph, layer):
    bad = sorted(
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if a.split(".")[0] == layer and b.split(".")[0] in FORBIDDEN[layer]
    )
    assert not bad, "\n".join(bad)
