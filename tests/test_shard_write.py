"""Shard writing: byte-identical output, limits, crash safety + resume, dot-free keys, read-back with
webdataset and wids, indexes and the LLaVA export. No GX here: samples come from assemble_samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest

from cxrio import is_temp
from fixtures.shard_manifest import default_rows, write_dataset
from schemas.labels import CHEXPERT_LABELS
from schemas.shards import SPLITS, ShardConfig, ValidateConfig
from tasks.export_llava import export_llava
from tasks.shard import PLAN_FILE, ShardKeyError, check_key, write_shards
from tasks.shard_index import (
    verify_shards,
    write_dataset_card,
    write_shard_map,
    write_summary,
    write_wids_index,
)
from tasks.validate import ROW_INDEX, assemble_samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 rows; every second train row also has an LLM-structured version of its findings."""
    rows = default_rows(24)
    reports = [
        {
            "image_key": r["image_key"],
            "findings": "Structured: " + r["findings"],
            "indication": None,
            "operation": "structure",
            "backend": "openai-compatible",
            "model": "tiny",
        }
        for i, r in enumerate(rows)
        if i % 2 == 0
    ]
    data = write_dataset(tmp_path_factory.mktemp("data"), rows, reports=reports)
    samples, filtered = assemble_samples(data, ValidateConfig())
    assert not filtered
    accepted = samples.drop(ROW_INDEX)
    accepted.write_parquet(data / "accepted.parquet")
    return data, accepted


def _tars(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("data/*.tar"))}


def _write_all(accepted, data, out, cfg):
    infos = write_shards(accepted, data, out, cfg)
    for s in SPLITS:
        write_wids_index(out, s, infos)
    write_shard_map(out, infos, accepted)
    write_dataset_card(out, accepted)  # as the flow's index task does
    return infos


CFG = ShardConfig(max_samples=4)


def test_byte_identical_across_runs_and_dirs(dataset, tmp_path):
    data, accepted = dataset
    a = _write_all(accepted, data, tmp_path / "a", CFG)
    shuffled = accepted.sample(fraction=1.0, shuffle=True, seed=3)
    b = _write_all(shuffled, data, tmp_path / "b", ShardConfig(max_samples=4, workers=3))
    ta, tb = _tars(tmp_path / "a"), _tars(tmp_path / "b")
    assert ta == tb and len(ta) == len(a) == len(b)
    assert (tmp_path / "a" / "train.index.json").read_bytes() == (
        tmp_path / "b" / "train.index.json"
    ).read_bytes()
    # Rerun in place: nothing rewritten, same bytes.
    again = write_shards(accepted, data, tmp_path / "a", CFG)
    assert all(i.reused for i in again) and _tars(tmp_path / "a") == ta
    with tarfile.open(sorted((tmp_path / "a" / "data").glob("train-00000-of-*.tar"))[0]) as tf:
        members = tf.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.mode, m.uname) for m in members} == {(0, 0, 0, 0o444, "cxrflow")}
    names = [m.name for m in members]
    assert names[:3] == [f"{names[0].split('.')[0]}.{ext}" for ext in ("jpg", "json", "txt")]


def test_limits_split_into_non_empty_shards(dataset, tmp_path):
    data, accepted = dataset
    infos = _write_all(accepted, data, tmp_path / "s", CFG)
    n_train = accepted.filter(pl.col("split") == "train").height
    train = [i for i in infos if i.split == "train"]
    assert [i.name for i in train] == [f"data/train-{k:05d}-of-{len(train):05d}.tar" for k in range(len(train))]
    assert sum(i.nsamples for i in train) == n_train and max(i.nsamples for i in train) == 4
    assert all(i.nsamples > 0 for i in infos)
    # Byte limit: each sample is ~3 KB of tar blocks, so 8 KB allows two samples per shard.
    by_bytes = write_shards(accepted, data, tmp_path / "b", ShardConfig(max_bytes=8192))
    assert all(0 < i.nsamples <= 2 for i in by_bytes)
    assert sum(i.nsamples for i in by_bytes) == accepted.height
    for i in by_bytes:
        assert (tmp_path / "b" / i.name).stat().st_size == i.filesize
    # A changed limit replaces the old set instead of mixing with it.
    write_shards(accepted, data, tmp_path / "b", ShardConfig(max_samples=100))
    assert sorted(p.name for p in (tmp_path / "b").glob("data/*.tar")) == [
        "test-00000-of-00001.tar",
        "train-00000-of-00001.tar",
        "validation-00000-of-00001.tar",
    ]


