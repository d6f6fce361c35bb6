"""Where the UI shows what a command ran: PREFECT_UI_URL when a server is configured, else the address
`prefect server start` serves this PREFECT_HOME's database at (a temporary server's runs stay in it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCAL_UI = "http://127.0.0.1:4200"


def server_command() -> str:
    """The command that serves this PREFECT_HOME's runs in the UI, without telemetry."""
    home = os.environ.get("PREFECT_HOME", "~/.prefect")
    prefect = Path(sys.executable).parent / "prefect"
    try:
        shown = prefect.relative_to(Path.cwd())
    except ValueError:
        shown = prefect
    return f"PREFECT_HOME={home} PREFECT_SERVER_ANALYTICS_ENABLED=false {shown} server start"


def ui_link(path: str) -> str:
    """The UI URL of `path` (e.g. /runs/flow-run/<id>), plus the command to run first when no server serves it."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    url = f"{(base or LOCAL_UI).rstrip('/')}{path}"
    return url if base else f"{url} (after `{server_command()}`)"
