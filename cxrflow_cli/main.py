"""Entry point of the `cxrflow` console script.

Every module in this package that defines `register(app: typer.Typer)` adds its commands, so stages can
add commands without editing a shared list. Command modules import heavy libraries inside the command
functions so `cxrflow --help` stays fast.
"""

from __future__ import annotations

import os
import pkgutil
from importlib import import_module

import typer

# No telemetry without network (docs/pitfalls.md); set before Prefect is imported anywhere.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local server migrates a fresh database before answering: 20 s is too short on 2 busy cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

app = typer.Typer(
    name="cxrflow",
    help="Chest X-ray archives to a trained, evaluated report-generation model, as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register_commands() -> None:
    import cxrflow_cli

    for info in sorted(pkgutil.iter_modules(cxrflow_cli.__path__), key=lambda m: m.name):
        if info.name in {"main"} or info.name.startswith("_"):
            continue
        module = import_module(f"cxrflow_cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()

if __name__ == "__main__":
    app()
