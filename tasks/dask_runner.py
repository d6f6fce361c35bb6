"""The ingest plan's chunks on a Dask `distributed` cluster, without Prefect (the Prefect flows use prefect-dask's
task runner instead: flows/runners.py). Plain Runner (tasks/ingest.py): the plan, the chunks and the outputs are
the same as on the local pool; only where a chunk runs changes.

The cluster's workers must see the source root and the output folder at the same paths (one machine, or a
shared filesystem): a chunk reads its films and writes its images and part files there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from schemas.config import IngestConfig
from tasks.ingest import PROGRESS_EVERY_S, ChunkResult, progress_done


class DaskRunner:
    """Steps in this process, chunks as futures on a `distributed.Client`."""

    def __init__(self, client, progress: Callable[[int, int], None] | None = None):
        self.client = client
        self.progress = progress

    def workers(self, cfg: IngestConfig) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

    def step(self, name: str, fn: Callable, *args):
        return fn(*args)

    def map_chunks(
        self, fn: Callable[..., ChunkResult], calls: list[tuple], run_dir: Path, total: int
    ) -> list[ChunkResult]:
        from distributed import wait

        # pure=False: two chunks of equal arguments are still two runs (Dask would otherwise merge them by key)
        futures = [self.client.submit(fn, *call, pure=False) for call in calls]
        try:
            while pending := [f for f in futures if not f.done()]:
                try:
                    wait(pending, timeout=PROGRESS_EVERY_S, return_when="FIRST_COMPLETED")
                except TimeoutError:  # distributed's wait raises when nothing finished in time
                    pass
                if self.progress:
                    self.progress(progress_done(run_dir), total)
            return self.client.gather(futures)  # raises the first failed chunk's error
        except BaseException:
            # The plan removes the run folder next: wait until no chunk still writes to it (a cancelled future
            # does not stop a chunk already running on a worker).
            wait(futures)
            raise


def connect(address: str):
    """A client of the scheduler at `address` (`tcp://host:8786`)."""
    from distributed import Client

    return Client(address)
