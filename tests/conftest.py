"""Shared test setup. Prefect gets a temporary home so results and settings never leak between runs
(docs/pitfalls.md), and flow tests share one session-scoped test server (never nest harnesses)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="cxrflow-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_PREFECT_HOME / "results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread for torch/OpenMP in this process and every process a test starts: the suite's models are
# tiny, and on a busy 2-core machine OpenMP's spinning threads made a training step ~40x slower (0.2 s -> 8 s a
# stage-2 step of the learnable demo, measured beside other jobs; BENCHMARKS.md). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Modules holding a slow test first, each module's tests kept together. `make test` hands whole modules to
    its pytest-xdist workers in this order (--dist loadfile, no reordering), so the long modules start first and
    the many short ones fill in at the end instead of one long module ending the run on one core alone."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session; request it in any test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield


@pytest.fixture(scope="session")
def mimic_small(tmp_path_factory) -> Path:
    """A small MIMIC-CXR DICOM fixture shared by tests that only read it."""
    from fixtures.mimic_cxr import write_mimic_cxr

    root = tmp_path_factory.mktemp("mimic-small")
    write_mimic_cxr(root, studies=8, seed=7, jpg=False, size="small")
    return root


@pytest.fixture(autouse=True)
def _no_log_handler_on_a_closed_stream():
    """Prefect (re)configures its console handlers bound to the sys.stderr of that moment; inside a CliRunner
    invocation that stream is closed afterwards, and every later record would print "Logging error" into the
    next invocation's output. A test-harness artifact only: a real CLI process never closes its stderr."""
    import logging
    import sys

    yield
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one
            console = getattr(handler, "console", None)  # Prefect's handler prints through a rich Console
            if console is not None and getattr(console.file, "closed", False):
                console.file = sys.stderr
    # absl's handler (rouge_score imports absl) binds the sys.stderr of its first import, here pytest's capture
    # file; Prefect's logging setup shuts down every handler ever made, and absl's close() closes any stream
    # that is not the current sys.stderr: pytest's own capture file, so the next test dies ("lost sys.stderr").
    for ref in list(logging._handlerList):
        handler = ref()
        if handler is not None and type(handler).__module__.startswith("absl"):
            handler.stream = sys.__stderr__
