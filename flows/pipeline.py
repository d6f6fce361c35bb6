"""Flow `pipeline`: ingest -> structure -> validate_and_shard -> [encoder] -> train -> evaluate, each stage a
subflow. The optional encoder stage trains the image encoder contrastively on the shards (flows/encoder.py);
its open_clip dir is then the LLaVA run's vision tower and its retrieval metrics join the evaluation's.

Each stage writes under OUT/stages/<stage>-<key> and, when finished, a completion marker; a later run with
the same key skips the subflow (the plan: tasks/plan.py). So a variant that only changes training reuses the
data outputs, one that only changes evaluation reuses the checkpoint, and a rerun with nothing changed decodes
no image, sends no LLM request and takes no training step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cxrio import atomic_write_json
from schemas.pipeline import PipelineConfig, slug
from tasks.lock import holds_output_lock
from tasks.plan import (
    WORK,
    StageConfigs,
    checked_stage_configs,
    link_ingest_outputs,
    metrics_table,
    read_marker,
    render_text,
    work_done,
    write_marker,
)


def _run_stage(stage: str, cfg: PipelineConfig, confs: StageConfigs) -> Any:
    from flows.evaluate import evaluate
    from flows.ingest import ingest_flow, ingest_mixture_flow
    from flows.runners import ingest_runner
    from flows.structure import structure
    from flows.train import train
    from flows.validate_shard import validate_and_shard

    name = {"flow_run_name": f"{slug(cfg.name)}-{stage}"}  # readable rows in the UI, not random names
    if stage == "ingest" and confs.mixture is not None:
        return ingest_mixture_flow.with_options(**name)(confs.mixture)
    if stage == "ingest":
        runner = ingest_runner(confs.ingest, cfg.dask_address)
        return ingest_flow.with_options(task_runner=runner, **name)(confs.ingest)
    if stage == "structure":
        link_ingest_outputs(confs.ingest.out, confs.structure.out)
        return structure.with_options(**name)(confs.structure)
    if stage == "shard":
        return validate_and_shard.with_options(**name)(confs.shard)
    if stage == "encoder":
        from flows.encoder import encoder

        return encoder.with_options(**name)(confs.encoder, experiment=cfg.name)
    if stage == "train":
        summary = train.with_options(**name)(confs.train)
        if "dispatched" in summary and summary.get("state") != "Completed":
            raise RuntimeError(f"training run {summary['flow_run_id']} ended {summary['state']}")
        return summary
    return evaluate.with_options(**name)(confs.evaluate)


@flow(name="pipeline", log_prints=True)
@holds_output_lock("pipeline")
def pipeline(cfg: PipelineConfig) -> dict:
    """The whole system for one config. Returns where every stage's outputs are, which stages ran or were
    reused, the work done (images decoded, LLM requests, training steps) and the metrics table."""
    from flows.ui import current_run, stage_scope, tag_value

    logger = get_run_logger()
    run_id, run_name, run_tags = current_run()
    variant = tag_value(run_tags, "variant") or cfg.name
    confs = checked_stage_configs(cfg)  # the CLI's checks: a deployment run fails with the same message
    keys, dirs = cfg.stage_hashes(), cfg.stage_dirs()
    stages: dict[str, dict] = {}
    work = dict.fromkeys(WORK, 0)
    for stage in keys:
        d, key = dirs[stage], keys[stage]
        marker = read_marker(stage, d, key)
        if marker is not None:
            stages[stage] = {
                "dir": str(d),
                "key": key,
                "status": "reused",
                "seconds": 0.0,
                "flow_run_id": marker.get("flow_run_id"),
                "flow_run_name": marker.get("flow_run_name"),
            }
            logger.info("%s: reused %s", stage, d)
            continue
        start = time.perf_counter()
        with stage_scope(cfg.name, stage, variant):
            summary = _run_stage(stage, cfg, confs)
        seconds = time.perf_counter() - start
        for k, v in work_done(stage, summary).items():
            work[k] += v
        write_marker(stage, d, key, summary, seconds, (run_id, run_name))
        stages[stage] = {
            "dir": str(d),
            "key": key,
            "status": "ran",
            "seconds": round(seconds, 2),
            "flow_run_id": run_id,
            "flow_run_name": run_name,
        }
    table = metrics_table(dirs["evaluate"])
    name = slug(cfg.name)
    create_table_artifact(
        key=f"pipeline-metrics-{name}", table=table, description=f"Metrics of pipeline {cfg.name} (95% CIs)"
    )
    create_markdown_artifact(
        key=f"pipeline-stages-{name}",
        markdown=stages_markdown(cfg, stages, work),
        description=f"Stages of pipeline {cfg.name}: reused or ran, by which run, and where",
    )
    result = {
        "name": cfg.name,
        "flow_run_id": run_id,
        "out": str(cfg.out),
        "stages": stages,
        "work": work,
        "metrics_json": str(dirs["evaluate"] / "metrics.json"),
        "checkpoint": str(dirs["train"] / "final"),
        "shards": str(dirs["shard"]),
        "metrics": table,
    }
    atomic_write_json(Path(cfg.out) / "runs" / f"{name}.json", result)
    from tasks.report.render import report_markdown

    create_markdown_artifact(key=f"pipeline-report-{name}", markdown=report_markdown(cfg.out),
                             description=f"Pipeline {cfg.name}: the reproduction report of {cfg.out}")
    print(render_text(result))
    return result


def stages_markdown(cfg: PipelineConfig, stages: dict, work: dict) -> str:
    """Each stage: ran here or reused, with a link to the run that produced its outputs."""
    from flows.ui import run_link

    lines = [
        f"# Pipeline `{cfg.name}`",
        "",
        "| stage | status | produced by | seconds | dir |",
        "|---|---|---|---|---|",
    ]
    for s, v in stages.items():
        by = run_link(v.get("flow_run_id"), v.get("flow_run_name"))
        if v["status"] == "reused" and not v.get("flow_run_id"):
            by = "a run that recorded no flow run id"
        lines.append(f"| {s} | {v['status']} | {by} | {v['seconds']} | `{v['dir']}` |")
    lines += [
        "",
        f"Work this run: {work['decoded']} images decoded, {work['llm_requests']} LLM requests, "
        f"{work['train_steps']} training steps.",
    ]
    return "\n".join(lines)
