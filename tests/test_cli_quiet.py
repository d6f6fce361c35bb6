"""Quiet by default: third-party chatter stays out of the console unless --verbose."""

from __future__ import annotations

import warnings

from cxrflow_cli.quiet import ENV_VARS as QUIET_ENV
from fixtures.train_shards import write_train_shards


def test_wids_summary_line_is_swallowed_unless_verbose(tmp_path, capfd, monkeypatch):
    from training.data import open_shards, read_index

    shards = write_train_shards(tmp_path / "shards", n=3, per_shard=3)
    monkeypatch.delenv("CXRFLOW_VERBOSE", raising=False)
    open_shards(read_index(shards, "train"), tmp_path / "c1").close()
    assert "nfiles" not in capfd.readouterr().err
    monkeypatch.setenv("CXRFLOW_VERBOSE", "1")
    open_shards(read_index(shards, "train"), tmp_path / "c2").close()
    assert "nfiles" in capfd.readouterr().err  # wids prints it unconditionally: the filter is what hides it


def test_quiet_configure_filters_library_noise_and_verbose_keeps_it(monkeypatch):
    import logging

    from cxrflow_cli import quiet

    for var in QUIET_ENV:  # recorded by monkeypatch, so whatever configure sets is undone after the test
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.configure(verbose=False)
        warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
    assert not seen
    assert logging.getLogger("transformers").level == logging.WARNING
    assert logging.getLogger("cxrflow").level == logging.INFO
    steps = logging.getLogger("cxrflow.training.steps")
    monkeypatch.setattr(steps, "propagate", steps.propagate)  # undone after the test
    assert not steps.propagate  # per-step training lines: the bar and the run's logs, not the console
    import os

    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "WARNING"
    monkeypatch.delenv("TQDM_DISABLE")
    quiet.configure(verbose=True)
    assert quiet.verbose() and "TQDM_DISABLE" not in os.environ and steps.propagate


def test_a_failed_run_logs_a_user_error_without_its_traceback(monkeypatch):
    """Prefect logs a failed task/flow run with the traceback (a pipeline's mistake found mid-run printed 140
    lines before the CLI's one); a UserError keeps its message only, other errors keep the traceback."""
    import logging

    from cxrflow_cli import quiet
    from schemas.errors import UserError

    for var in QUIET_ENV:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    logger = logging.getLogger("prefect.task_runs")
    monkeypatch.setattr(logger, "filters", list(logger.filters))  # what configure adds is undone
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        quiet.configure(verbose=False)
        for exc in (UserError("11 examples do not fill one global batch"), RuntimeError("a bug")):
            try:
                raise exc
            except Exception:
                logger.error("Task run failed with exception: %r", exc, exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert records[0].exc_info is None and "global batch" in records[0].getMessage()
    assert records[1].exc_info is not None  # an unexpected error keeps its traceback


def test_a_user_errors_run_records_reach_the_run_handlers_not_the_console(monkeypatch):
    """The run logger's own handlers (Prefect's API handler) get every record; the root logger (the console)
    gets none about the UserError, including the final-state record that names only its type."""
    import logging

    from cxrflow_cli import quiet
    from schemas.errors import UserError

    for var in QUIET_ENV:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    logger = logging.getLogger("prefect.task_runs")
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    run_records: list[str] = []
    console: list[str] = []

    class Keep(logging.Handler):
        def __init__(self, into):
            super().__init__()
            self.into = into

        def emit(self, record):
            self.into.append(record.getMessage())

    own, root = Keep(run_records), Keep(console)
    logger.addHandler(own)
    logging.getLogger().addHandler(root)
    try:
        quiet.configure(verbose=False)
        for exc in (UserError("no shards"), RuntimeError("a bug")):
            try:
                raise exc
            except Exception:
                logger.error("Task run failed with exception: %r", exc, exc_info=True)
            logger.error(
                "Finished in state Failed('Task run encountered an exception %s: %s')",
                type(exc).__name__,
                exc,
            )
    finally:
        logger.removeHandler(own)
        logging.getLogger().removeHandler(root)
    assert len(run_records) == 4
    assert console == [m for m in run_records if "a bug" in m] and len(console) == 2


def test_a_later_unrelated_failure_of_a_same_named_type_reaches_the_console(monkeypatch):
    """A long-lived process (a worker, served flows) logs many runs through one filter: after a user error
    was kept off the console, the final-state record of a different failure (a bug whose exception type has
    the same name, or the same user-error type with another message) still reaches it."""
    import logging

    from cxrflow_cli import quiet
    from tasks.validate import ValidationFailed

    class ValidationFailedBug(Exception):  # a library's own "ValidationFailed", not a user error
        pass

    ValidationFailedBug.__name__ = "ValidationFailed"
    for var in QUIET_ENV:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    logger = logging.getLogger("prefect.task_runs")
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    monkeypatch.setattr(logger, "propagate", True)
    console: list[str] = []

    class Console(logging.Handler):  # what propagates past the run logger: the console's share
        def emit(self, record):
            console.append(record.getMessage())

    parent = logging.getLogger("prefect")
    handler = Console()
    parent.addHandler(handler)

    def fail(exc: Exception) -> None:
        try:
            raise exc
        except Exception:
            logger.error("Task run failed with exception: %r", exc, exc_info=True)
        state = f"Task run encountered an exception {type(exc).__name__}: {exc}"
        logger.error("Finished in state Failed(%r)", state)

    try:
        quiet.configure(verbose=False)
        fail(ValidationFailed("patient-level split leakage: 1 patient", "see expectations.json"))
        assert console == []  # the user error: the CLI prints its one line
        fail(ValidationFailedBug("schema 'x' is broken"))
        fail(ValidationFailed("row-count collapse: 3 of 4 rows", "see quarantine.parquet"))
    finally:
        parent.removeHandler(handler)
    assert len(console) == 2 and "schema 'x' is broken" in console[1], console


def test_verbose_keeps_prefect_records_of_a_user_error_with_their_traceback(monkeypatch):
    import logging

    from cxrflow_cli import quiet
    from schemas.errors import UserError

    for var in QUIET_ENV:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    logger = logging.getLogger("prefect.flow_runs")
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(logger, "propagate", True)
    steps = logging.getLogger("cxrflow.training.steps")
    monkeypatch.setattr(steps, "propagate", steps.propagate)
    console: list[logging.LogRecord] = []

    class Console(logging.Handler):
        def emit(self, record):
            console.append(record)

    parent = logging.getLogger("prefect")
    handler = Console()
    parent.addHandler(handler)
    try:
        quiet.configure(verbose=True)
        try:
            raise UserError("11 examples do not fill one global batch")
        except UserError:
            logger.error("Encountered exception during execution", exc_info=True)
    finally:
        parent.removeHandler(handler)
    assert len(console) == 1 and console[0].exc_info is not None
