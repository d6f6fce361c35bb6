"""The process environment every cxrflow entry point needs, set once before Prefect or Great Expectations is
imported: flows/__init__.py, cxrflow_cli/main.py and tasks/__init__.py import this module first. setdefault
throughout, so a value the user exported wins."""

from __future__ import annotations

import os

DEFAULTS = {
    # No telemetry without network (docs/pitfalls.md): read when prefect / great_expectations are imported.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # Prefect client's own telemetry, and its three-line notice on a terminal
    # The temporary local server migrates a fresh database before answering: 20 s is too short on 2 busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
