"""Helpers shared by the source adapters: CSVs read as all-string tables, cheap header checks, label cells
in the CheXpert encoding, and what can be known about an image file without decoding it.

Private module (leading underscore): the adapter registry skips it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl

from schemas.labels import CHEXPERT_LABELS
from tasks.sources.base import Discovery, Drop, SourceLayoutError, make_key

# Label cells as the released CSVs write them (1.0/0.0/-1.0, sometimes without the decimal), blank = None.
_LABEL_CELLS = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-0.0": 0, "-1.0": -1, "-1": -1}
_BLANK = {"", "nan", "none", "null"}


class LabelValueError(ValueError):
    """A label cell outside the 1/0/-1/blank encoding."""


def parse_label(raw: object) -> int | None:
    """'1.0' -> 1, '' or NaN -> None, '2' -> LabelValueError."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip()
    if text.lower() in _BLANK:
        return None
    if text not in _LABEL_CELLS:
        raise LabelValueError(f"label value outside the 1/0/-1/blank encoding: {text!r}")
    return _LABEL_CELLS[text]


def parse_label_cell(name: str, value: str | None) -> int | None:
    """parse_label, naming the column in the error."""
    try:
        return parse_label(value)
    except LabelValueError:
        raise LabelValueError(f"label value outside the 1/0/-1/blank encoding: {value!r} for {name!r}") from None


def parse_label_row(row: dict) -> dict[str, int | None]:
    """The 14 CheXpert columns of one CSV row; raises LabelValueError naming the first bad cell."""
    return {name: parse_label_cell(name, row.get(name)) for name in CHEXPERT_LABELS}


def empty_labels() -> dict[str, int | None]:
    return dict.fromkeys(CHEXPERT_LABELS)


def read_csv_file(path: Path, **kwargs) -> pl.DataFrame:
    """pl.read_csv (every column as text) where every failure is one line naming the file and the cause:
    a .gz that is not gzip (a failed download saved under the release's name), a truncated or empty
    archive, text that is not UTF-8."""
    require_file(path, "file")
    if path.name.endswith(".gz"):
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic != b"\x1f\x8b":
            what = "empty" if not magic else "not gzip-compressed"
            raise SourceLayoutError(f"{path.name}: {what}, though named .gz ({path})")
    try:
        return pl.read_csv(path, infer_schema=False, **kwargs)
    except (pl.exceptions.PolarsError, OSError, EOFError, ValueError) as e:
        cause = " ".join(str(e).split())[:200]
        hint = "; the file is not UTF-8 (re-save it as UTF-8)" if "utf-8" in cause.lower() or "utf8" in cause.lower() else ""
        raise SourceLayoutError(f"{path.name}: unreadable CSV ({type(e).__name__}: {cause}){hint} ({path})") from e


def read_csv_strings(path: Path, *, ragged: bool = False) -> pl.DataFrame:
    """Every column as a string: label cells like '-1.0' and ids with leading zeros stay exactly as written."""
    return read_csv_file(path, truncate_ragged_lines=ragged)


CONTROL_CHARS = "control characters in the source's metadata"
# C0 controls (NUL included) and DEL; tab, newline and carriage return are ordinary in quoted report text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_char_column(row: dict) -> str | None:
    """The first column of a CSV row whose cell holds a control character (a corrupt or binary cell), else
    None. Such a row is quarantined: a NUL byte in a path or an id would crash or corrupt what follows."""
    return next((k for k, v in row.items() if isinstance(v, str) and _CONTROL.search(v)), None)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SourceLayoutError(f"missing {what}: {path}")
    return path


def read_header(path: Path) -> list[str]:
    """Column names of a CSV without reading its body (check() must be cheap)."""
    return read_csv_file(path, n_rows=0, truncate_ragged_lines=True).columns


ESCAPES_ROOT = "path leaves the release root (absolute or '..'): not read"


def escapes_root(rel: str) -> bool:
    """A path a release names (a CSV cell) that is absolute or climbs out with '..': it must never be read, whatever
    lies there. Lexical, so a release whose own folders are symlinks still works."""
    rel = rel.strip().replace("\\", "/")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return True
    depth = 0
    for part in rel.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


def file_defect(path: Path) -> str | None:
    """What can be known about an image file without decoding it (the engine detects truncation)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "image file missing"
    except OSError as e:
        return f"image file unreadable: {e.strerror}"
    except ValueError:  # os.stat refuses a NUL byte in the path (a corrupt CSV cell)
        return f"{CONTROL_CHARS}: a NUL byte in the image path"
    if size == 0:
        return "image file is empty (0 bytes)"
    return None


def quarantine_unlisted(
    out: Discovery, source: str, root: Path, on_disk: dict[Path, str], listed: set[Path], listing: str
) -> None:
    """Image files on disk (path -> image id) that no metadata row names are inputs too: found, and
    quarantined with a reason, so found = kept + filtered + quarantined counts every file."""
    for path in sorted(set(on_disk) - listed):
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        out.quarantined.append(
            Drop(source, rel, "discover", f"image file not listed in {listing}", make_key(source, on_disk[path]))
        )