def test_killed_mid_shard_leaves_no_partial_and_rerun_completes(dataset, tmp_path):
    data, accepted = dataset
    ref = tmp_path / "ref"
    _write_all(accepted, data, ref, CFG)
    out = tmp_path / "out"
    code = (
        "import sys, polars as pl; from pathlib import Path; from schemas.shards import ShardConfig; "
        "from tasks.shard import write_shards; "
        f"write_shards(pl.read_parquet('{data}/accepted.parquet'), Path('{data}'), Path('{out}'), "
        "ShardConfig(max_samples=4, workers=1), kill_after_samples=6)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    visible = _tars(out)
    first = sorted(p.name for p in (ref / "data").glob("train-00000-of-*.tar"))[0]
    assert list(visible) == [first]  # shard 1 was half-written when the process died
    assert visible[first] == (ref / "data" / first).read_bytes()
    assert [p for p in (out / "data").iterdir() if is_temp(p)]  # the half-written one, under a temporary name
    infos = _write_all(accepted, data, out, CFG)
    assert [i.reused for i in infos][:2] == [True, False]
    assert _tars(out) == _tars(ref)
    assert not [p for p in (out / "data").iterdir() if is_temp(p)]
    assert json.loads((out / PLAN_FILE).read_text())["shards"].keys() == {i.name for i in infos}


def test_keys_dot_free_and_read_back_with_webdataset_and_wids(dataset, tmp_path):
    data, accepted = dataset
    out = tmp_path / "s"
    infos = _write_all(accepted, data, out, CFG)
    expected = {s: accepted.filter(pl.col("split") == s).height for s in SPLITS}
    report = verify_shards(out, expected)
    assert report["train"] == {
        "expected": expected["train"],
        "webdataset": expected["train"],
        "wids": expected["train"],
    }
    for tar in out.glob("data/*.tar"):
        with tarfile.open(tar) as tf:
            for name in tf.getnames():
                key, ext = name.split(".", 1)
                assert ext in {"jpg", "json", "txt"}
    # Member contract: .txt is the primary findings; .json carries every manifest field + targets.
    import webdataset as wds

    first = sorted(out.glob("data/train-00000-of-*.tar"))[0]
    sample = next(iter(wds.WebDataset(str(first), shardshuffle=False)))
    meta = json.loads(sample["json"])
    row = accepted.filter(pl.col("image_key") == sample["__key__"]).row(0, named=True)
    assert sample["txt"].decode() == row["findings"]
    assert [t["method"] for t in meta["targets"]] == ["rule-based", "openai-compatible:tiny"]
    assert meta["image_key"] == sample["__key__"] and meta["subject_id"] == row["subject_id"]
    assert sample["jpg"] == (data / row["image_path"]).read_bytes()
    smap = pl.read_parquet(out / "shards.parquet")
    assert smap.height == accepted.height and smap["image_key"].n_unique() == accepted.height
    assert set(smap["shard"]) == {i.name for i in infos}
    # A corrupted count is caught.
    with pytest.raises(RuntimeError, match="expected 99 samples"):
        verify_shards(out, dict(expected, train=99))


def test_bad_keys_rejected():
    for key in ("a.b", "a/b", "", "_meta", "a b", "k" * 91):
        with pytest.raises(ShardKeyError):
            check_key(key)
    check_key("mimic-cxr_0a1b2c-3d4e")


def test_summary_reconciles(dataset, tmp_path):
    data, accepted = dataset
    infos = write_shards(accepted, data, tmp_path / "s", CFG)
    counts = {
        "ingest_found": 30,
        "ingest_filtered": 4,
        "ingest_quarantined": 1,
        "filtered": 0,
        "quarantined": 1,
    }
    summary = write_summary(tmp_path / "s", infos, counts)
    assert summary["samples"] == accepted.height == 24
    assert summary["reconciliation"] == {
        "found": 30,
        "sharded": 24,
        "filtered": 4,
        "quarantined": 2,
        "balanced": True,
    }
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["shards"] == len(infos)
    counts["ingest_found"] = 31
    assert not write_summary(tmp_path / "s", infos, counts)["reconciliation"]["balanced"]


def test_llava_export_format(dataset, tmp_path):
    data, accepted = dataset
    counts = export_llava(accepted, tmp_path)
    n_llm = accepted.filter(pl.col("targets_json").str.contains("openai-compatible")).height
    assert sum(counts.values()) == accepted.height + n_llm  # one record per findings version
    text = (tmp_path / "llava" / "train.json").read_text()
    recs = json.loads(text, parse_constant=_reject)  # strict: no NaN / Infinity
    r = recs[0]
    assert set(r) >= {
        "id",
        "image",
        "generate_method",
        "reason",
        "impression",
        "indication",
        "history",
        "view",
        "orientation",
        "chexpert_labels",
        "conversations",
    }
    assert list(r["chexpert_labels"]) == list(CHEXPERT_LABELS)
    assert any(v is None for rec in recs for v in rec["chexpert_labels"].values())  # null: "not mentioned"
    human, gpt = r["conversations"]
    assert human["from"] == "human" and human["value"].startswith("<image>\n")
    assert gpt["from"] == "gpt" and gpt["value"]
    with_ind = [x for x in recs if x["indication"]]
    assert with_ind and with_ind[0]["indication"] in with_ind[0]["conversations"][0]["value"]
    assert {x["generate_method"] for x in recs} == {"rule-based", "openai-compatible:tiny"}


def _reject(token: str):
    raise ValueError(f"not strict JSON: {token}")


def test_llava_image_paths_resolve_from_the_json_folder_or_an_absolute_root(dataset, tmp_path):
    data, accepted = dataset
    export_llava(accepted, tmp_path / "shards", data_dir=data)
    folder = tmp_path / "shards" / "llava"
    assert sorted(p.name for p in folder.iterdir()) == ["test.json", "train.json", "validation.json"]
    for split in ("train", "validation", "test"):
        for rec in json.loads((folder / f"{split}.json").read_text(), parse_constant=_reject):
            assert not Path(rec["image"]).is_absolute() and (folder / rec["image"]).is_file()
    export_llava(accepted, tmp_path / "abs", data_dir=data, image_root=Path("/mnt/cxr"))
    rec = json.loads((tmp_path / "abs" / "llava" / "train.json").read_text())[0]
    assert rec["image"].startswith("/mnt/cxr/") and (data / rec["image"][len("/mnt/cxr/"):]).is_file()
    # The release's format on request: bare NaN for unmentioned labels.
    export_llava(accepted, tmp_path / "nan", data_dir=data, nan_labels=True)
    raw = (tmp_path / "nan" / "llava" / "train.json").read_text()
    assert "NaN" in raw and "null," not in raw.split('"chexpert_labels"')[1].split("}")[0]


def _published(out: Path) -> dict[str, bytes]:
    """Every file the shard stage publishes (tars, wids indexes, shard map, card, LLaVA JSON), by path."""
    names = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name != PLAN_FILE]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in names}


