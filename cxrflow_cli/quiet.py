"""Quiet by default: third-party chatter that tells a user nothing is filtered; `cxrflow --verbose` keeps it.

Filtered: transformers' FutureWarnings/deprecations and info logs, tqdm bars (transformers, datasets,
huggingface_hub), wids' per-dataset stderr line (tasks.io.quiet_wids), Prefect's console logs below WARNING,
and library loggers below WARNING; a failed run's traceback when its error is a UserError (the CLI prints
that one line). cxrflow's own loggers (`cxrflow.*`) stay at INFO.
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


class UserErrorsInOneLine(logging.Filter):
    """Prefect logs a failed task or flow run with its traceback; for a UserError (a mistake in what was asked
    for, which the CLI reports in one line) the message is the whole story, so the traceback is dropped.
    Any other exception keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from schemas.errors import UserError

        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info, record.exc_text = None, None
        return True


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
        if not any(isinstance(f, UserErrorsInOneLine) for f in logger.filters):
            logger.addFilter(UserErrorsInOneLine())
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
