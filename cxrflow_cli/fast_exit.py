"""Leave the process once every exit step Python promises has run, without the interpreter's teardown.

A `cxrflow` process ends with Prefect, polars, pyarrow and pydantic models loaded; tearing those modules down
took 1.5-2.2 s per CLI run at load 10 (BENCHMARKS.md, issue 28) and did nothing a user needs: `exit_now` runs
what a normal exit runs first (threading's shutdown: non-daemon threads joined, Prefect's log and event
workers drained; then every atexit handler: logging, multiprocessing, weakref finalizers), flushes the
standard streams and ends the process with the same code. Only `__del__` of objects still alive is skipped,
which Python does not promise at exit either. Used by the console script alone (`CxrflowApp.__call__`):
`run()` returns in-process, for tests and scripts."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    threading._shutdown()  # what Py_FinalizeEx does first: join threads, run threading's exit hooks
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to deliver
            pass
    os._exit(code)
