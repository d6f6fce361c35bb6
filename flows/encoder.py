"""Flow `encoder`: contrastive image-text training of an open_clip model on the shards by open_clip's own
engine (tasks/encoder), then retrieval and zero-shot evaluation of the result and of its starting point on
the test split. The tiny CPU encoder runs in-process; a real start model (a local BiomedCLIP dir) is handed to
the GPU work pool deployment of this same flow (default "encoder/encoder-gpu", like `train`), so ENC and SHARDS must
be on storage the GPU worker shares. Artifacts: `encoder-retrieval-<experiment>` (every metric with its CI, chance and ratio to
chance, trained vs start) and `encoder-run-<experiment>` (data, engine, lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.tasking import as_task
from flows.ui import artifact_key
from schemas.encoder import EncoderConfig
from tasks.encoder import report
from tasks.encoder.train import train_encoder

train_encoder_task = as_task(train_encoder, "train-encoder")
retrieval_task = as_task(report.retrieval, "retrieval")


def dispatch_to_pool(cfg: EncoderConfig, experiment: str) -> dict:
    """Run this flow on the GPU pool with absolute paths (the worker has its own working directory)."""
    from flows.tasking import dispatch
    from schemas.encoder import TINY
    from tasks.encoder.train import RUN_RECORD

    paths = {"shards": cfg.shards.absolute(), "out": cfg.out.absolute()}
    if cfg.init != TINY:
        paths["init"] = str(Path(cfg.init).absolute())
    parameters = {
        "cfg": cfg.model_copy(update=paths).model_dump(mode="json"),
        "experiment": experiment,
        "dispatch": "local",
    }
    run = dispatch(cfg.deployment, parameters, "encoder run")
    record = json.loads((cfg.out / RUN_RECORD).read_text())
    return {
        **run,
        "open_clip_dir": record["open_clip_dir"],
        "engine": record["engine"],
        "data": record["data"],
    }


@flow(name="encoder", log_prints=True)
def encoder(
    cfg: EncoderConfig, experiment: str = "default", dispatch: Literal["auto", "local", "deployment"] = "auto"
) -> dict:
    """Train (or, with epochs=0, take as it is) the encoder, export ENC/open_clip, evaluate it."""
    from schemas.encoder import TINY
    from schemas.pipeline import slug
    from tasks.encoder.prepare import init_model_dir

    if dispatch == "deployment" or (dispatch == "auto" and cfg.init != TINY):
        return dispatch_to_pool(cfg, experiment)

    record = train_encoder_task(cfg)
    trained = retrieval_task(cfg, Path(record["open_clip_dir"]), cfg.out / "retrieval", experiment)
    start = None
    if cfg.epochs:  # the starting point on the same split: what contrastive training changed
        start = retrieval_task(
            cfg, init_model_dir(cfg.init, cfg.out), cfg.out / "retrieval-start", experiment
        )
    rows = report.retrieval_rows(trained, start)
    record = report.record_retrieval(cfg, record, trained)
    name = slug(experiment)
    create_table_artifact(
        key=artifact_key("encoder-retrieval", name, scoped=False),
        table=rows,
        description=f"Encoder of {experiment}: retrieval Recall@K and zero-shot AUROC on "
        f"{cfg.eval_split} (95% CIs), chance, ratio to chance, and the start",
    )
    create_markdown_artifact(
        key=artifact_key("encoder-run", name, scoped=False),
        markdown=report.run_markdown(cfg, record),
        description=f"Encoder run of {experiment}: data, engine, lineage",
    )
    return {
        "open_clip_dir": record["open_clip_dir"],
        "retrieval_metrics": str(cfg.out / "retrieval" / "metrics.json"),
        "engine": record["engine"],
        "data": record["data"],
        "table": rows,
    }
