"""The layering of the code base, read from the source with ast (nothing is imported): no import cycles among
project modules nor among packages, and no upward imports. cxrio (files) imports nothing of the project;
schemas/ (the contracts) nothing but cxrio; training/ (plain PyTorch) nothing of tasks/; tasks/ (the work)
nothing of flows/ or the CLI; flows/ (wiring) nothing of the CLI; nothing imports bench/. Imports inside
functions count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cxrio", "schemas", "training", "tasks", "fixtures", "flows", "cxrflow_cli", "bench")
FORBIDDEN = {
    "cxrio": set(PACKAGES) - {"cxrio"},
    "schemas": {"training", "tasks", "fixtures", "flows", "cxrflow_cli", "bench"},
    "training": {"tasks", "fixtures", "flows", "cxrflow_cli", "bench"},
    "tasks": {"fixtures", "flows", "cxrflow_cli", "bench"},
    "fixtures": {"flows", "cxrflow_cli", "bench"},
    "flows": {"cxrflow_cli", "bench"},
    "cxrflow_cli": {"bench"},
}
# Modules that are run, never imported (`import training` does not load training.__main__): they sit above
# their package like the CLI, so their imports are outside the layering and the package graph.
ENTRY_POINTS = {
    "training.__main__": "`python -m training` checks its config with tasks.preflight, as `cxrflow train` does",
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


def package_graph(graph: dict[str, set[str]], parent: str) -> dict[str, set[str]]:
    """The children of package `parent` ("" for the top level) as nodes, each standing for itself and every
    module under it; an edge where a module under one imports a module under another. Entry points left out."""
    depth = parent.count(".") + 1 if parent else 0

    def child(module: str) -> str | None:
        if parent and not module.startswith(parent + "."):
            return None
        return ".".join(module.split(".")[: depth + 1])

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        ca = child(a)
        if ca is None or a in ENTRY_POINTS:
            continue
        out.setdefault(ca, set()).update(cb for b in targets if (cb := child(b)) is not None and cb != ca)
    return out


def package_cycles(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """{package: a cycle among its children} for every package of the graph and the top level ("")."""
    parents = {""} | {m.rpartition(".")[0] for m in graph if "." in m}
    found = {p: find_cycle(package_graph(graph, p)) for p in sorted(parents)}
    return {p: c for p, c in found.items() if c}


def test_the_graph_sees_the_project(graph):
    """Guards the checks below against passing on an empty or unresolved graph, and the cycle finder."""
    assert len(graph) > 100
    assert {p for m in graph for p in PACKAGES if m.split(".")[0] == p} == set(PACKAGES)
    assert "tasks.plan" in graph["flows.pipeline"] and "schemas.pipeline" in graph["tasks.plan"]
    assert "tasks.sources.base" in graph["tasks.sources"]  # `from pkg.mod import x` resolves to the module
    assert "tasks.env" in graph["flows"]  # `from pkg import submodule` names the submodule
    assert find_cycle({**graph, "schemas.errors": graph["schemas.errors"] | {"flows.pipeline"}})
    assert set(ENTRY_POINTS) <= set(graph)


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_cycles(graph):
    """Packages form a DAG at every level: the top-level packages, and the sub-packages and modules inside
    each package (tasks.encoder, tasks.evaluate, tasks.llm, ...), each standing for everything under it."""
    found = package_cycles(graph)
    assert not found, "\n".join(f"package cycle in {p or 'the top level'}: " + " -> ".join(c)
                                 for p, c in found.items())


@pytest.mark.parametrize(
    ("planted", "where"),
    [
        # what tasks.evaluate.retrieval did: no module cycle, but tasks.encoder.report imports it back
        (("tasks.evaluate.retrieval", "tasks.encoder.prepare"), "tasks"),
        # what training.data did through tasks/io.py, while tasks.encoder imports training.data
        (("training.data", "tasks.shard_index"), ""),
        # a wiring module reaching into the CLI that imports it
        (("flows.pipeline", "cxrflow_cli.progress"), ""),
    ],
)
def test_a_planted_package_cycle_is_found(graph, planted, where):
    """The checks above on the project's graph plus one planted import: the module graph stays acyclic, the
    package check fails, at the level where the cycle is."""
    a, b = planted
    assert b not in graph[a] and a in graph and b in graph
    planted_graph = {**graph, a: graph[a] | {b}}
    assert find_cycle(planted_graph) is None  # invisible to the module check
    assert where in package_cycles(planted_graph)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(graph, layer):
    bad = sorted(
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if a.split(".")[0] == layer and b.split(".")[0] in FORBIDDEN[layer] and a not in ENTRY_POINTS
    )
    assert not bad, "\n".join(bad)
