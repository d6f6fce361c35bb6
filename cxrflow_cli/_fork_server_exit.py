"""Preloaded by the CLI's ingest fork server (cxrflow_cli/ingest.py): when the CLI that started it exits, the
fork server ends without tearing its preloaded modules down (seconds at load 10 when it carried Prefect;
meanwhile it still holds the CLI's stdout and a core). atexit runs its handlers last-registered first and this
module is preloaded last (tasks/ingest.py worker_context), so it skips every other exit handler of the fork
server (multiprocessing's finalizers included): the fork server only forks (no threads, no output, no files,
semaphores or shared memory of its own), so they have nothing to do there.
Its pool workers are forked children that leave through os._exit and never run atexit handlers."""

import atexit
import os

atexit.register(os._exit, 0)
