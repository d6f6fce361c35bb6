"""The published shard set: what readers open ({split}.index.json, shards.parquet, summary.json, llava/).

A re-shard with other input or limits retires the whole old set (indexes first, as readers start there)
before any tar is deleted or rewritten, and the new set is written only after every new tar is in place.
A kill at any point therefore leaves either the old set over the old tars, no set, or the new set over the
new tars: never an index naming a missing tar or a summary with another run's counts.
"""

from __future__ import annotations

from pathlib import Path

from cxrio import clean_stale_temps, retire

SIDECARS = ("shards.parquet", "summary.json", "README.md", "llava")  # published beside the indexes


def published_paths(out_dir: Path) -> list[Path]:
    """The set's paths that exist, indexes first."""
    out_dir = Path(out_dir)
    return sorted(out_dir.glob("*.index.json")) + [out_dir / n for n in SIDECARS if (out_dir / n).exists()]


def retire_published_set(out_dir: Path) -> list[str]:
    """Move the published set out of the readers' way (one rename per path), then delete it."""
    out_dir = Path(out_dir)
    clean_stale_temps(out_dir)  # a run killed while deleting left its retired set in a temporary folder
    paths = published_paths(out_dir)
    if paths:
        retire(paths, out_dir)
    return [p.name for p in paths]
