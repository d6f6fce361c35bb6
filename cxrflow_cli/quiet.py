"""Quiet by default: third-party chatter that tells a user nothing is filtered; `cxrflow --verbose` keeps it.

Filtered: transformers' FutureWarnings/deprecations and info logs, tqdm bars (transformers, datasets,
huggingface_hub), wids' per-dataset stderr line (cxrio.quiet_wids), Prefect's console logs below WARNING,
and library loggers below WARNING; Prefect's records of a run that failed on a user error (the CLI prints that
one line; the records still reach the flow run's logs on the server). cxrflow's own loggers (`cxrflow.*`) stay at INFO.
"""

from __future__ import annotations

import logging
import os
import warnings

# Environment variables quiet mode sets (tests undo them).
ENV_VARS = (
    "TRANSFORMERS_VERBOSITY",
    "DATASETS_VERBOSITY",
    "TQDM_DISABLE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "GX_ANALYTICS_ENABLED",
    "PREFECT_LOGGING_LEVEL",
    "CXRFLOW_VERBOSE",
)
NOISY_LOGGERS = (
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "huggingface_hub",
    "urllib3",
    "httpx",
    "great_expectations",
    "PIL",
    "matplotlib",
    "wids",
    "webdataset",
)


class UserErrorsOffTheConsole(logging.Filter):
    """Prefect logs a failed task or flow run as ERROR records with tracebacks (the task's failure, its final
    state, the flow's failure, each parent flow's). For a user error (a mistake in what was asked for, which the
    CLI reports in one line) those records reach the run logger's own handlers (Prefect's API handler: the flow
    run's logs on the server), without the traceback, and not the console. Any other exception keeps both.
    Installed on the run loggers, whose records reach the console only by propagating to the root logger."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        # "Type: message" of each user error already logged with its exception (Prefect's form, states.py
        # format_exception); the whole text, not the type name, so a later, unrelated failure of a same-named
        # type in a long-lived process (a worker, a served flow) still reaches the console.
        self.seen: set[str] = set()

    def _is_user_error(self, record: logging.LogRecord) -> bool:
        from cxrflow_cli.user_errors import is_user_error

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_user_error(exc):
            self.seen.add(f"{type(exc).__name__}: {exc}")
            record.exc_info, record.exc_text = None, None
            return True
        if exc is not None:  # any other exception is shown with its traceback
            return False
        # the final-state record carries the exception as text only, inside the state's repr:
        # "Finished in state Failed('Task run encountered an exception ValidationFailed: ...')"
        message = record.getMessage() if record.levelno >= logging.ERROR else ""
        return any(
            f"exception {text}" in message or f"exception {repr(text)[1:-1]}" in message for text in self.seen
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._is_user_error(record):
            return True
        for handler in self.logger.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        return False


# The loggers Prefect reports failed runs on (its run loggers are adapters over these).
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def configure(verbose: bool) -> None:
    logging.getLogger("cxrflow").setLevel(logging.INFO)
    # per-step training lines reach the flow run's logs and the progress bar, not the console (verbose: both)
    logging.getLogger("cxrflow.training.steps").propagate = verbose
    if verbose:
        os.environ["CXRFLOW_VERBOSE"] = "1"
        return
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorsOffTheConsole) for f in logger.filters):
            logger.addFilter(UserErrorsOffTheConsole(logger))
    os.environ.pop("CXRFLOW_VERBOSE", None)
    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        os.environ.setdefault(var, "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm >= 4.66 reads it: no library progress bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Prefect's per-task chatter ("Created task run", "Finished in state Completed()") and the flows' printed
    # summaries stay in the runs' logs (the UI); the console gets warnings and errors. The commands print
    # their own summary once. Read when prefect is first imported, which commands do lazily, after this.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*shardshuffle.*")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def verbose() -> bool:
    return os.environ.get("CXRFLOW_VERBOSE") == "1"
