"""Every write-then-rename goes through cxrio (atomic_path / atomic_dir / retire): the source is read with ast
(nothing imported) and a rename call or a temporary file name anywhere else fails, so no writer hand-rolls a
temporary name again (fixed names collided between threads and ranks; some were never cleaned)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "tasks", "flows", "training", "cxrflow_cli", "fixtures", "bench")
IO_MODULE = REPO / "cxrio"
RENAMES = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move"), ("tempfile", "mkstemp")}
TEMP_NAMES = (".tmp", ".partial", "tmp-", ".importing", ".retired")
# (file, line text) -> why it may rename on its own.
_KEEP = "bench --keep moves a finished scratch input out of its temporary folder for a later --reuse, no write"
ALLOWED: dict[tuple[str, str], str] = {
    ("bench/bench_scale.py", 'shutil.move(root, args.keep / f"src-{n}")'): _KEEP,
    ("bench/bench_scale.py", 'shutil.move(out / "data", args.keep / f"data-{n}")'): _KEEP,
}


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return isinstance(parent, ast.Expr)


def hand_rolled(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, what) of each rename or temporary name in `source`."""
    tree = ast.parse(source, filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if isinstance(f.value, ast.Name) and (f.value.id, f.attr) in RENAMES:
                found.append((node.lineno, f"{f.value.id}.{f.attr}"))
            # Path.replace/rename(target): one positional argument (str.replace takes two; a dataframe's
            # rename takes a mapping)
            elif (f.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords
                  and not isinstance(node.args[0], ast.Dict | ast.DictComp)):
                found.append((node.lineno, f".{f.attr}(...)"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and not _is_docstring(node, parents):
            if any(t in node.value for t in TEMP_NAMES):
                found.append((node.lineno, f"temporary name {node.value!r}"))
    return sorted(found)


def test_the_scan_sees_hand_rolled_writes():
    """The scanner on the shapes this project used to write: each is caught, and str.replace is not."""
    planted = (
        "import os, shutil\n"
        "tmp = path.with_name(f'.{path.name}.tmp')\n"
        "tmp.replace(path)\n"
        "os.replace(tmp, final)\n"
        "tmp.rename(out)\n"
        "shutil.move(a, b)\n"
        "x = 'a-b'.replace('-', '_')\n"
        "df = df.rename({'a': 'b'})\n"
    )
    assert [line for line, _ in hand_rolled(planted)] == [2, 3, 4, 5, 6]


def test_no_rename_or_temporary_name_outside_the_io_module():
    bad = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            lines = path.read_text().splitlines()
            for line, what in hand_rolled(path.read_text(), rel):
                if (rel, lines[line - 1].strip()) not in ALLOWED:
                    bad.append(f"{rel}:{line}: {what} (write through cxrio.atomic_path/atomic_dir)")
    assert not bad, "\n".join(bad)


def test_the_io_module_is_where_renames_live():
    """Guards the test above against scanning nothing: the io module itself renames."""
    assert hand_rolled((IO_MODULE / "__init__.py").read_text())
