"""The stage table's wiring: which flow runs each stage of the pipeline and `data` flows (the plan and the
stage configs: tasks/plan.py; the stage table: tasks/stages.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from flows import progress


def _ingest(confs, opts: dict, experiment: str) -> dict:
    from flows.ingest import ingest_flow, ingest_mixture_flow
    from flows.runners import runner_for

    if confs.mixture is not None:
        return ingest_mixture_flow.with_options(**opts)(confs.mixture)
    return ingest_flow.with_options(task_runner=runner_for(confs.ingest), **opts)(confs.ingest)


def _structure(confs, opts: dict, experiment: str) -> dict:
    from flows.structure import structure
    from tasks.plan import link_ingest_outputs

    link_ingest_outputs(confs.ingest.out, confs.structure.out)
    return structure.with_options(**opts)(confs.structure)


def _shard(confs, opts: dict, experiment: str) -> dict:
    from flows.shard import shard as shard_flow

    return shard_flow.with_options(**opts)(confs.shard)


def _encoder(confs, opts: dict, experiment: str) -> dict:
    from flows.encoder import encoder

    return encoder.with_options(**opts)(confs.encoder, experiment=experiment)


def _train(confs, opts: dict, experiment: str) -> dict:
    from flows.train import train
    from schemas.stages import TrainSummary

    summary = train.with_options(**opts)(confs.train)
    run = TrainSummary.model_validate(summary)
    if run.dispatched and run.state != "Completed":
        raise RuntimeError(f"training run {run.flow_run_id} ended {run.state}")
    return summary


def _evaluate(confs, opts: dict, experiment: str) -> dict:
    from flows.evaluate import evaluate

    return evaluate.with_options(**opts)(confs.evaluate)


FLOWS: dict[str, Callable[[Any, dict, str], dict]] = {
    "ingest": _ingest, "structure": _structure, "shard": _shard, "encoder": _encoder, "train": _train,
    "evaluate": _evaluate,
}
# The CLI board's row for a stage whose flow does not announce its own (the shard flow announces
# validation, then sharding).
ROWS = {"ingest": "images ingested", "structure": "reports structured"}


# Variants side by side (flows/ablate.py) run in threads of one process and train in child processes; their
# other stages take turns here: they would only contend for the GIL, and the encoder stage trains in-process on
# torch's process-wide RNG.
_IN_PROCESS_TURN = threading.Lock()


def run_stage(stage: str, confs, run_name: str | None = None, experiment: str = "default") -> dict:
    """Run `stage`'s flow on its config in `confs` (tasks/plan.py StageConfigs or DataStageConfigs)."""
    from flows.train import TRAIN_IN_CHILD

    if stage in ROWS:
        progress.notify_stage(ROWS[stage])
    side_by_side = TRAIN_IN_CHILD.get()
    with _IN_PROCESS_TURN if side_by_side and stage != "train" else nullcontext():
        if side_by_side:  # after an interrupt (training/child.py stop_children) a variant starts no next stage
            from training.child import check_stop

            check_stop()
        return FLOWS[stage](confs, {"flow_run_name": run_name} if run_name else {}, experiment)
