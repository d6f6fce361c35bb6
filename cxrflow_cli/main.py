"""Entry point of the `cxrflow` console script.

Every module in this package that defines `register(app: typer.Typer)` adds its commands, so stages can
add commands without editing a shared list. Command modules import heavy libraries inside the command
functions so `cxrflow --help` stays fast.

Errors: a user mistake (schemas.errors.UserError, a usage error, an invalid config) prints one line plus a
hint and exits 2; anything else is a bug and keeps its traceback. Commands check their inputs before they
start a Prefect server or any work (tasks/preflight.py).
"""

from __future__ import annotations

import pkgutil
import sys
from importlib import import_module

import click
import typer

from tasks import env as _env  # noqa: F401  (first: the environment Prefect reads when it is imported)

try:  # typer >= 0.2x vendors its own click; usage errors are then its exception classes
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - typer on the public click
    _TyperClickException = click.ClickException
_CLICK_ERRORS = (click.ClickException, _TyperClickException)


EXIT_USER_ERROR = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxrflow")
    except PackageNotFoundError:
        return "unknown"


class CxrflowApp(typer.Typer):
    """typer.Typer whose call turns user errors into one line and exit code 2 (see `run`)."""

    def __call__(self, *args, **kwargs):
        return run(kwargs.get("args"))


app = CxrflowApp(
    name="cxrflow",
    help="Chest X-ray archives to a trained, evaluated report-generation model, as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="print the cxrflow version and exit", is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show library logs and warnings (quiet by default)"),
) -> None:
    if version:
        typer.echo(f"cxrflow {_version()}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from cxrflow_cli import quiet

    quiet.configure(verbose)


def one_line(message: str, hint: str | None = None) -> None:
    text = " ".join(str(message).split())  # one line, whatever the message held
    typer.echo(f"error: {text}" + (f" (hint: {' '.join(hint.split())})" if hint else ""), err=True)


def _user_error(exc: BaseException) -> tuple[str, str | None] | None:
    """(message, hint) when `exc` is a user mistake, else None."""
    from pydantic import ValidationError

    from schemas.errors import UserError, validation_message

    if isinstance(exc, UserError):
        return exc.message, exc.hint
    if isinstance(exc, _environment_errors()):
        return str(exc), None
    if isinstance(exc, ValidationError):
        err = validation_message(exc)
        return err.message, err.hint
    if isinstance(exc, _CLICK_ERRORS):
        ctx = getattr(exc, "ctx", None)
        where = f"cxrflow {ctx.command_path.split(' ', 1)[1]}" if ctx and " " in ctx.command_path else "cxrflow"
        return exc.format_message(), f"see `{where} --help`"
    return None


def _environment_errors() -> tuple[type[BaseException], ...]:
    """Refusals caused by the user's setup, not by cxrflow: a held output lock, the data-use guard, PHI
    settings, a missing key. Imported only once an exception is on its way out (`--help` stays fast)."""
    from tasks.llm.client import MissingKeyError
    from tasks.llm.guard import DataUseError
    from tasks.lock import OutputLocked
    from tasks.phi import PhiConfigError
    from tasks.sources.base import SourceLayoutError

    return OutputLocked, SourceLayoutError, DataUseError, PhiConfigError, MissingKeyError


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. User errors: one line on stderr, exit 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="cxrflow", standalone_mode=False)
    except (click.exceptions.Abort, typer.Abort):
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted below: user mistakes become one line
        found = _user_error(exc)
        if found is None:
            raise
        one_line(*found)
        return EXIT_USER_ERROR
    return rv if isinstance(rv, int) else 0


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


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
