"""Where a number came from: the code version that wrote it (the git revision of the checkout), recorded in
every stage marker (tasks/plan.py) and shown per number by the report (tasks/report) beside the stage's config
hash."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


@cache
def code_version() -> str:
    """`<short git rev>[-dirty]` of the checkout cxrflow runs from, or `cxrflow <version>` outside git."""
    from tasks import __version__

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return f"cxrflow {__version__} (not a git checkout)"
    return rev + ("-dirty" if dirty else "")
