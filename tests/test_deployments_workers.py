"""prefect.yaml's deployments as an operator runs them: a real `prefect server start` on loopback (its own
PREFECT_HOME, no telemetry), `prefect deploy --all` from the repository root, and real process workers
(`prefect worker start --pool default` and `--pool gpu`). A worker runs `ingest/nightly` on a fixture and
`pipeline/pipeline` with parameters pointing at one; `train/train-gpu` on the gpu pool completes and its
`after-train` trigger creates exactly one evaluation, which a worker runs; an `encoder/encoder-gpu` run completes
and triggers nothing; `cxrflow ablate --deployment pipeline/pipeline` has each variant run by a worker.
Everything waits by polling the API (runs' states, the server's events), with generous deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from pipeline_support import base_dict, tiny_config, write_fixture

pytestmark = [pytest.mark.slow, pytest.mark.ops]
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEADLINE = 900  # seconds per wait: generous, the machine may be shared


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check: Callable[[], object], logs: list[Path], deadline: float = DEADLINE) -> object:
    """Polls `check` until it returns something truthy; on timeout fails with the processes' log tails."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


class Site:
    """The server, the deployments and the two workers, for one test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env = {**env, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": f"{self.url}/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                    "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                    "OMP_NUM_THREADS": "1"}
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.api = httpx.Client(base_url=f"{self.url}/api", timeout=30)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:  # the child keeps its own descriptor
            proc = subprocess.Popen([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def prefect(self, *args: str) -> None:
        res = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, (args, res.stdout[-3000:], res.stderr[-3000:])

    def close(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the server; each with its flow-run children
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.api.close()

    def healthy(self) -> bool:
        try:
            return self.api.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def deployment(self, name: str) -> dict:
        flow, dep = name.split("/")
        res = self.api.get(f"/deployments/name/{flow}/{dep}")
        assert res.status_code == 200, (name, res.text)
        return res.json()

    def run(self, name: str, parameters: dict) -> str:
        dep = self.deployment(name)
        res = self.api.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters})
        assert res.status_code in (200, 201), res.text
        return res.json()["id"]

    def flow_run(self, run_id: str) -> dict:
        return self.api.get(f"/flow_runs/{run_id}").json()

    def finished(self, run_id: str) -> dict:
        """The run once it is final; fails at once if it failed (with its state message)."""
        def check():
            run = self.flow_run(run_id)
            if run["state_type"] in ("FAILED", "CRASHED", "CANCELLED"):
                pytest.fail(f"{run['name']} ended {run['state_type']}: {run['state']['message']}\n" + "\n".join(
                    f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs))
            return run if run["state_type"] == "COMPLETED" else None

        return _wait(f"flow run {run_id}", check, self.logs)

    def runs_of(self, deployment_id: str) -> list[dict]:
        return self.api.post("/flow_runs/filter", json={
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}}}).json()

    def events(self, event: str, resource_id: str | None = None) -> list[dict]:
        body: dict = {"filter": {"event": {"name": [event]}, "occurred": {"since": "2000-01-01T00:00:00Z"}},
                      "limit": 50}
        if resource_id:
            body["filter"]["resource"] = {"id": [resource_id]}
        return self.api.post("/events/filter", json=body).json()["events"]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    try:
        s.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(s.port))
        _wait("the server", s.healthy, s.logs, deadline=240)
        for pool in ("default", "gpu"):
            s.prefect("work-pool", "create", pool, "--type", "process")
        s.prefect("--no-prompt", "deploy", "--all")
        for pool in ("default", "gpu"):
            s.start(f"worker-{pool}", "worker", "start", "--pool", pool, "--type", "process")
        yield s
    finally:
        s.close()


def test_deployments_run_on_workers_and_triggers_fire_once(site, tmp_path):
    root = write_fixture(tmp_path / "mimic")
    cfg = tiny_config(root, tmp_path / "pipeline")
    pipeline_cfg = base_dict(cfg)
    shards = str(cfg.stage_dirs()["shard"])

    # Data engineers: the nightly ingest and the whole pipeline, by the default pool's worker.
    nightly = site.run("ingest/nightly", {"cfg": {"source": "mimic-cxr", "root": str(root),
                                                    "out": str(tmp_path / "nightly"), "workers": 1}})
    pipe = site.run("pipeline/pipeline", {"cfg": pipeline_cfg})
    site.finished(nightly)
    summary = json.loads((tmp_path / "nightly" / "summary.json").read_text())
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"] > 0
    run = site.finished(pipe)
    assert (cfg.stage_dirs()["evaluate"] / "metrics.json").is_file()
    assert run["work_pool_name"] == "default"

    # The encoder first: its completion must create no evaluation. Then a training run, whose completion must
    # create exactly one. Both on the gpu pool.
    after_train = site.deployment("evaluate/after-train")
    enc = site.run("encoder/encoder-gpu", {"dispatch": "local", "cfg": {
        "shards": shards, "out": str(tmp_path / "encoder"), "init": "tiny", "epochs": 0, "n_bootstrap": 10}})
    enc_run = site.finished(enc)
    assert enc_run["work_pool_name"] == "gpu"
    # the server has seen the encoder run complete (the event its trigger would have reacted to)
    _wait("the encoder's Completed event",
          lambda: site.events("prefect.flow-run.Completed", f"prefect.flow-run.{enc}"), site.logs)
    from tasks.plan import stage_configs

    train_out = tmp_path / "train-run"  # the pipeline's own training config, one step per stage, elsewhere
    train_cfg = stage_configs(cfg).train.model_copy(update={"out": train_out, "max_steps": 1})
    train = site.run("train/train-gpu", {"dispatch": "local", "cfg": train_cfg.model_dump(mode="json")})
    train_run = site.finished(train)
    assert train_run["work_pool_name"] == "gpu"
    evaluation = _wait("the after-train evaluation", lambda: site.runs_of(after_train["id"]), site.logs)
    # The trigger reacts to events in order: by the time train's evaluation exists, the encoder's Completed
    # event (earlier) has been judged too. Exactly one evaluation, of the training run.
    assert len(evaluation) == 1, [r["parameters"] for r in evaluation]
    assert evaluation[0]["parameters"]["params"]["run"] == str(train_out)
    site.finished(evaluation[0]["id"])
    assert (train_out / "eval" / "metrics.json").is_file()
    triggered = _wait("the automation's triggered event", lambda: site.events("prefect.automation.triggered"),
                      site.logs)
    assert len(triggered) == 1, [e["related"] for e in triggered]
    assert len(site.runs_of(after_train["id"])) == 1

    # Researchers: an ablation whose variants are deployment runs on the default pool's worker (they differ
    # in evaluation only: the pipeline run above left every other stage finished).
    spec = {"name": "workers", "base": pipeline_cfg, "metrics": ["rouge_l"],
            "variants": {"t3": {"evaluate.max_new_tokens": 3}, "t2": {"evaluate.max_new_tokens": 2}}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    res = subprocess.run([str(BIN / "cxrflow"), "ablate", "--spec", str(spec_path), "--deployment",
                          "pipeline/pipeline", "--n-resamples", "20"], cwd=tmp_path, env=site.env,
                         capture_output=True, text=True, timeout=DEADLINE)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pipeline_dep = site.deployment("pipeline/pipeline")
    variants = site.api.post("/flow_runs/filter", json={
        "flow_runs": {"tags": {"all_": ["ablation:workers"]}}}).json()
    assert sorted(r["name"] for r in variants) == ["workers-t2", "workers-t3"]
    for r in variants:
        assert r["deployment_id"] == pipeline_dep["id"] and r["work_pool_name"] == "default"
        assert r["state_type"] == "COMPLETED" and any(t.startswith("metric rouge_l ") for t in r["tags"])
    assert "vs baseline" in res.stdout and "/runs?tag=ablation:workers" in res.stdout
