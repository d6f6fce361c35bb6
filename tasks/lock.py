"""One run per output folder: an exclusive lock on OUT/.cxrflow.lock for the whole run.

`flock` rather than a PID file alone: the kernel drops the lock when its holder dies (kill -9 included), so a
stale lock never blocks a rerun and no PID check can race. The file also records the holder's PID and what it
runs, for the refusal message. Re-entrant within one process (a flow and the task runner it calls lock the
same folder); two runs inside one process are not told apart.

Outputs nest (`cxrflow data --out D` writes D/data, D/shards; a pipeline writes OUT/stages/...): a run on D and
another on D/data would interleave their files, so a lock also refuses while another process holds an
ancestor of its folder or a folder below it (NEST_DEPTH levels). Each run takes its own lock first and then
looks at the others, so of two racing nested runs at least one sees the other.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".cxrflow.lock"
NEST_DEPTH = 3  # OUT/stages/<stage>-<hash>, OUT/sources/<name>, OUT/data: the deepest nesting cxrflow writes
_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth)
_guard = threading.Lock()


def _drop_in_child() -> None:
    # A forked worker (process pools) shares the lock's open file: it must not keep the lock alive after
    # its parent released it, so the child drops its reference.
    for fd, _ in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class OutputLocked(RuntimeError):
    """Another live run holds this output folder."""


@contextmanager
def output_lock(folder: Path, what: str) -> Iterator[None]:
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            fd = _acquire(folder, what)
            try:
                _refuse_nested(folder.resolve())
            except OutputLocked:
                _release(folder, fd, created)
                raise
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                _release(folder, fd, created)


def _release(folder: Path, fd: int, created: bool) -> None:
    if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
        (folder / LOCK_NAME).unlink()  # a run refused before any work leaves no folder behind
        folder.rmdir()
    os.close(fd)  # releases the lock


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was just removed by a run that created it and did nothing
            folder.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"{folder} is in use by another cxrflow run ({holder}); wait for it to finish or choose another "
                "output folder"
            ) from None
        # The holder we waited on may have unlinked the file (a run that did nothing removes its lock and
        # folder) between our open and flock: a lock on that orphan excludes no one, so take a fresh one.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
        folder.mkdir(parents=True, exist_ok=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, {what}".encode(), 0)
    return fd


def _locked_by_another(path: Path) -> str | None:
    """The holder's note when another process holds the lock file at `path`, else None (a probe: a shared
    lock taken and dropped at once)."""
    if str(path.parent) in _held:  # this process: a flow and the stage it runs
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)  # drops the probe's shared lock
    return None


def _nested_locks(folder: Path, depth: int) -> Iterator[Path]:
    if depth == 0:
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            sub = Path(e.path)
            if (sub / LOCK_NAME).exists():
                yield sub / LOCK_NAME
            yield from _nested_locks(sub, depth - 1)


def _refuse_nested(folder: Path) -> None:
    # Ancestors first and the subtree lazily: a refusal comes before the walk, so the lock this run holds
    # meanwhile (which a legitimate run on this folder would trip over) is held as briefly as possible.
    nearby = itertools.chain((p / LOCK_NAME for p in folder.parents), _nested_locks(folder, NEST_DEPTH))
    for lock in nearby:
        holder = _locked_by_another(lock)
        if holder is not None:
            raise OutputLocked(
                f"{folder} overlaps {lock.parent}, in use by another cxrflow run ({holder}); nested output "
                "folders would mix their files: wait for it to finish or choose a separate output folder"
            )


def holds_output_lock(what: str) -> Callable:
    """Decorator for `fn(cfg, ...)` (positional or keyword): the call holds the lock on `cfg.out`."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            cfg = args[0] if args else next(iter(kwargs.values()))
            with output_lock(Path(cfg.out), what):
                return fn(*args, **kwargs)

        # Resolved types, not the strings of `from __future__ import annotations`: Prefect validates flow
        # parameters against the signature and would look the names up in this module.
        wrapper.__signature__ = inspect.signature(fn, eval_str=True)
        return wrapper

    return deco
