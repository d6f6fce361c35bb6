"""Quiet by default: third-party chatter that tells a user nothing is filtered; `cxrflow --verbose` keeps it.

Filtered: transformers' FutureWarnings/deprecations and info logs, tqdm bars (transformers, datasets,
huggingface_hub), wids' per-dataset stderr line (cxrio.quiet_wids), Prefect's console handler below WARNING
(its level, not the loggers': every run record still reaches Prefect's API handler, so the UI shows the runs'
logs), and library loggers below WARNING; Prefect's records of a run that failed on a user error (the CLI prints
that one line; the records still reach the flow run's logs on the server). cxrflow's own loggers (`cxrflow.*`)
stay at INFO on the console. Prefect's "View at <UI>/runs/flow-run/<id>" line of the top-level run is printed
as `run: <link>` (RunLink).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Environment variables quiet mode sets (tests undo them).
ENV_VARS = (
    "TRANSFORMERS_VERBOSITY",
    "DATASETS_VERBOSITY",
    "TQDM_DISABLE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "GX_ANALYTICS_ENABLED",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL",
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


def _to_console(line: str) -> None:
    """stderr, not print(): inside a flow with log_prints, print() becomes a run log record (off the console)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class RunLink(logging.Filter):
    """Prints the UI link of each top-level flow run this process starts (Prefect's "View at" line is INFO, so
    the quiet console drops it, and a temporary server has no UI URL at all). Subflows log "Beginning subflow
    run" instead and are linked from their parent's page."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = getattr(record, "flow_run_id", None)
        if run_id and str(record.msg).startswith("Beginning flow run"):
            from cxrflow_cli._links import ui_link

            _to_console(f"run: {ui_link(f'/runs/flow-run/{run_id}')}")
        return True


class CxrflowInfoToConsole(logging.Handler):
    """cxrflow's INFO lines on stderr: the root's console handler (Prefect's) now takes WARNING and above, so
    below that they would vanish; WARNING and above still reach the console through the root."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            _to_console(self.format(record))


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
    flow_runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, RunLink) for f in flow_runs.filters):
        flow_runs.addFilter(RunLink())
    cxrflow = logging.getLogger("cxrflow")
    if not any(isinstance(h, CxrflowInfoToConsole) for h in cxrflow.handlers):
        cxrflow.addHandler(CxrflowInfoToConsole())
    os.environ.pop("CXRFLOW_VERBOSE", None)
    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        os.environ.setdefault(var, "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm >= 4.66 reads it: no library progress bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Prefect's per-task chatter ("Created task run", "Finished in state Completed()") and the flows' printed
    # summaries stay in the runs' logs (the UI); the console gets warnings and errors. The console handler's
    # level, not PREFECT_LOGGING_LEVEL: that one is the loggers' level and would keep the records from the API
    # handler too (the UI said "This run didn't generate logs"). Read when prefect is first imported (commands
    # import it lazily, after this), also by the processes a run starts (ingest's process pool).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*shardshuffle.*")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def verbose() -> bool:
    return os.environ.get("CXRFLOW_VERBOSE") == "1"
