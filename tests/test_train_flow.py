"""The `train` flow (in-process tiny run) publishes its artifacts; the CLI runs without Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.train_shards import write_train_shards


@pytest.mark.slow
def test_train_flow_tiny_publishes_artifacts(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.utilities.asyncutils import run_coro_as_sync

    from flows.train import train
    from schemas.train import default_config

    shards = write_train_shards(tmp_path / "shards", n=8)
    cfg = default_config("tiny", shards, tmp_path / "run", max_steps=2)
    state = train(cfg, return_state=True)
    summary = state.result()
    assert summary["stages"]["1"]["finished"] and summary["stages"]["2"]["steps"] == 2
    assert (tmp_path / "run" / "loss.png").exists()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(  # this run's only: keys are shared
                key=ArtifactFilterKey(any_=["train-metrics", "train-loss-curve"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))

    found = run_coro_as_sync(artifacts())
    assert {a.key for a in found} == {"train-metrics", "train-loss-curve"}
    table = next(a for a in found if a.key == "train-metrics").data
    table = json.loads(table) if isinstance(table, str) else table
    # max_steps=2 is two optimizer steps per stage (stage 1's single epoch is one step here: it repeats)
    assert {(r["stage"], r["step"]) for r in table} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert "data:image/png;base64," in next(a for a in found if a.key == "train-loss-curve").data


def test_cli_train_without_prefect(tmp_path):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    shards = write_train_shards(tmp_path / "shards", n=8)
    res = CliRunner().invoke(app, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"),
                                   "--stage", "1", "--max-steps", "1", "--no-prefect"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "final" / "stage1-projector.safetensors").exists()


def test_dispatch_to_the_gpu_pool_sends_absolute_paths(tmp_path, monkeypatch):
    """The GPU worker runs in another working directory: relative paths in the config must not travel."""
    import prefect.deployments

    from flows.train import train
    from schemas.train import default_config

    sent = {}

    class _Run:
        id, state_name = "run-id", "Scheduled"

    def fake_run_deployment(name, parameters, **kw):
        sent.update(parameters["cfg"])
        return _Run()

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    monkeypatch.chdir(tmp_path)
    cfg = default_config("llava-rad", Path("shards"), Path("runs/r1"), vision_path=Path("models/vit"),
                         lm_path=Path("models/vicuna"))
    out = train.fn(cfg, dispatch="deployment")
    assert out["dispatched"] == "train/train-gpu"
    for key, rel in (("shards", "shards"), ("out", "runs/r1"), ("vision_path", "models/vit"),
                     ("lm_path", "models/vicuna")):
        assert sent[key] == str(tmp_path / rel), key


def test_both_training_clis_take_the_same_flags():
    """`cxrflow train` and `python -m training` (no Prefect) are one CLI: the same flags, one config builder."""
    import typer

    from cxrflow_cli._common import Stage
    from cxrflow_cli.main import app
    from schemas.train import STAGE_CHOICES
    from training.__main__ import parser

    typer_flags = {o for p in typer.main.get_command(app).commands["train"].params for o in p.opts}
    parser_flags = {o for a in parser()._actions for o in a.option_strings} - {"-h", "--help"}
    assert typer_flags - {"--prefect"} == parser_flags, (typer_flags ^ parser_flags)
    assert {s.value for s in Stage} == set(STAGE_CHOICES)


def test_seed_flag_reaches_the_config_in_both_clis(tmp_path):
    from schemas.train import config_from_options
    from training.__main__ import config_from_args, parse_args

    a = parse_args(["--shards", str(tmp_path), "--out", str(tmp_path / "r"), "--seed", "7", "--stage", "1"])
    cfg = config_from_args(a)
    assert (cfg.seed, cfg.stages) == (7, [1])
    assert cfg == config_from_options(tmp_path, tmp_path / "r", "tiny", "1", seed=7)


def test_the_loss_curve_is_drawn_without_pyplots_global_state(tmp_path):
    """Variants side by side publish their curves from threads at once: pyplot's figure registry is global and
    not thread-safe, so the curve is a Figure of its own (pyplot never imported)."""
    import json
    import subprocess
    import sys

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"stage": 2, "step": i, "loss": 1 / (i + 1)}) for i in range(5)))
    code = ("import sys; from pathlib import Path; from training.plots import write_loss_curve; "
            f"assert write_loss_curve(Path({str(metrics)!r}), Path({str(tmp_path / 'c.png')!r})); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False" and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