def test_shard_stage_from_the_accepted_file_in_tiny_batches_gives_the_whole_frame_outputs(
    dataset, tmp_path, monkeypatch
):
    """The shard stage and the LLaVA export read validation's accepted FILE a few rows at a time (an
    unsorted file too: the key order is planned from the key column, rows are read back window by window),
    and never the file whole: the tars, indexes, shard map, card and LLaVA JSON are byte for byte those
    written from the whole frame."""

    data, accepted = dataset
    whole = tmp_path / "whole"
    _write_all(accepted, data, whole, CFG)
    export_llava(accepted, whole, data_dir=data)

    shuffled = tmp_path / "accepted.parquet"  # not in key order: windows must re-read, not hold the file
    accepted.sample(fraction=1.0, shuffle=True, seed=5).write_parquet(shuffled)
    heights = _count_batches(monkeypatch, 3)
    real_read = pl.read_parquet

    def key_columns_only(source, *args, columns=None, **kwargs):
        assert Path(source) != shuffled or set(columns or ()) <= {"split", "image_key", "image_format"}, (
            f"accepted.parquet read whole (columns {columns})"
        )
        return real_read(source, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", key_columns_only)
    streamed = tmp_path / "streamed"
    _write_all(shuffled, data, streamed, CFG)
    export_llava(shuffled, streamed, data_dir=data)
    assert heights and max(heights) == 3 and sum(heights) > 3 * accepted.height  # windows re-read the file
    got, want = _published(streamed), _published(whole)
    assert got.keys() == want.keys() and any(k.startswith("llava/") for k in got)
    assert got == want


def test_rows_at_reads_only_the_rows_asked_for_of_a_key_ordered_file(tmp_path, monkeypatch):
    """A shard's rows are read from where they lie: the writer of the last shard of a key-ordered accepted
    file decodes its own window, not every batch before it (which made the shard stage O(shards x file));
    rows come back in the order asked, an unsorted request included."""
    import tasks.accepted_rows as accepted_rows

    path = tmp_path / "accepted.parquet"
    pl.DataFrame({"image_key": [f"k{i:03d}" for i in range(60)], "n": list(range(60))}).write_parquet(path)
    decoded = _count_batches(monkeypatch, 4)
    got = [r["n"] for r in accepted_rows.rows_at(path, pl.Series([52, 53, 54, 55, 56, 57, 58, 59]))]
    assert got == list(range(52, 60))
    assert sum(decoded) <= 8, decoded  # two windows' rows, not the 52 before them
    asked = [59, 0, 31, 30, 7, 58, 1, 2, 45]
    assert [r["n"] for r in accepted_rows.rows_at(path, pl.Series(asked))] == asked
    with pytest.raises(RuntimeError, match="not found"):
        list(accepted_rows.rows_at(path, pl.Series([58, 60])))


def test_rows_at_gives_the_rows_asked_for_at_any_window(tmp_path, monkeypatch):
    """Sorted, shuffled and run-by-run requests, repeats included, at window sizes 1 to 100, from the file and
    from a frame: always exactly the rows asked for, in the order asked."""
    import random

    import tasks.accepted_rows as accepted_rows

    frame = pl.DataFrame({"n": list(range(97))})
    path = tmp_path / "accepted.parquet"
    frame.write_parquet(path, row_group_size=7)
    rng = random.Random(0)
    for _ in range(120):
        monkeypatch.setattr(accepted_rows, "BATCH_ROWS", rng.choice([1, 2, 3, 5, 8, 16, 100]))
        k = rng.randint(0, 97)
        asked = rng.sample(range(97), k)
        if rng.random() < 0.3:
            asked.sort()
        elif rng.random() < 0.5:
            start = rng.randrange(97)
            asked = [i % 97 for i in range(start, start + k)] + asked[:3]  # a run, wrapping, then repeats
        for src in (path, frame):
            assert [r["n"] for r in accepted_rows.rows_at(src, pl.Series(asked, dtype=pl.UInt32))] == asked


def _count_batches(monkeypatch, rows: int) -> list[int]:
    """accepted_rows reads `rows` rows a window; the returned list collects the height of every window read."""
    import tasks.accepted_rows as accepted_rows

    monkeypatch.setattr(accepted_rows, "BATCH_ROWS", rows)
    heights: list[int] = []
    real_batches = accepted_rows.batches

    def counting(src, columns=None, start=0):
        for b in real_batches(src, columns, start):
            heights.append(b.height)
            yield b

    monkeypatch.setattr(accepted_rows, "batches", counting)
    return heights
