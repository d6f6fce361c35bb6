"""Which exceptions are user mistakes (one line plus a hint, exit 2) and their text. Shared by the entry point
(cxrflow_cli/main.py) and the console filter that keeps Prefect's records of them off the console
(cxrflow_cli/quiet.py)."""

from __future__ import annotations

import click

try:  # typer >= 0.2x vendors its own click; usage errors are then its exception classes
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - typer on the public click
    _TyperClickException = click.ClickException
_CLICK_ERRORS = (click.ClickException, _TyperClickException)


def user_error(exc: BaseException) -> tuple[str, str | None] | None:
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
        where = (
            f"cxrflow {ctx.command_path.split(' ', 1)[1]}" if ctx and " " in ctx.command_path else "cxrflow"
        )
        # typer checks values with pydantic, whose messages start "Value error, "
        return exc.format_message().replace("Value error, ", ""), f"see `{where} --help`"
    return None


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is a user mistake the CLI reports in one line (cxrflow_cli/quiet.py keeps Prefect's
    records of it off the console)."""
    return user_error(exc) is not None


def _environment_errors() -> tuple[type[BaseException], ...]:
    """Refusals caused by the user's setup, not by cxrflow: a held output lock, the data-use guard, PHI
    settings, a missing key, an annotations or predictions file that cannot be read, unusable metric weights.
    Imported only once an exception is on its way out (`--help` stays fast)."""
    from tasks.evaluate.inference import PredictionsFileError
    from tasks.evaluate.optional_models import MetricModelError
    from tasks.llm.client import LLMServiceError, MissingKeyError
    from tasks.llm.guard import DataUseError
    from tasks.lock import OutputLocked
    from tasks.phi import PhiConfigError
    from tasks.reports.annotations import AnnotationsError
    from tasks.sources.base import SourceLayoutError

    return (
        OutputLocked,
        SourceLayoutError,
        DataUseError,
        PhiConfigError,
        MissingKeyError,
        LLMServiceError,
        AnnotationsError,
        PredictionsFileError,
        MetricModelError,
    )
