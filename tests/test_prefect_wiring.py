"""The Prefect wiring of issue 24: one task wrapper with retries where the world is flaky, one runner choice
(Dask for mixtures too), Prefect's private attributes pinned to the installed version."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_prefect_private_attributes_match_the_installed_version():
    """flows/runners.py reaches into ThreadPoolTaskRunner and DaskTaskRunner; a Prefect upgrade must revisit
    it (this test then names the module)."""
    import prefect
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import PREFECT_VERSION

    assert prefect.__version__ == PREFECT_VERSION, "Prefect changed: recheck the private attributes in flows/runners.py"
    assert ThreadPoolTaskRunner(max_workers=2)._max_workers == 2
    assert type(ThreadPoolTaskRunner(max_workers=2).duplicate()) is ThreadPoolTaskRunner  # subclasses duplicate
    assert "_client" in vars(DaskTaskRunner(address="tcp://127.0.0.1:1"))


def test_only_flows_runners_touches_prefect_privates():
    private = ("._executor", "._max_workers", "._client")
    hits = [str(p.relative_to(REPO)) for p in (REPO / "flows").rglob("*.py")
            if any(a in p.read_text() or f'"{a[1:]}"' in p.read_text() for a in private)]
    assert hits == ["flows/runners.py"], hits


def test_retries_are_declared_where_the_world_is_flaky(tmp_path):
    from flows.ingest import PrefectRunner
    from flows.structure import structure_llm_task, structure_task
    from flows.tasking import FLAKY_RETRIES, _run_deployment, as_task
    from schemas.config import IngestConfig

    assert structure_llm_task.retries == FLAKY_RETRIES["retries"] == 3 and structure_task.retries == 0
    assert as_task(_run_deployment, "dispatch", flaky=True).retries == 3
    delays = as_task(_run_deployment, "dispatch", flaky=True).retry_delay_seconds
    assert list(delays) == [10, 20, 40]  # exponential backoff
    assert PrefectRunner(IngestConfig(source="dicomweb", root=tmp_path, out=tmp_path)).remote
    assert not PrefectRunner(IngestConfig(source="mimic-cxr", root=tmp_path, out=tmp_path)).remote


def test_dask_address_reaches_every_source_of_a_mixture(tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.runners import runner_for
    from schemas.pipeline import load_ablation_spec
    from tasks.plan import stage_configs

    spec = load_ablation_spec(REPO / "configs/ablations/source-mixture.yaml",
                              {"dask_address": "tcp://10.0.0.5:8786", "out": str(tmp_path)})
    mix = stage_configs(spec.variant_config("mimic-chexpert")).mixture
    for s in mix.sources:
        runner = runner_for(mix.ingest_config(s))
        assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.5:8786"


def test_a_transient_failure_is_retried(prefect_server):
    from prefect import flow

    from flows.tasking import as_task

    calls = []

    def fetch() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("server restarting")
        return "ok"

    @flow
    def run() -> str:
        return as_task(fetch, "fetch", flaky=True).with_options(retry_delay_seconds=0)()

    assert run() == "ok" and len(calls) == 2


def test_cli_flow_runs_skip_heartbeats_and_deployment_runs_keep_them(tmp_path, mimic_small, prefect_server,
                                                                    monkeypatch):
    """The CLI runs its flows without flow-run heartbeats (Prefect joins the heartbeat thread at every flow
    run's end, up to 1 s); the deployment entrypoint (flows/ingest.py:ingest_flow, run by workers) keeps them,
    and so does a run where the user exported an interval. Read where the engine reads it: each flow run's
    heartbeat context."""
    import prefect.flow_engine as fe

    from cxrflow_cli._common import run_flow
    from flows.ingest import ingest_flow, run_ingest_flow
    from flows.runners import HEARTBEAT_ENV, cli_run_settings, runner_for
    from schemas.config import ImageConfig, IngestConfig

    seen: list = []
    original = fe._send_heartbeats

    def spy(engine, *args, **kwargs):
        seen.append(engine.heartbeat_seconds)
        return original(engine, *args, **kwargs)

    monkeypatch.setattr(fe, "_send_heartbeats", spy)
    for name in HEARTBEAT_ENV:
        monkeypatch.delenv(name, raising=False)
    cfg = IngestConfig(root=mimic_small, out=tmp_path / "cli", image=ImageConfig(size=32), workers=1, limit=2)
    run_flow(run_ingest_flow, cfg)  # as `cxrflow ingest` runs it
    ingest_flow.with_options(task_runner=runner_for(cfg))(cfg.model_copy(update={"out": tmp_path / "deployed"}))
    assert seen == [None, 180]  # Prefect's default interval where the run is not the CLI's own
    monkeypatch.setenv(HEARTBEAT_ENV[0], "60")
    from prefect.settings import get_current_settings

    with cli_run_settings():
        assert get_current_settings().flows.heartbeat_frequency == 180  # left as configured: not turned off


def _where() -> tuple[int, bool]:
    import os
    import sys

    return os.getpid(), "prefect" in sys.modules


def test_local_chunk_task_runs_hand_their_work_to_a_pool_without_prefect(tmp_path, prefect_server):
    """The local runner's task runs (one per chunk, in the UI) run in the flow's process; their work runs in a
    pool worker that never imported Prefect (no per-worker import, context hydration or API clients)."""
    import os

    from prefect import flow

    from flows.runners import LocalPoolTaskRunner, on_pool, runner_for
    from flows.tasking import as_task
    from schemas.config import IngestConfig

    @flow
    def probe() -> list:
        futures = [as_task(on_pool, "probe-chunk").submit(_where, ()) for _ in range(2)]
        return [f.result() for f in futures]

    runner = runner_for(IngestConfig(root=tmp_path, out=tmp_path / "o", workers=2))
    assert isinstance(runner, LocalPoolTaskRunner)
    for pid, prefect_loaded in probe.with_options(task_runner=runner)():
        assert pid != os.getpid() and not prefect_loaded
    assert on_pool(_where, ()) == (os.getpid(), True)  # outside a flow on the pool (a Dask task): right here


def test_every_command_that_runs_a_flow_here_runs_it_without_heartbeats():
    """The end of each flow run joins Prefect's heartbeat thread (up to 1 s; the demo's ablation is a dozen flow
    runs): every CLI command that starts a flow in its own process does so through cxrflow_cli/_common.py run_flow
    (inside cli_run_settings): what it imports from a flow module it never calls itself."""
    import ast
    from pathlib import Path

    helpers = {"flows.ui", "flows.tasking", "flows.progress", "flows.runners", "flows.reruns"}
    missing = []
    for path in sorted(Path("cxrflow_cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        starters = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("flows.") and node.module not in helpers
                    for alias in node.names}
        called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name)}
        if starters & called or (starters and "run_flow" not in called):
            missing.append(f"{path}: starts {sorted(starters & called or starters)} without cli_run_settings")
    assert not missing, "\n".join(missing)


def test_a_heartbeat_interval_set_in_the_prefect_profile_is_kept(tmp_path):
    """`prefect config set PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60` writes the profile, not the environment: a CLI
    run keeps that interval as it keeps an exported one (a fresh process: settings load from the profile)."""
    import os
    import subprocess
    import sys

    from flows.runners import HEARTBEAT_ENV

    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "default"\n\n[profiles.default]\nPREFECT_FLOWS_HEARTBEAT_FREQUENCY = "60"\n')
    env = {k: v for k, v in os.environ.items() if k not in HEARTBEAT_ENV}
    env.update(PREFECT_PROFILES_PATH=str(profiles), PREFECT_HOME=str(tmp_path / "home"))
    probe = ("from flows.runners import cli_run_settings\n"
             "from prefect.settings import get_current_settings\n"
             "with cli_run_settings():\n"
             "    print(get_current_settings().flows.heartbeat_frequency)\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["60"]
