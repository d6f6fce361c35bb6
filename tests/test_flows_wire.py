"""flows/ only wire (issue 24): no file writes, and loops only over the stage table, variants, listeners or
futures; the work (reconciliation, summaries, rendering, result files) is in tasks/ (tasks/stage_reports.py)."""

from __future__ import annotations

import ast
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[1] / "flows"
WRITERS = {"atomic_write_json", "atomic_write_bytes", "atomic_write_parquet", "write_text", "write_bytes", "open",
           "mkdir", "write_parquet", "to_parquet", "symlink_to", "rename", "replace", "unlink"}
# (module, loop target): what a flow may loop over
LOOPS = {("pipeline.py", "(stage, key)"), ("ablate.py", "variant"), ("progress.py", "listener")}


def _name(func: ast.expr) -> str | None:
    return getattr(func, "id", None) or getattr(func, "attr", None)


def test_no_file_writes_in_flows():
    writes = [f"{p.name}:{n.lineno} {_name(n.func)}" for p in sorted(FLOWS.glob("*.py"))
              for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Call) and _name(n.func) in WRITERS]
    assert not writes, writes


def test_flow_loops_are_wiring():
    loops = set()
    for p in sorted(FLOWS.glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.For):
                loops.add((p.name, ast.unparse(n.target)))
    assert loops <= LOOPS, loops - LOOPS
