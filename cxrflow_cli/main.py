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
from importlib import import_module

import click
import typer

from cxrflow_cli.user_errors import user_error
from tasks import env as _env  # noqa: F401  (first: the environment Prefect reads when it is imported)

EXIT_USER_ERROR = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxrflow")
    except PackageNotFoundError:
        return "unknown"


class CxrflowApp(typer.Typer):
    """typer.Typer whose call turns user errors into one line and exit code 2 (see `run`) and ends the process
    (cxrflow_cli/fast_exit.py)."""

    def __call__(self, *args, **kwargs):  # the console script: exit without the interpreter's teardown
        from cxrflow_cli.fast_exit import exit_now

        exit_now(run(kwargs.get("args")))


app = CxrflowApp(
    name="cxrflow",
    help="Chest X-ray archives to a trained, evaluated report-generation model, as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", help="print the cxrflow version and exit", is_eager=True
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show library logs and warnings (quiet by default)"
    ),
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


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. User errors: one line on stderr, exit 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="cxrflow", standalone_mode=False)
    except (click.exceptions.Abort, typer.Abort):
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted below: user mistakes become one line
        found = user_error(exc)
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
    from cxrflow_cli.fast_exit import exit_now

    exit_now(run())


if __name__ == "__main__":
    main()
