"""Flow `train`: the training run beside its data lineage in the UI.

tiny (or dispatch="local") trains in-process; real presets are handed to a GPU work pool deployment of this
same flow (`run_deployment`, default name "train/train-gpu"), whose run executes it with dispatch="local" on the
GPU worker, so RUN must be on storage the worker shares. Artifacts: loss curve (markdown with the PNG inlined)
and a metrics table, under stable keys so runs line up in the UI (per experiment inside a pipeline: flows/ui.py)."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.train import TrainConfig
from training import plots

MAX_TABLE_ROWS = 200
# Set by `ablate` while it runs variants side by side in threads of one process: a local training then runs
# in a child process (training/child.py: torch's RNG and thread pool are per process).
TRAIN_IN_CHILD: ContextVar[bool] = ContextVar("cxrflow_train_in_child", default=False)


class _ToRunLogger(logging.Handler):
    """cxrflow's training log lines, re-emitted on the task run's logger (so they are in the run's logs)."""

    def __init__(self, run_logger):
        super().__init__(logging.INFO)
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.run_logger.log(record.levelno, record.getMessage())


def train_with_progress(cfg: TrainConfig, in_child: bool = False) -> dict:
    """training/run.run_training, with its log lines on the task run's logger and a progress artifact; with
    `in_child`, computed in a child process (training/child.py)."""
    from prefect.logging import get_run_logger

    from flows.progress import Reporter
    if in_child:
        from training.child import run_training_in_child as run_training
    else:
        from training.run import run_training  # torch: imported when a run trains here, not to dispatch one

    handler = _ToRunLogger(get_run_logger())
    training_log = logging.getLogger("cxrflow.training")
    training_log.addHandler(handler)
    training_log.setLevel(logging.INFO)
    step_log = logging.getLogger("cxrflow.training.steps")  # quiet mode stops it propagating to the console
    if not step_log.propagate:
        step_log.addHandler(handler)
    try:
        with Reporter(artifact_key("train-progress"), f"optimizer steps of {cfg.out}") as report:

            def on_step(row: dict) -> None:
                stage_index = sorted(cfg.stages).index(row["stage"])
                report.step(row, (stage_index + row["step"] / row["total_steps"]) / len(cfg.stages))

            summary = run_training(cfg, on_step=on_step)
    finally:
        training_log.removeHandler(handler)
        step_log.removeHandler(handler)
    from training.run import summary_without_losses

    summary = summary_without_losses(summary)
    summary["stages"] = {str(k): v for k, v in summary["stages"].items()}
    return summary


def publish(run_dir: Path, summary: dict) -> None:
    """The metrics table and the loss-curve markdown as artifacts (keys per experiment: flows/ui.py)."""
    table, stride = plots.metrics_rows(run_dir, MAX_TABLE_ROWS)
    create_table_artifact(
        key=artifact_key("train-metrics"),
        table=table or [{"note": "no steps logged"}],
        description=f"training metrics of {run_dir} (every {stride}th step)",
    )
    create_markdown_artifact(
        key=artifact_key("train-loss-curve"),
        markdown=plots.run_markdown(run_dir, summary),
        description="loss curve, stages and data lineage",
    )


train_task = as_task(train_with_progress, "train")
publish_task = as_task(publish, "publish")


@flow(name="train", log_prints=True)
def train(cfg: TrainConfig, dispatch: Literal["auto", "local", "deployment"] = "auto") -> dict:
    """Train stage 1 and/or 2 of the LLaVA-style model from shards into cfg.out."""
    if dispatch == "deployment" or (dispatch == "auto" and cfg.preset != "tiny"):
        from flows.tasking import dispatch as dispatch_run

        # The worker has its own working directory: send absolute paths (RUN and shards on shared storage).
        paths = {
            k: Path(v).absolute()
            for k in ("shards", "out", "vision_path", "lm_path")
            if (v := getattr(cfg, k)) is not None
        }
        parameters = {"cfg": cfg.model_copy(update=paths).model_dump(mode="json"), "dispatch": "local"}
        # the caller decides what a non-Completed run means (the pipeline fails on it)
        return dispatch_run(cfg.deployment, parameters, "training", require_completed=False)
    from tasks.preflight import check_train_config

    # The CLI's checks, where the data must be (here, or on the GPU worker that runs the dispatched run):
    # a deployment run fails with the same one-line message.
    check_train_config(cfg)
    summary = train_task(cfg, TRAIN_IN_CHILD.get())
    publish_task(Path(cfg.out), summary)
    return summary
