"""Helpers shared by the source adapter tests (every adapter under tasks/sources)."""

from __future__ import annotations

import csv
from pathlib import Path

from schemas.config import ImageConfig, IngestConfig
from tasks.ingest import discover as discover_with_policy
from tasks.sources.base import Discovery, Drop


def config(name: str, root: Path, out: Path | None = None, **kw) -> IngestConfig:
    """Tiny output images and one worker: these tests check accounting, not pixels or speed."""
    return IngestConfig(source=name, root=root, out=out or root.parent / f"{root.name}-out", workers=1,
                        image=ImageConfig(size=32), **kw)


def discover(name: str, root: Path, **kw) -> Discovery:
    disc = discover_with_policy(config(name, root, **kw))
    keys = [c.image_key for c in disc.candidates]
    assert len(keys) == len(set(keys)), "image keys must be unique"
    assert all("." not in k and "/" not in k for k in keys), "image keys must be dot- and slash-free"
    return disc


def reasons(drops: list[Drop]) -> list[str]:
    return sorted(d.reason for d in drops)


def assert_reconciles(summary: dict) -> None:
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"], summary


def count_reason(drops: list[Drop], fragment: str) -> int:
    return sum(fragment in d.reason for d in drops)


def assert_planted(disc: Discovery, planted: dict[str, int]) -> None:
    """Every defect the fixture planted is quarantined with a reason naming it, and nothing else is."""
    for fragment, n in planted.items():
        assert count_reason(disc.quarantined, fragment) == n, (fragment, [d.reason for d in disc.quarantined])
    assert len(disc.quarantined) == sum(planted.values()), [d.reason for d in disc.quarantined]


def rewrite_csv(path: Path, *, drop_column: str | None = None, edit=None) -> None:
    """Rewrite a CSV without one column, or with edit(row: dict) applied to every row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if drop_column is not None:
        i = header.index(drop_column)
        header = header[:i] + header[i + 1 :]
        body = [r[:i] + r[i + 1 :] for r in body]
    if edit is not None:
        new_body = []
        for r in body:
            d = dict(zip(header, r, strict=False))
            edit(d)
            new_body.append([d.get(h, "") for h in header])
        body = new_body
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)


def ingest(name: str, root: Path, out: Path, **kw) -> dict:
    from tasks.ingest import run_ingest

    summary = run_ingest(config(name, root, out, **kw))
    assert_reconciles(summary)
    return summary


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (fixture determinism)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
