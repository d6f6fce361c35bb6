"""Ingest at chunk grain: one task run per chunk on Prefect, progress from the chunks' files, part files
assembled into the same manifest, the per-run folder removed afterwards."""

from __future__ import annotations

import asyncio

import polars as pl
import pytest

from schemas.config import ImageConfig, IngestConfig
from tasks.ingest import RUNS, discover, plan_chunks, run_ingest


def test_pool_run_reports_progress_to_the_total_and_cleans_its_run_folder(tmp_path, mimic_small):
    seen = []
    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=2, batch_size=1
    )
    summary = run_ingest(cfg, progress=lambda done, total: seen.append((done, total)))
    total = len(discover(cfg).candidates)
    assert seen and seen[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))  # never goes backwards
    assert not any((tmp_path / "o" / RUNS).iterdir())
    manifest = pl.read_parquet(tmp_path / "o" / "manifest.parquet")
    assert manifest.height == summary["kept"] and manifest["image_key"].is_sorted()
    # The rerun reads its chunk's cached hashes and decodes nothing.
    again = run_ingest(cfg)
    assert again["decoded"] == 0 and again["reused"] == summary["decoded"]


@pytest.mark.slow
def test_flow_makes_one_task_run_per_chunk(tmp_path, mimic_small, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.ingest import ingest_flow
    from flows.runners import runner_for

    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=2, batch_size=1
    )
    state = ingest_flow.with_options(task_runner=runner_for(cfg))(cfg, return_state=True)
    summary = state.result()
    bare = run_ingest(cfg.model_copy(update={"out": tmp_path / "bare"}))
    assert {k: summary[k] for k in ("found", "kept", "quarantined")} == {
        k: bare[k] for k in ("found", "kept", "quarantined")
    }

    async def task_runs():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )

    chunk_runs = [t for t in asyncio.run(task_runs()) if t.name.startswith("process-chunk")]
    candidates = len(discover(cfg).candidates)
    assert len(chunk_runs) == len(plan_chunks(candidates, 2, 1)) < candidates  # not one per image or batch
    a = pl.read_parquet(tmp_path / "o" / "manifest.parquet").drop("preprocess")
    b = pl.read_parquet(tmp_path / "bare" / "manifest.parquet").drop("preprocess")
    assert a.equals(b)


def test_a_failed_chunk_leaves_no_part_files_behind(tmp_path, mimic_small, monkeypatch):
    """A chunk that fails (a worker killed, a full disk) fails the run; the chunks that did finish have written
    row/hash parts, which must not stay in OUT/.cache/runs (nothing else ever removes them)."""
    import tasks.ingest as engine

    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=1, batch_size=1
    )
    real = engine.process_chunk

    def failing(index, chunk, cfg, run_dir):
        if index == 1:
            raise OSError(28, "No space left on device")
        return real(index, chunk, cfg, run_dir)

    monkeypatch.setattr(engine, "process_chunk", failing)
    monkeypatch.setattr(engine, "CHUNKS_PER_WORKER", 3)  # several chunks with one worker
    with pytest.raises(OSError, match="No space left"):
        run_ingest(cfg)
    assert not list((tmp_path / "o" / RUNS).glob("*/*"))


def test_a_run_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path, mimic_small):
    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=1, batch_size=4
    )
    stale = tmp_path / "o" / RUNS / "0123abcd"
    stale.mkdir(parents=True)
    (stale / "rows-000000.parquet").write_bytes(b"part of a run that was killed")
    run_ingest(cfg)
    assert not any((tmp_path / "o" / RUNS).iterdir())


