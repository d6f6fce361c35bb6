"""Scale-out and deployments: ingest on a local multi-process Dask cluster gives the same outputs as the
default runner; prefect.yaml's deployments register against the test server with `prefect deploy --all`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    return str(get_client().api_url)


def _outputs(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    import polars as pl

    manifest = pl.read_parquet(out / "manifest.parquet").sort("image_key").to_dicts()
    images = {
        str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "images").rglob("*")) if p.is_file()
    }
    return manifest, images


@pytest.mark.slow
def test_dask_runner_gives_the_same_ingest_outputs(prefect_server, mimic_small, tmp_path, monkeypatch):
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from flows.ingest import run_ingest_flow
    from flows.runners import dask_runner
    from schemas.config import ImageConfig, IngestConfig

    monkeypatch.setenv("PREFECT_API_URL", _api_url())  # Dask worker processes report to the test server
    cfg = IngestConfig(
        root=mimic_small, out=tmp_path / "pool", workers=1, batch_size=4, image=ImageConfig(size=48)
    )
    base = run_ingest_flow(cfg)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        runner = dask_runner(cluster.scheduler_address)
        assert isinstance(runner, DaskTaskRunner)
        dcfg = cfg.model_copy(update={"out": tmp_path / "dask"})
        on_dask = run_ingest_flow(dcfg, task_runner=runner)
        worker_pids = set(cluster.workers)
    assert len(worker_pids) == 2
    assert base["decoded"] > 1 and on_dask["decoded"] == base["decoded"]
    for k in ("found", "kept", "filtered", "quarantined", "filtered_by_reason", "quarantined_by_reason"):
        assert on_dask[k] == base[k], k
    m1, i1 = _outputs(cfg.out)
    m2, i2 = _outputs(dcfg.out)
    assert m1 == m2 and i1 == i2 and len(i1) > 0


def test_pipeline_dask_address_selects_the_dask_runner(tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.runners import runner_for
    from schemas.pipeline import load_pipeline_config
    from tasks.plan import stage_configs

    cfg = load_pipeline_config(REPO / "configs/demo.yaml", {"dask_address": "tcp://10.0.0.5:8786",
                                                            "out": str(tmp_path)})
    runner = runner_for(stage_configs(cfg).ingest)
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.5:8786"
    local = stage_configs(cfg).ingest.model_copy(update={"dask_address": None})
    assert not isinstance(runner_for(local), DaskTaskRunner)


@pytest.mark.slow
def test_prefect_yaml_deployments_register(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def pools():
        async with get_client() as client:
            for name in ("default", "gpu"):
                try:
                    await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                except Exception as exc:  # already created by an earlier test in the session
                    if "already exists" not in str(exc).lower() and "409" not in str(exc):
                        raise

    run_coro_as_sync(pools())
    env = {**os.environ, "PREFECT_API_URL": _api_url(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = Path(sys.executable).with_name("prefect")
    res = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    async def read():
        async with get_client() as client:
            deps = await client.read_deployments()
            flows = {f.id: f.name for f in await client.read_flows()}
            autos = await client.read_automations()
            return deps, flows, autos

    deps, flows, autos = run_coro_as_sync(read())
    by_name = {f"{flows[d.flow_id]}/{d.name}": d for d in deps}
    assert {
        "ingest/nightly",
        "structure/structure",
        "train/train-gpu",
        "encoder/encoder-gpu",
        "evaluate/after-train",
        "pipeline/pipeline",
        "ablate/ablate",
    } <= set(by_name)
    nightly = by_name["ingest/nightly"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    train = by_name["train/train-gpu"]
    assert train.work_pool_name == "gpu"
    limit = (
        train.global_concurrency_limit.limit if train.global_concurrency_limit else train.concurrency_limit
    )
    assert limit == 1
    trigger = [
        a
        for a in autos
        if a.actions and getattr(a.actions[0], "deployment_id", None) == by_name["evaluate/after-train"].id
    ]
    assert trigger, "evaluate has no deployment trigger"
    assert "prefect.flow-run.Completed" in trigger[0].trigger.expect
    related = trigger[0].trigger.match_related
    related = related if isinstance(related, list) else [related]
    # both related resources must match: the flow `train` and its deployment `train-gpu`, never the encoder's
    assert sorted(
        (r.get("prefect.resource.role"), r.get("prefect.resource.name"))
        for r in (getattr(x, "root", x) for x in related)
    ) == [("deployment", "train-gpu"), ("flow", "train")], "evaluate must fire for train/train-gpu runs only"


@pytest.mark.parametrize("n", [0, 1, 3])
def test_llava_export_streams_the_bytes_a_whole_json_dump_writes(tmp_path, n):
    """The export writes a split's records one at a time (never the whole list or its text in memory at
    700K images); the file must be what json.dumps of the whole list writes, NaN labels and non-ASCII too."""
    import json
    import math

    from tasks.export_llava import _write_json_list

    records = [
        {
            "id": f"s{i}",
            "chexpert_labels": {"Edema": math.nan, "Pneumonia": i},
            "nested": [[], {}, [1, {"a": None}]],
            "conversations": [{"from": "gpt", "value": "Épanchement pleural.\nNo change."}],
        }
        for i in range(n)
    ]
    path = tmp_path / "train.json"
    assert _write_json_list(path, iter(records), nan_labels=True) == n
    assert path.read_bytes() == json.dumps(records, ensure_ascii=False, indent=1, allow_nan=True).encode()
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"]  # no temporary file left behind
