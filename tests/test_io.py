"""cxrio: the atomic writers every stage uses (files, folders, parquet) and their temporary names."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrio import atomic_write_parquet


def test_atomic_parquet_writes_arrow_and_polars_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    atomic_write_parquet(path, pa.table({"a": [1, 2]}))
    assert pq.read_table(path).column("a").to_pylist() == [1, 2]
    atomic_write_parquet(path, pl.DataFrame({"a": [3]}))
    assert pl.read_parquet(path)["a"].to_list() == [3]

    class Broken:
        def write_parquet(self, tmp):
            open(tmp, "wb").write(b"PAR1 partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_parquet(path, Broken())
    assert pl.read_parquet(path)["a"].to_list() == [3]  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]  # no temporary left behind


def test_atomic_path_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    """The one atomic-write helper (the streamed LLaVA export writes through it too)."""
    from cxrio import atomic_path

    target = tmp_path / "d" / "x.json"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_temporary_names_are_unique_and_outputs_keep_plain_permissions(tmp_path):
    """Two writers of one target (threads, ranks) never share a temporary name; what lands has the mode a plain
    write gives it (mkstemp/mkdtemp alone would leave 0600/0700)."""
    import os

    from cxrio import atomic_dir, atomic_path, is_temp

    target = tmp_path / "x.bin"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and is_temp(a) and is_temp(b) and a.parent == target.parent
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the outer block ends last
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("1")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.bin"]


def test_atomic_dir_replaces_keeps_or_refuses_an_existing_folder_and_leaves_nothing_on_error(tmp_path):
    from cxrio import atomic_dir

    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "a").write_text("partial")
        raise RuntimeError("killed mid-save")
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with atomic_dir(target) as d:  # replace (default): the new folder, whole
        (d / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with atomic_dir(target, if_exists="keep") as d:  # another rank saved it first: its copy stays
        (d / "c").write_text("late")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(FileExistsError), atomic_dir(target, if_exists="fail") as d:
        (d / "c").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from cxrio import clean_stale_temps, retire

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale_file = tmp_path / f".x.json.abc123.tmp-{dead}"
    stale_dir = tmp_path / f".ckpt.k9q.tmp-{dead}"
    live = tmp_path / f".y.json.def456.tmp-{os.getpid()}"
    stale_file.write_text("partial")
    stale_dir.mkdir()
    live.write_text("in progress")
    (tmp_path / "keep.json").write_text("{}")
    # what the version before cxrio left and cleaned itself: a retired shard set, a half-written shard
    legacy = [tmp_path / f".retired-{dead}", tmp_path / ".train-00000-of-00002.tar.partial"]
    legacy[0].mkdir()
    legacy[1].write_bytes(b"partial")
    (tmp_path / f".retired-{os.getpid()}").mkdir()  # live: kept
    assert clean_stale_temps(tmp_path) == sorted([stale_dir, stale_file, *legacy])
    (tmp_path / f".retired-{os.getpid()}").rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "keep.json"])
    (tmp_path / "set").mkdir()
    retire([tmp_path / "keep.json", tmp_path / "set"], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [live.name]



@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_a_folder_never_leaves_the_target_missing_when_the_new_one_cannot_go_in(
        tmp_path, monkeypatch, exchange):
    """"replace" swaps the new folder in (one rename exchange, Linux): moving the old folder aside and then
    failing to rename the new one in used to leave no folder at the target (a crash there lost the last
    complete checkpoint) and the old one in a temporary folder. Without the exchange (another system or file
    system), the old folder is put back."""
    import os
    from pathlib import Path

    import cxrio
    from cxrio import atomic_dir

    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a").write_text("old")
    real_rename = os.rename

    def failing_rename(src, dst, *a, **k):  # the new folder (not the old one, put back) cannot go in
        if Path(dst) == target and ".old." not in str(src):
            raise OSError(5, "I/O error")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(cxrio.os, "rename", failing_rename)
    if not exchange:
        monkeypatch.setattr(cxrio, "_exchange", lambda a, b: False, raising=False)
    elif not cxrio._exchange_supported(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    try:
        with atomic_dir(target) as d:
            (d / "b").write_text("new")
    except OSError:
        assert not exchange
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing left aside
    assert sorted(p.name for p in target.iterdir()) == (["b"] if exchange else ["a"])


def test_the_umask_is_read_without_setting_it(monkeypatch):
    """os.umask can only read the mask by setting another one, which for that moment gives files created by
    other threads (a pool writing images) the wrong mode; Linux shows it in /proc/self/status."""
    import os

    import cxrio

    mask = os.umask(0o022)
    os.umask(mask)

    def setting(_):
        raise AssertionError("the umask was changed to read it")

    monkeypatch.setattr(cxrio.os, "umask", setting)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc here")
    assert cxrio._read_umask() == mask


def test_atomic_write_bytes_keeps_plain_permissions_and_leaves_nothing_behind_on_failure(tmp_path):
    """atomic_write_bytes writes through mkstemp's own descriptor (issue 28): the file lands with a plain write's
    mode, and a failed write leaves the old file, no temporary and no open descriptor."""
    import os

    from cxrio import atomic_write_bytes

    target = tmp_path / "sub" / "x.jpg"
    atomic_write_bytes(target, b"old")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"old" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    fds = len(os.listdir("/proc/self/fd"))
    for bad in (object(), "text, not bytes"):  # the write itself raises
        with pytest.raises(TypeError):
            atomic_write_bytes(target, bad)
    with pytest.raises(IsADirectoryError):  # the rename raises: a folder stands at the target
        atomic_write_bytes(tmp_path, b"x")
    assert len(os.listdir("/proc/self/fd")) == fds
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["x.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name != "sub"]


def test_a_film_on_a_network_or_fuse_mount_is_read_not_mapped(tmp_path, monkeypatch):
    """A mapped page that fails to load (a network or FUSE mount: NFS, gcsfuse) kills the reader with SIGBUS,
    where read() raises OSError and ingest quarantines one file: only local file systems are mapped."""
    import mmap

    import cxrio

    film = tmp_path / "film.dcm"
    film.write_bytes(b"\x00" * 4096)
    assert cxrio.file_system(film.stat().st_dev) in cxrio.LOCAL_FILE_SYSTEMS  # the test's own disk is local
    assert isinstance(cxrio.read_mapped(film), mmap.mmap)
    for remote in ("nfs4", "fuse.gcsfuse", "cifs", None):  # None: the type could not be told
        monkeypatch.setattr(cxrio, "file_system", lambda dev, fs=remote: fs)
        got = cxrio.read_mapped(film)
        assert isinstance(got, bytes) and got == film.read_bytes(), remote


def test_a_scratch_folder_is_removed_after_an_error_and_named_as_a_temporary(tmp_path):
    import cxrio

    with pytest.raises(RuntimeError), cxrio.scratch_dir(tmp_path, "samples") as spill:
        (spill / "part.parquet").write_bytes(b"x")
        assert cxrio.is_temp(spill)  # a killed run's is found by clean_stale_temps
        raise RuntimeError
    assert not list(tmp_path.iterdir())
