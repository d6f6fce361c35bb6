"""Flow `train`: the training run beside its data lineage in the UI.

tiny (or dispatch="local") trains in-process; real presets are handed to a GPU work pool deployment of this
same flow (`run_deployment`, default name "train/gpu"), whose run executes it with dispatch="local" on the
GPU worker, so RUN must be on storage the worker shares. Artifacts: loss curve (markdown with the PNG inlined)
and a metrics table, under stable keys so runs line up in the UI (per experiment inside a pipeline: flows/ui.py)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from flows.ui import artifact_key
from schemas.train import TrainConfig

MAX_TABLE_ROWS = 200


class _ToRunLogger(logging.Handler):
    """cxrflow's training log lines, re-emitted on the task run's logger (so they are in the run's logs)."""

    def __init__(self, run_logger):
        super().__init__(logging.INFO)
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.run_logger.log(record.levelno, record.getMessage())


@task(cache_policy=NO_CACHE)
def train_task(cfg: TrainConfig) -> dict:
    from prefect.logging import get_run_logger

    from flows import progress
    from training.run import run_training

    handler = _ToRunLogger(get_run_logger())
    training_log = logging.getLogger("cxrflow.training")
    training_log.addHandler(handler)
    training_log.setLevel(logging.INFO)
    step_log = logging.getLogger("cxrflow.training.steps")  # quiet mode stops it propagating to the console
    if not step_log.propagate:
        step_log.addHandler(handler)
    artifact = create_progress_artifact(0.0, key=artifact_key("train-progress"), description=f"optimizer steps of {cfg.out}")

    def on_step(row: dict) -> None:
        progress.notify_step(row)
        stages = len(cfg.stages)
        done = (sorted(cfg.stages).index(row["stage"]) + row["step"] / row["total_steps"]) / stages
        update_progress_artifact(artifact, round(100.0 * done, 1))

    try:
        summary = run_training(cfg, on_step=on_step)
    finally:
        training_log.removeHandler(handler)
        step_log.removeHandler(handler)
    summary["stages"] = {str(k): {kk: vv for kk, vv in v.items() if kk != "losses"}
                         for k, v in summary["stages"].items()}
    return summary


@task(cache_policy=NO_CACHE)
def publish_task(run_dir: Path, summary: dict) -> None:
    import json

    from training.plots import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    stride = max(1, len(rows) // MAX_TABLE_ROWS)
    table = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[::stride]]
    create_table_artifact(key=artifact_key("train-metrics"), table=table or [{"note": "no steps logged"}],
                          description=f"training metrics of {run_dir} (every {stride}th step)")
    png = run_dir / "loss.png"
    lineage = json.loads((run_dir / "lineage.json").read_text())
    img = (f"![loss](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
           if png.exists() else "loss curve: not drawn (no steps logged)")
    lines = [f"# Training run `{run_dir}`", "", img, "", "| stage | steps | finished | stopped | resumed from |",
             "|---|---|---|---|---|"]
    for st, s in summary["stages"].items():
        lines.append(f"| {st} | {s.get('steps', '-')} | {s.get('finished', s.get('skipped'))} | "
                     f"{s.get('stopped', '-')} | {s.get('resumed_from')} |")
    lines += ["", f"Data: {summary['data']}", "", "Shard index hashes:"]
    lines += [f"- `{name}` {h}" for name, h in lineage["index_sha256"].items()]
    create_markdown_artifact(key=artifact_key("train-loss-curve"), markdown="\n".join(lines),
                             description="loss curve, stages and data lineage")


@flow(name="train", log_prints=True)
def train(cfg: TrainConfig, dispatch: Literal["auto", "local", "deployment"] = "auto") -> dict:
    """Train stage 1 and/or 2 of the LLaVA-style model from shards into cfg.out."""
    if dispatch == "deployment" or (dispatch == "auto" and cfg.preset != "tiny"):
        from prefect.deployments import run_deployment

        # The worker has its own working directory: send absolute paths (RUN and shards on shared storage).
        paths = {k: Path(v).absolute() for k in ("shards", "out", "vision_path", "lm_path")
                 if (v := getattr(cfg, k)) is not None}
        run = run_deployment(name=cfg.deployment, parameters={
            "cfg": cfg.model_copy(update=paths).model_dump(mode="json"), "dispatch": "local"})
        return {"dispatched": cfg.deployment, "flow_run_id": str(run.id), "state": run.state_name}
    from tasks.preflight import check_train_config

    # The CLI's checks, where the data must be (here, or on the GPU worker that runs the dispatched run):
    # a deployment run fails with the same one-line message.
    check_train_config(cfg)
    summary = train_task(cfg)
    publish_task(Path(cfg.out), summary)
    return summary
