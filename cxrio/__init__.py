"""The bottom layer every writer uses: content hashes, atomic writes of files and whole folders, JSON.

Readers never see a partial output: a file or folder is written under a temporary name beside its target and
renamed onto it when complete. Temporary names are unique (mkstemp/mkdtemp: two threads, ranks or runs writing
the same target never share one) and end in `.tmp-PID`, so `clean_stale_temps` can remove what a killed
writer left without touching a save in progress. Nothing else in the project renames into place
(tests/test_atomic_writes.py), and this package imports nothing of the project (tests/test_import_graph.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

_CHUNK = 1 << 20
# A temporary name: hidden, ends in tmp-PID; also the names older versions used and cleaned: `.tmp-NAME-PID`
# (checkpoints), `.retired-PID` (a retired shard set) and, without a PID, `.NAME.partial` (a shard being
# written: nothing writes one any more, so any left is stale).
_TEMP = re.compile(r"^\.(?:.*\.?tmp-(?:.*-)?|retired-)(\d+)$|^\..+\.partial$")
# renameat2(2), for swapping a folder in: Python has no binding; None off glibc/Linux.
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
try:
    _RENAMEAT2 = ctypes.CDLL(None, use_errno=True).renameat2
    _RENAMEAT2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
except (AttributeError, OSError, TypeError):
    _RENAMEAT2 = None


def _read_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only read it by setting
    it, which for a moment gives files another thread creates the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the strictest for the moment it is set
    os.umask(mask)
    return mask


# open()'s and mkdir()'s modes under the process umask (mkstemp/mkdtemp create 0600/0700): outputs keep the
# permissions a plain write gives them. Read once, at import.
_UMASK = _read_umask()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes | mmap.mmap) -> str:
    return hashlib.sha256(data).hexdigest()


# File systems whose pages are local: a mapped page there cannot fail to load short of a dying disk. On a
# network or FUSE mount (NFS, CIFS, gcsfuse, s3fs: how archives are often served) a page that fails to load
# kills the reader with SIGBUS where a read() raises OSError, which ingest quarantines as one unreadable file.
LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs",
                                "ramfs", "jfs", "reiserfs", "bcachefs"})
_fs_of_device: dict[int, str | None] = {}


def file_system(st_dev: int) -> str | None:
    """The file system type of a device (st_dev) from /proc/self/mountinfo, or None where it cannot be told."""
    if st_dev not in _fs_of_device:
        found = None
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()  # id parent major:minor root mount-point options... - fstype source ...
                    major, minor = fields[2].split(":")
                    if os.makedev(int(major), int(minor)) == st_dev and "-" in fields:
                        found = fields[fields.index("-") + 1]
        except (OSError, ValueError, IndexError):
            found = None
        _fs_of_device[st_dev] = found
    return _fs_of_device[st_dev]


def read_mapped(path: Path) -> mmap.mmap | bytes:
    """A file's contents without copying them: a read-only mapping (a view of the page cache, where a read
    copies a ~15 MB film into fresh memory first: ~1 ms, BENCHMARKS.md issue 28), or its bytes where it cannot
    be mapped (an empty file, a pipe) or should not be (a file system not in LOCAL_FILE_SYSTEMS: there a page
    that fails to load would kill the reader instead of raising). Raises OSError as open() does. The price of a
    mapping on a local disk: a file truncated by another process while it is read kills the reader (SIGBUS);
    source archives are not rewritten in place."""
    with open(path, "rb") as f:
        if file_system(os.fstat(f.fileno()).st_dev) not in LOCAL_FILE_SYSTEMS:
            return f.read()
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
            return f.read()


@contextlib.contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """A private folder in `parent` for intermediate files, named as this module's temporaries (so a killed
    run's is removed by clean_stale_temps) and removed when the block ends, raised or not."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=_suffix()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _suffix() -> str:
    return f".tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary file in `path`'s folder to write; renamed onto `path` when the block ends, removed if
    it raises, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_suffix())
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path, if_exists: Literal["replace", "keep", "fail"] = "replace") -> Iterator[Path]:
    """A fresh temporary folder beside `path` to fill; renamed onto `path` when the block ends, removed if it
    raises, so a kill mid-write never leaves a `path` that looks complete. When `path` already exists:
    "replace" swaps the new folder in and deletes the old one (readers see the old or the new one, never
    a half-deleted one, and on Linux never none), "keep" keeps it and drops the new one (another rank saved the same thing first), "fail" raises
    FileExistsError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=_suffix()))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        _publish_dir(tmp, path, if_exists)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_dir(tmp: Path, path: Path, if_exists: str) -> None:
    if not path.exists():
        try:
            os.rename(tmp, path)
            return
        except OSError:
            if not path.exists():
                raise
            # another writer created `path` in between: decided below
    if if_exists == "fail":
        raise FileExistsError(f"{path} already exists")
    if if_exists == "keep":
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if _exchange(tmp, path):  # one step: `path` is the old folder, then the new one, never missing
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return
    # Two renames (no exchange here): `path` is missing in between; the old folder goes back on failure.
    aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=_suffix()))
    try:
        os.replace(path, aside / path.name)
        try:
            os.rename(tmp, path)
        except OSError:
            os.rename(aside / path.name, path)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE, in the C library since
    glibc 2.28); False where the system or the file system cannot (the caller falls back to two renames)."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # unsupported here
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _exchange_supported(folder: Path) -> bool:
    """Whether `folder`'s file system swaps folders in one step (tests)."""
    a = Path(tempfile.mkdtemp(dir=folder, suffix=_suffix()))
    b = Path(tempfile.mkdtemp(dir=folder, suffix=_suffix()))
    try:
        return _exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def _remove(path: Path) -> None:
    """Delete a file or a folder tree (missing is fine)."""
    if Path(path).is_dir() and not Path(path).is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)


def retire(paths: Iterable[Path], folder: Path) -> None:
    """Move `paths` out of the readers' way (one rename each, into a temporary folder in `folder`, on the same
    file system), then delete them."""
    trash = Path(tempfile.mkdtemp(dir=folder, prefix=".retired.", suffix=_suffix()))
    try:
        for p in paths:
            os.replace(p, trash / Path(p).name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def is_temp(path: Path) -> bool:
    """Whether `path` is named as a temporary output of this module (or of the versions before it)."""
    return _TEMP.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files and folders a killed writer left in `folder`: those whose writer PID is
    gone. A write in progress in a live process is left alone. Returns what was removed."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for p in sorted(Path(folder).iterdir()):
        m = _TEMP.match(p.name)
        if m and not (m[1] and _alive(int(m[1]))):
            _remove(p)
            removed.append(p)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see a partial file.
    `atomic_path`'s steps, written through the descriptor mkstemp opened (no second open, no chmod by path):
    ~3x fewer microseconds for the two small files each ingested image writes (BENCHMARKS.md, issue 28)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_suffix())
    f = None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        f = open(fd, "wb")  # owns fd from here: closing it closes fd
        with f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if f is None:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(path: Path, data: Any) -> None:
    """A pyarrow Table (pyarrow's writer: safe in forked pool workers) or a polars DataFrame (its own writer),
    written to a temporary file in the same folder and renamed, so readers never see a partial file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        if isinstance(data, pa.Table):
            pq.write_table(data, tmp)
        else:
            data.write_parquet(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def quiet_wids():
    """wids prints a summary line to stderr for every dataset it opens, unconditionally: swallow it unless
    CXRFLOW_VERBOSE is set (`cxrflow --verbose`)."""
    if os.environ.get("CXRFLOW_VERBOSE") == "1":
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield
