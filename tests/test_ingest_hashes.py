"""Source hashes off the hot path (issue 28): the release's SHA256SUMS.txt, the (path, size, mtime) cache and the
one-pass hash give the same content addresses, so outputs are byte-identical whichever applied; a file that
disagrees with the sums file is quarantined."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from fixtures.mimic_cxr import SUMS_FILE, write_mimic_cxr, write_sha256sums
from schemas.config import ImageConfig, IngestConfig
from tasks.images import process
from tasks.ingest import run_ingest
from tasks.source_hashes import SourceHasher, parse_sums, sampled


def _cfg(root: Path, out: Path, **kw) -> IngestConfig:
    return IngestConfig(root=root, out=out, image=ImageConfig(size=48), workers=1, **kw)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output a later stage reads, byte for byte (the summary carries timings and the hash counts)."""
    names = ["manifest.parquet", "quarantine.parquet", "filtered.parquet"]
    files = {n: (out / n).read_bytes() for n in names}
    files |= {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "images").rglob("*")) if p.is_file()}
    return files


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hashes") / "mimic"
    write_mimic_cxr(root, studies=4, seed=21)  # defects included: quarantines must match too
    return root


def test_fixture_writes_physionet_sums_file(release):
    lines = (release / SUMS_FILE).read_text().splitlines()
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    listed = [line.split(" ", 1)[1] for line in lines]
    assert sorted(listed) == [f for f in files if f != SUMS_FILE]
    assert all(len(line.split(" ")[0]) == 64 and "  " not in line for line in lines)  # one space, as PhysioNet
    sums, bad = parse_sums(release / SUMS_FILE)
    assert bad == 0 and len(sums) == len(lines)


def test_parse_accepts_physionet_and_gnu_forms(tmp_path):
    h = "ab" * 32
    (tmp_path / SUMS_FILE).write_text(f"{h} files/a.dcm\n{h.upper()}  files/b c.dcm\n{h} *./files/c.dcm\nnot a line\n\n")
    sums, bad = parse_sums(tmp_path / SUMS_FILE)
    assert sums == {"files/a.dcm": h, "files/b c.dcm": h, "files/c.dcm": h} and bad == 1


def test_outputs_identical_with_and_without_sums_and_cache(release, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(release, bare)
    (bare / SUMS_FILE).unlink()

    listed = run_ingest(_cfg(release, tmp_path / "listed"))
    hashed = run_ingest(_cfg(bare, tmp_path / "hashed"))
    assert listed["decoded"] == hashed["decoded"] > 0
    assert listed["notes"]["sums_file"]["listed"] > 0 and hashed["notes"]["sums_file"] is None
    # With the sums file the addresses are read from it (a sampled few hashed); without it every file is hashed.
    counts = listed["source_hashes"]
    assert counts.get("listed", 0) > 0 and counts.get("hashed", 0) == 0
    assert counts.get("listed", 0) + counts.get("verified", 0) == hashed["source_hashes"]["hashed"]
    assert _outputs(tmp_path / "listed") == _outputs(tmp_path / "hashed")

    # Reruns: every sha256 from the (path, size, mtime) cache, nothing decoded, the same bytes.
    for root, out in ((release, "listed"), (bare, "hashed")):
        again = run_ingest(_cfg(root, tmp_path / out))
        assert again["decoded"] == 0 and set(again["source_hashes"]) == {"cached"}, again["source_hashes"]
        assert _outputs(tmp_path / out) == _outputs(tmp_path / "hashed")


def _rewrite_line(root: Path, rel: str, digest: str) -> None:
    path = root / SUMS_FILE
    lines = [f"{digest} {rel}" if line.split(" ", 1)[1] == rel else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def test_a_file_that_disagrees_with_the_sums_file_is_quarantined(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release, root)
    first = run_ingest(_cfg(root, tmp_path / "probe"))
    rels = pl.read_parquet(tmp_path / "probe" / "manifest.parquet")["source_path"].to_list()
    wrong_unsampled = next(c * 64 for c in "123456789abcdef" if not sampled(c * 64))
    wrong_sampled = "0" * 64  # in the fixed sample: checked on every first ingest
    _rewrite_line(root, rels[0], wrong_unsampled)
    _rewrite_line(root, rels[1], wrong_sampled)

    default = run_ingest(_cfg(root, tmp_path / "default"))
    q = pl.read_parquet(tmp_path / "default" / "quarantine.parquet")
    mismatched = q.filter(pl.col("reason").str.starts_with("checksum mismatch"))["source_path"].to_list()
    assert mismatched == [rels[1]]  # the unsampled wrong line is trusted without --verify-checksums
    assert default["kept"] == first["kept"] - 1 and default["found"] == first["found"]

    full = run_ingest(_cfg(root, tmp_path / "full", verify_checksums=True))
    q = pl.read_parquet(tmp_path / "full" / "quarantine.parquet")
    mismatched = q.filter(pl.col("reason").str.starts_with("checksum mismatch"))["source_path"].to_list()
    assert sorted(mismatched) == sorted(rels[:2]) and full["kept"] == first["kept"] - 2
    assert full["source_hashes"]["mismatched"] == 2
    assert full["found"] == full["kept"] + full["filtered"] + full["quarantined"]


def test_a_file_changed_after_the_sums_file_is_hashed_not_trusted(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release, root, copy_function=shutil.copy2)  # mtimes kept: files older than the sums file
    write_sha256sums(root)
    run_ingest(_cfg(root, tmp_path / "probe"))
    rel = pl.read_parquet(tmp_path / "probe" / "manifest.parquet")["source_path"][0]
    other = next(p for p in sorted(root.rglob("*.dcm")) if p.relative_to(root).as_posix() != rel)
    shutil.copyfile(other, root / rel)  # a valid film, but not the one the release lists (new mtime)
    summary = run_ingest(_cfg(root, tmp_path / "out"))
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert rel in q.filter(pl.col("reason").str.starts_with("checksum mismatch"))["source_path"].to_list()
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"]


def test_hash_and_decode_read_the_file_once(release, tmp_path):
    film = next(p for p in sorted(release.rglob("*.dcm")) if p.stat().st_size > 10_000)
    hasher = SourceHasher({}, {})
    digest, data = hasher.resolve(film, "x.dcm")
    assert data[:] == film.read_bytes() and hasher.counts == {"hashed": 1}  # data: a mapping of the file
    gone = tmp_path / "moved.dcm"  # no file at this path: the decode can only use the bytes already read
    encoded = process(gone, "dicom", ImageConfig(size=48), data=data)
    assert encoded[:3] == process(film, "dicom", ImageConfig(size=48))[:3]
