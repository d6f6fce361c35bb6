"""A Prefect progress artifact fed from work that runs where Prefect's client cannot be called (worker
threads, a private event loop): the work sets (done, total); a background thread publishes every few seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact


class PolledProgress:
    def __init__(self, key: str, description: str, every_s: float = 2.0):
        self.key, self.description, self.every_s = key, description, every_s
        self.done, self.total = 0, 0
        self._stop = threading.Event()
        self._id = None
        self._sent = -1.0

    def set(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _publish(self) -> None:
        value = round(100.0 * self.done / self.total, 1) if self.total else 0.0
        if value != self._sent:
            try:
                update_progress_artifact(self._id, value)
                self._sent = value
            except Exception:  # noqa: BLE001 - a progress display must never fail the run
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._publish()

    def __enter__(self) -> PolledProgress:
        self._id = create_progress_artifact(0.0, key=self.key, description=self.description)
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"progress-{self.key}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._publish()


def progress_reporter(key: str, description: str) -> Callable[[int, int], None]:
    """A (done, total) callback for work running in the flow's own thread: it drives a new progress artifact
    and the CLI's bar (flows.progress.notify)."""
    from flows import progress

    artifact = create_progress_artifact(0.0, key=key, description=description)

    def report(done: int, total: int) -> None:
        progress.notify(done, total)
        update_progress_artifact(artifact, round(100.0 * done / max(total, 1), 1))

    return report
