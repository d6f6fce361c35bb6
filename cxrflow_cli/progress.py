"""The CLI's side of the one progress reporter (flows/progress.py): a Board listens to the work and shows it.

On a terminal it draws rich bars on stderr (a row per stage; training rows show loss and samples/s). When
stderr is not a terminal (logs, CI, pipes) bars would vanish, so a long stage prints a plain progress line
instead: the first after PROGRESS_LINE_EVERY_S, then at least every PROGRESS_LINE_EVERY_S while work runs
(a ticker thread covers stretches without updates, e.g. one GX suite). A short command prints nothing."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flows.progress import Listener, listening

PROGRESS_LINE_EVERY_S = 30.0
PROGRESS_PREFIX = "progress: "  # so a log reader (or a test) can tell the lines from the command's output


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
        disable=not console.is_terminal,  # no bar in logs, pipes and captured output: lines instead
        redirect_stdout=False,
        redirect_stderr=False,
    )


class Board(Listener):
    """Rows of (description, done, total, figures), drawn as bars on a terminal or printed as lines."""

    def __init__(self, description: str, fields: tuple[str, ...] = (), bar=None,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None,
                 every_s: float = PROGRESS_LINE_EVERY_S):
        self.names, self.bar, self.clock, self.every_s = fields, bar, clock, every_s
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.rows: list[dict] = []
        self.by_stage: dict[int, int] = {}  # training stage -> row
        self.started = self.last_line = clock()
        self._new_row(description)

    @property
    def lines(self) -> bool:
        return self.bar is None or self.bar.disable

    def _new_row(self, description: str) -> int:
        row = {"description": description, "done": 0, "total": None, "fields": dict.fromkeys(self.names, "-"),
               "start": self.clock(), "id": None}
        if self.bar is not None:
            row["id"] = self.bar.add_task(description, total=None, rate="", **row["fields"])
        self.rows.append(row)
        return len(self.rows) - 1

    def _draw(self, i: int) -> None:
        r = self.rows[i]
        if self.bar is not None:
            elapsed = self.clock() - r["start"]
            rate = f"{r['done'] / elapsed:.1f}/s" if elapsed > 0 and r["done"] else ""
            self.bar.update(r["id"], description=r["description"], completed=r["done"], total=r["total"],
                            rate=rate, **{k: v for k, v in r["fields"].items() if k in self.names})
        self.tick()

    def stage(self, name: str) -> None:
        r = self.rows[-1]
        if r["done"] == 0 and r["total"] is None:  # nothing shown yet: this row is the stage's
            r["description"] = name
        else:
            self._new_row(name)
        self._draw(len(self.rows) - 1)

    def update(self, done: int, total: int) -> None:
        self.rows[-1].update(done=done, total=total)
        self._draw(len(self.rows) - 1)

    def fields(self, values: dict) -> None:
        r = self.rows[-1]
        if "description" in values:
            r["description"] = values["description"]
        r["fields"].update({k: v for k, v in values.items() if k in self.names})
        self._draw(len(self.rows) - 1)

    def step(self, row: dict) -> None:
        stage = row["stage"]
        if stage not in self.by_stage:
            untouched = not self.by_stage and len(self.rows) == 1 and self.rows[0]["total"] is None
            self.by_stage[stage] = 0 if untouched else self._new_row(f"stage {stage}")
            self.rows[self.by_stage[stage]]["description"] = f"stage {stage}"
        i = self.by_stage[stage]
        self.rows[i].update(done=row["step"], total=row["total_steps"])
        self.rows[i]["fields"].update(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}")
        self._draw(i)

    def line(self) -> str:
        r = self.rows[-1]
        elapsed = self.clock() - r["start"]
        rate = f", {r['done'] / elapsed:.1f}/s" if elapsed > 0 and r["done"] else ""
        shown = "".join(f", {k} {v}" for k, v in r["fields"].items() if v != "-")
        return (f"{PROGRESS_PREFIX}{r['description']}: {r['done']}/{r['total'] or '?'}{rate}{shown}, "
                f"{elapsed:.0f}s")

    def tick(self) -> None:
        """Off a terminal: a line when PROGRESS_LINE_EVERY_S has passed since the last (or since the start)."""
        now = self.clock()
        if self.lines and now - self.last_line >= self.every_s:
            self.last_line = now
            self.write(self.line())


@contextmanager
def board(description: str, *fields: str, bar=None) -> Iterator[Board]:
    """A Board listening to this process's progress; off a terminal a ticker thread keeps the lines coming
    when updates do not."""
    b = Board(description, fields, bar=bar)
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(1.0):
            b.tick()

    thread = threading.Thread(target=ticker, daemon=True, name="progress-lines")
    with listening(b):
        if b.bar is not None:
            b.bar.start()
        thread.start()
        try:
            yield b
        finally:
            stop.set()
            thread.join()
            if b.bar is not None:
                b.bar.stop()


class _StepLinesFilter(logging.Filter):
    """Per-step log lines are what the bar shows: keep them out of the console (metrics.jsonl has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("stage %d step ")


@contextmanager
def training_progress(show_logs: bool = True) -> Iterator[Callable[[dict], None]]:
    """A row per training stage (steps, loss, samples/s); yields the on_step callback (a `train` flow run in
    this process drives the same board through the listeners). With `show_logs`, cxrflow's training log
    lines print above the bars."""
    from rich.logging import RichHandler

    bar = _bar("loss {task.fields[loss]}", "{task.fields[sps]} samples/s")
    logger = logging.getLogger("cxrflow")
    handler = RichHandler(console=bar.console, show_path=False, show_time=False)
    handler.addFilter(_StepLinesFilter())
    if show_logs:
        logger.addHandler(handler)
    try:
        with board("training", "loss", "sps", bar=bar) as b:
            yield b.step
    finally:
        logger.removeHandler(handler)


@contextmanager
def counter(description: str, *fields: str) -> Iterator[Callable[[int, int], None]]:
    """A row for (done, total) progress (ingest, validation, sharding, evaluation, structuring) with its rate;
    `fields` name extra figures the work reports (flows.progress.notify_fields, e.g. "cost"; "description"
    renames the row). A stage the work announces (flows.progress.notify_stage) gets a row of its own.
    Yields update."""
    bar = _bar("{task.fields[rate]}", *[f"{f} {{task.fields[{f}]}}" for f in fields])
    with board(description, *fields, bar=bar) as b:
        yield b.update
