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

# No telemetry without network (pitfalls.md); set before Prefect is imported anywhere.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local server migrates a fresh database before answering: 20 s is too short on 2 busy cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

def _user_errors() -> tuple[type[BaseException], ...]:
    """Mistakes of the user or the environment, not of cxrflow: reported in one line (imported lazily, only
    once an exception is on its way out, so `cxrflow --help` stays fast)."""
    from pydantic import ValidationError

    from tasks.llm.client import MissingKeyError
    from tasks.llm.guard import DataUseError
    from tasks.lock import OutputLocked
    from tasks.phi import PhiConfigError
    from tasks.sources.base import SourceLayoutError

    return OutputLocked, SourceLayoutError, DataUseError, PhiConfigError, MissingKeyError, ValidationError


def one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # the first problem, without the input (it may hold a key)
        errors = exc.errors(include_input=False)
        first = errors[0]
        where = ".".join(str(x) for x in first["loc"]) or exc.title
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{exc.title}: {where}: {first['msg']}{more}"
    return " ".join(str(exc).split())


class _App(typer.Typer):
    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, _user_errors()):
                raise
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise SystemExit(2) from None


app = _App(
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
