"""The console script leaves without the interpreter's teardown (cxrflow_cli/fast_exit.py), after everything a
normal exit runs: threads joined, threading's and atexit's hooks, buffered output flushed, the same exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, sys, threading, time
from cxrflow_cli.fast_exit import exit_now

class Alive:
    def __del__(self):
        print("teardown ran", flush=True)

keep = Alive()
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
sys.stdout.write("buffered ")
exit_now(3)
"""


def test_exit_now_runs_the_exit_hooks_and_skips_the_teardown():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert res.stdout.split() == ["buffered", "thread", "done", "atexit", "ran"]  # no "teardown ran"


def test_the_console_script_keeps_its_exit_codes(tmp_path):
    cxrflow = Path(sys.executable).parent / "cxrflow"
    ok = subprocess.run([str(cxrflow), "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("cxrflow ")
    bad = subprocess.run([str(cxrflow), "ingest", "--source", "no-such-source", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: "), bad.stderr
