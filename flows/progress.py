"""The one progress reporter: work reports (done, total), extra figures, a new stage or a training step;
`Reporter` publishes it as a Prefect progress artifact and hands it to the in-process listeners (the CLI's
board: cxrflow_cli/progress.py), which is the single listener list.

Kept in its own module and reached as `progress.notify(...)`: a flow function is pickled by value when it
travels to worker processes, and a module reference pickles by name, so the listeners never travel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Listener:
    """What an in-process listener may hear; each method defaults to ignoring it."""

    def stage(self, name: str) -> None:
        """A new stage of the same command (validation, then sharding): a new row."""

    def update(self, done: int, total: int) -> None:
        """Progress of the current stage."""

    def fields(self, values: dict) -> None:
        """Extra figures of the current row (e.g. {"cost": "$0.12"}; "description" renames it)."""

    def step(self, row: dict) -> None:
        """One training step's metrics ({stage, step, total_steps, loss, samples_per_s, ...})."""


listeners: list[Listener] = []


def notify(done: int, total: int) -> None:
    for listener in listeners:
        listener.update(done, total)


def notify_fields(values: dict) -> None:
    for listener in listeners:
        listener.fields(values)


def notify_stage(name: str) -> None:
    for listener in listeners:
        listener.stage(name)


def notify_step(row: dict) -> None:
    for listener in listeners:
        listener.step(row)


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """`listener` hears this process's progress until the block ends (a later run must not drive it)."""
    listeners.append(listener)
    try:
        yield listener
    finally:
        listeners.remove(listener)


class Reporter:
    """A stage's progress as a Prefect progress artifact (created on enter, published every `every_s` from a
    background thread, so work in worker threads or a private event loop may report) and to the listeners.

    `report(done, total)`; `report.fields({...})`; `report.step(row, fraction)` for training steps."""

    def __init__(self, key: str, description: str, stage: str | None = None, every_s: float = 2.0):
        self.key, self.description, self.stage, self.every_s = key, description, stage, every_s
        self.fraction = 0.0
        self._stop = threading.Event()
        self._id = None
        self._sent = -1.0

    def __call__(self, done: int, total: int) -> None:
        self.fraction = done / total if total else 0.0
        notify(done, total)

    def fields(self, values: dict) -> None:
        notify_fields(values)

    def step(self, row: dict, fraction: float) -> None:
        self.fraction = fraction
        notify_step(row)

    def _publish(self) -> None:
        from prefect.artifacts import update_progress_artifact

        value = round(100.0 * self.fraction, 1)
        if value != self._sent:
            try:
                update_progress_artifact(self._id, value)
                self._sent = value
            except Exception:  # noqa: BLE001 - a progress display must never fail the run
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._publish()

    def __enter__(self) -> Reporter:
        from prefect.artifacts import create_progress_artifact

        if self.stage:
            notify_stage(self.stage)
        self._id = create_progress_artifact(0.0, key=self.key, description=self.description)
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"progress-{self.key}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._publish()