def test_the_plan_is_written_once_and_runs_on_any_runner(tmp_path, mimic_small):
    """tasks.ingest.ingest is the one plan; a runner only says where steps and chunks run. A runner that runs
    the chunks in reverse order (as a cluster may finish them) gives the local pool's manifest."""
    from tasks.ingest import PoolRunner, ingest

    class Reversed(PoolRunner):
        def __init__(self):
            super().__init__()
            self.steps, self.chunks = [], 0

        def step(self, name, fn, *args):
            self.steps.append(name)
            return fn(*args)

        def map_chunks(self, fn, calls, run_dir, total):
            self.chunks = len(calls)
            done = {call[0]: fn(*call) for call in reversed(calls)}
            return [done[call[0]] for call in calls]

    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "r", image=ImageConfig(size=32), workers=2, batch_size=1
    )
    runner = Reversed()
    summary = ingest(cfg, runner)
    assert runner.steps == ["discover", "assemble"] and runner.chunks > 1
    bare = run_ingest(cfg.model_copy(update={"out": tmp_path / "pool"}))
    assert {k: summary[k] for k in ("found", "kept", "quarantined", "decoded")} == {
        k: bare[k] for k in ("found", "kept", "quarantined", "decoded")
    }
    assert pl.read_parquet(tmp_path / "r" / "manifest.parquet").equals(
        pl.read_parquet(tmp_path / "pool" / "manifest.parquet")
    )


def test_the_pool_runs_from_a_script_read_on_stdin(tmp_path, mimic_small):
    """Pool workers fork from a fork server and would re-import a __main__ that has no file ('<stdin>')."""
    import os
    import subprocess
    import sys

    script = (
        "from schemas.config import ImageConfig, IngestConfig\n"
        "from tasks.ingest import run_ingest\n"
        f"s = run_ingest(IngestConfig(root={str(mimic_small)!r}, out={str(tmp_path / 'o')!r}, workers=2,"
        " batch_size=1, image=ImageConfig(size=32)))\n"
        "print('kept', s['kept'])\n"
    )
    res = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, env=os.environ.copy()
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "kept" in res.stdout


def _slow_chunk(index, _chunk, _cfg, run_dir):
    """A chunk that marks its start, then takes a while (a stand-in for a few thousand images)."""
    import time
    from pathlib import Path

    (Path(run_dir) / f"started-{index}").touch()
    time.sleep(0.3)
    return index


def test_an_interrupt_cancels_the_chunks_not_yet_started(tmp_path):
    """Ctrl-C (here: the progress callback raising it) stops the run; the queued chunks are not run first."""
    from types import SimpleNamespace

    from tasks.ingest import PoolRunner

    def interrupt(_done, _total):
        if any(tmp_path.glob("started-*")):
            raise KeyboardInterrupt

    calls = [(i, None, SimpleNamespace(workers=2), tmp_path) for i in range(12)]
    with pytest.raises(KeyboardInterrupt):
        PoolRunner(progress=interrupt).map_chunks(_slow_chunk, calls, tmp_path, len(calls))
    assert len(list(tmp_path.glob("started-*"))) < len(calls)


def _dying_chunk(index, _chunk, _cfg, run_dir):
    """A worker killed mid-chunk (the kernel's OOM killer, a kill -9)."""
    import os

    if index == 0:
        os._exit(137)
    return index


def test_a_worker_killed_mid_run_is_one_line_not_a_traceback(tmp_path, mimic_small):
    """The plan turns a pool that lost a worker (BrokenProcessPool: the local pool and Prefect's process pool
    both raise it) into one line with a hint, and leaves no part files."""
    from cxrflow_cli.user_errors import user_error
    from tasks.ingest import PoolRunner, ingest

    class Dying(PoolRunner):
        def map_chunks(self, fn, calls, run_dir, total):
            return super().map_chunks(_dying_chunk, calls, run_dir, total)

    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "o", image=ImageConfig(size=32), workers=2, batch_size=1
    )
    with pytest.raises(Exception) as info:
        ingest(cfg, Dying())
    message, hint = user_error(info.value)
    assert "worker" in message and "--workers" in hint
    assert not list((tmp_path / "o" / RUNS).glob("*/*"))
