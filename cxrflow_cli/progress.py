"""Rich progress bars for the long commands. Bars draw on stderr and vanish when output is not a terminal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _bar(*fields: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *[TextColumn(f) for f in fields],
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,  # no bar in logs, pipes and captured output
        redirect_stdout=False,
        redirect_stderr=False,
    )


class _StepLinesFilter(logging.Filter):
    """Per-step log lines are what the bar shows: keep them out of the console (metrics.jsonl has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("stage %d step ")


@contextmanager
def training_progress(show_logs: bool = True) -> Iterator[Callable[[dict], None]]:
    """A bar per stage (steps, loss, samples/s); yields the on_step callback, also registered with the
    in-process flow listeners so a `train` flow run in this process drives it. With `show_logs`, cxrflow's
    training log lines print above the bars."""
    from rich.logging import RichHandler

    from flows import progress as flow_progress

    bar = _bar("loss {task.fields[loss]:.4f}", "{task.fields[sps]:.1f} samples/s")
    ids: dict[int, int] = {}

    def on_step(row: dict) -> None:
        fields = {"loss": row["loss"], "sps": row["samples_per_s"]}
        if row["stage"] not in ids:
            ids[row["stage"]] = bar.add_task(f"stage {row['stage']}", total=row["total_steps"], **fields)
        bar.update(ids[row["stage"]], completed=row["step"], total=row["total_steps"], **fields)

    logger = logging.getLogger("cxrflow")
    handler = RichHandler(console=bar.console, show_path=False, show_time=False)
    handler.addFilter(_StepLinesFilter())
    if show_logs:
        logger.addHandler(handler)
    flow_progress.step_listeners.append(on_step)
    try:
        with bar:
            yield on_step
    finally:
        flow_progress.step_listeners.remove(on_step)
        logger.removeHandler(handler)


@contextmanager
def counter(description: str, *fields: str) -> Iterator[Callable[[int, int], None]]:
    """A bar for (done, total) progress (validation, sharding, evaluation, structuring) with its rate; `fields`
    name extra figures the work reports through flows.progress.notify_fields (e.g. "cost"; "description"
    renames the bar). A stage the work announces (flows.progress.notify_stage) gets a row of its own. Yields
    update."""
    from flows import progress as flow_progress

    bar = _bar("{task.fields[rate]}", *[f"{f} {{task.fields[{f}]}}" for f in fields])
    current = [bar.add_task(description, total=None, rate="", **dict.fromkeys(fields, "-"))]

    def task():
        return next(t for t in bar.tasks if t.id == current[0])

    def update(done: int, total: int) -> None:
        elapsed = task().elapsed or 0.0
        rate = f"{done / elapsed:.1f}/s" if elapsed > 0 and done else ""
        bar.update(current[0], completed=done, total=total, rate=rate)

    def update_fields(values: dict) -> None:
        shown = {k: v for k, v in values.items() if k in fields or k == "description"}
        bar.update(current[0], **shown)

    def stage(name: str) -> None:
        if task().completed == 0 and task().total is None:  # nothing shown yet: this row is the stage's
            bar.update(current[0], description=name)
        else:
            current[0] = bar.add_task(name, total=None, rate="", **dict.fromkeys(fields, "-"))

    flow_progress.listeners.append(update)
    flow_progress.field_listeners.append(update_fields)
    flow_progress.stage_listeners.append(stage)
    try:
        with bar:
            yield update
    finally:
        flow_progress.listeners.remove(update)
        flow_progress.field_listeners.remove(update_fields)
        flow_progress.stage_listeners.remove(stage)
