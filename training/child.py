"""run_training in a spawned child process, for trainings that run side by side in one process's threads
(the `ablate` flow's variants): torch's global RNG (weight init, dropout) and its intra-op thread pool belong to
the process, so two trainings in two threads would draw from each other's random streams. In a child each
gives what it gives alone. The child's step rows reach `on_step` and its `cxrflow.training` log records go
through this process's loggers, so progress and logs look as if it trained here; its error is raised here
with the child's traceback as the cause, and an interrupt here ends the child."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue as queue_errors
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from schemas.train import TrainConfig

LOGGERS = ("cxrflow.training", "cxrflow.training.steps")
_children: set = set()  # the live training processes this process started
# Set by stop_children (an interrupt) until clear_stop: no training starts, and no variant thread starts its next
# stage (flows/stages.py run_stage), so the process ends instead of running the variants' pipelines on to the end.
_STOP = threading.Event()


class Stopped(RuntimeError):
    """Raised in a variant's thread at its next stage or training after stop_children (an interrupt)."""


def stop_children() -> None:
    """End every training process this process started (an interrupt: they must not train on alone; each
    waiting caller then fails with the child's exit code), and start no new one until clear_stop."""
    _STOP.set()
    for child in list(_children):
        child.terminate()


def clear_stop() -> None:
    """Trainings and stages may start again (a new run of variants side by side)."""
    _STOP.clear()


def check_stop() -> None:
    """Raise Stopped once stop_children was called (and not cleared since)."""
    if _STOP.is_set():
        raise Stopped("stopped: the run was interrupted")


class ChildTraceback(Exception):
    """The training process's traceback, as the cause of the error raised in the parent."""


class _Relay(logging.Handler):
    def __init__(self, relay):
        super().__init__()
        self.relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info = record.getMessage(), None, None  # picklable, formatted
        self.relay.put(("log", record))


def _text(pattern) -> str:  # a filter's message or module: None, a string, or a compiled pattern
    return "" if pattern is None else getattr(pattern, "pattern", pattern)


def _end_when_orphaned(parent: int) -> None:
    """The parent killed outright (SIGKILL, the out-of-memory killer) cannot stop its children: each ends itself
    once it is no longer its parent's (it would train on alone, for nobody)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _main(cfg: TrainConfig, relay, levels: dict[str, int], warning_filters: list, parent: int) -> None:
    from training.openclip import ISOLATED

    # the parent's id from the parent: killed while this child was still starting, it is no longer getppid()
    threading.Thread(target=_end_when_orphaned, args=(parent,), daemon=True, name="parent-watch").start()

    # The parent's sys.path, less the isolated torchvision an open_clip import there may have added: imported by
    # transformers it breaks LLaVA (training/openclip.py); import_open_clip adds it here too if this run needs it.
    sys.path[:] = [p for p in sys.path if Path(p) != ISOLATED]
    warnings.resetwarnings()  # the parent's filters (the CLI's quiet mode hides library FutureWarnings)
    for action, message, category, module, lineno in reversed(warning_filters):
        warnings.filterwarnings(action, _text(message), category, _text(module), lineno)
    top = logging.getLogger(LOGGERS[0])
    top.addHandler(_Relay(relay))
    top.propagate = False  # the parent's handlers print it, once
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    from training.run import run_training

    try:
        relay.put(("done", run_training(cfg, on_step=lambda row: relay.put(("step", row)))))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - an exception that does not survive pickling goes as its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        relay.put(("error", exc, traceback.format_exc()))


def _ended(code: int) -> str:
    if code < 0:  # SIGKILL is what the kernel's out-of-memory killer sends
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exited with code {code}"


def run_training_in_child(cfg: TrainConfig, on_step=None) -> dict:
    """training.run.run_training(cfg, on_step=on_step), computed in a fresh (spawned) process."""
    ctx = mp.get_context("spawn")  # not fork: the parent's other threads (Prefect's, another variant's) hold locks
    relay = ctx.Queue()
    levels = {name: logging.getLogger(name).getEffectiveLevel() for name in LOGGERS}
    child = ctx.Process(target=_main, args=(cfg, relay, levels, list(warnings.filters), os.getpid()),
                        name="cxrflow-training")
    check_stop()
    child.start()
    _children.add(child)
    finished = False
    try:
        check_stop()  # an interrupt between the check above and the add: stop_children did not see this child
        while True:
            try:
                message = relay.get(timeout=0.5)
            except queue_errors.Empty:
                if child.exitcode is None:
                    continue
                try:  # it exited: its last message may still be in the pipe
                    message = relay.get(timeout=2.0)
                except queue_errors.Empty:
                    raise RuntimeError(f"the training process {_ended(child.exitcode)} before it finished") from None
            kind = message[0]
            if kind == "step":
                if on_step is not None:
                    on_step(message[1])
            elif kind == "log":
                logging.getLogger(message[1].name).handle(message[1])
            elif kind == "done":
                finished = True
                return message[1]
            else:
                raise message[1] from ChildTraceback(message[2])
    finally:
        child.join(timeout=10.0 if finished else 0.0)  # a finished child is exiting on its own
        if child.is_alive():
            child.terminate()  # an interrupt or error here: the child must not train on alone
            child.join()
        _children.discard(child)
