"""Every write-then-rename goes through cxrio (atomic_path / atomic_dir / retire): the source is read with ast
(nothing imported) and a rename call or a temporary file name anywhere else fails, so no writer hand-rolls a
temporary name again (fixed names collided between threads and ranks; some were never cleaned)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "tasks", "flows", "training", "cxrflow_cli", "fixtures", "bench")
IO_MODULE = REPO / "cxrio"
# Calls that move a file into place or make a temporary name beside a target, by their full names (import
# aliases resolved: `import os as o`, `from shutil import move`, `from pathlib import Path`).
RENAMES = {"os.replace", "os.rename", "os.renames", "shutil.move", "tempfile.mkstemp",
           "pathlib.Path.rename", "pathlib.Path.replace"}
BESIDE = {"tempfile.mkdtemp", "tempfile.NamedTemporaryFile"}  # only with dir=: a scratch folder elsewhere is fine
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


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the full name it was imported as."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                        for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return out


def _full_name(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute) and (base := _full_name(node.value, aliases)):
        return f"{base}.{node.attr}"
    return None


def hand_rolled(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, what) of each rename or temporary name in `source`."""
    tree = ast.parse(source, filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f, name = node.func, _full_name(node.func, aliases)
            keywords = {k.arg for k in node.keywords}
            if name in RENAMES or (name in BESIDE and "dir" in keywords):
                found.append((node.lineno, name))
            # p.replace/rename(target): one positional argument or target= (str.replace takes two; a
            # dataframe's rename takes a mapping or columns=)
            elif (isinstance(f, ast.Attribute) and f.attr in ("replace", "rename")
                  and ((len(node.args) == 1 and not keywords) or (not node.args and keywords == {"target"}))
                  and not isinstance(node.args[0] if node.args else None, ast.Dict | ast.DictComp)):
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
    aliased = (  # the same calls under other names
        "import os as o, tempfile\n"
        "from shutil import move as mv\n"
        "from os import rename\n"
        "from pathlib import Path\n"
        "o.replace(a, b)\n"
        "mv(a, b)\n"
        "rename(a, b)\n"
        "Path.rename(a, b)\n"
        "a.replace(target=b)\n"
        "d = tempfile.mkdtemp(dir=out.parent)\n"
        "scratch = tempfile.mkdtemp(prefix='bench-')\n"
        "df = df.rename(columns={'a': 'b'})\n"
        "s = text.replace(old, new)\n"
    )
    assert [line for line, _ in hand_rolled(aliased)] == [5, 6, 7, 8, 9, 10]


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
