"""Flow `pipeline`: ingest -> structure -> shard (validate + shard) -> [encoder] -> train -> evaluate, each stage a
subflow (flows/stages.py). The optional encoder stage trains the image encoder contrastively on the shards
(flows/encoder.py); its open_clip dir is then the LLaVA run's vision tower and its retrieval metrics join the
evaluation's.

Each stage writes under OUT/stages/<stage>-<key> and, when finished, a completion marker; a later run with
the same key skips the subflow (the plan: tasks/plan.py). So a variant that only changes training reuses the
data outputs, one that only changes evaluation reuses the checkpoint, and a rerun with nothing changed decodes
no image, sends no LLM request and takes no training step."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.stages import run_stage
from schemas.pipeline import PipelineConfig, slug
from schemas.stages import PipelineResult, StageRecord, Work
from tasks import stage_reports as reports
from tasks.lock import holds_output_lock
from tasks.plan import (
    checked_stage_configs,
    metrics_table,
    read_marker,
    render_text,
    stage_work,
    write_marker,
)


@flow(name="pipeline", log_prints=True)
@holds_output_lock("pipeline")
def pipeline(cfg: PipelineConfig) -> dict:
    """The whole system for one config. Returns where every stage's outputs are, which stages ran or were
    reused, the work done (images decoded, LLM requests, training steps) and the metrics table."""
    from flows.ui import artifact_key, current_run, run_link, stage_scope, tag_value

    logger = get_run_logger()
    run_id, run_name, run_tags = current_run()
    variant = tag_value(run_tags, "variant") or cfg.name
    confs = checked_stage_configs(cfg)  # the CLI's checks: a deployment run fails with the same message
    keys, dirs = cfg.stage_hashes(), cfg.stage_dirs()
    stages: dict[str, StageRecord] = {}
    work = Work()
    for stage, key in keys.items():  # the stage table, in order; a finished stage is reused
        marker = read_marker(stage, dirs[stage], key)
        if marker is not None:
            stages[stage] = StageRecord(dir=str(dirs[stage]), key=key, status="reused", seconds=0.0,
                                        flow_run_id=marker.get("flow_run_id"),
                                        flow_run_name=marker.get("flow_run_name"))
            logger.info("%s: reused %s", stage, dirs[stage])
            continue
        start = time.perf_counter()
        with stage_scope(cfg.name, stage, variant):  # readable rows in the UI, not random names
            summary = run_stage(stage, confs, f"{slug(cfg.name)}-{stage}", cfg.name)
        seconds = time.perf_counter() - start
        work += stage_work(stage, summary)
        write_marker(stage, dirs[stage], key, summary, seconds, (run_id, run_name))
        stages[stage] = StageRecord(dir=str(dirs[stage]), key=key, status="ran", seconds=round(seconds, 2),
                                    flow_run_id=run_id, flow_run_name=run_name)
    table = metrics_table(dirs["evaluate"])
    name = slug(cfg.name)
    create_table_artifact(
        key=artifact_key("pipeline-metrics", name), table=table, description=f"Metrics of pipeline {cfg.name} (95% CIs)"
    )
    create_markdown_artifact(
        key=artifact_key("pipeline-stages", name),
        markdown=reports.stages_markdown(cfg.name, stages, work, run_link),
        description=f"Stages of pipeline {cfg.name}: reused or ran, by which run, and where",
    )
    result = PipelineResult(
        name=cfg.name, flow_run_id=run_id, out=str(cfg.out), stages=stages, work=work,
        metrics_json=str(dirs["evaluate"] / "metrics.json"), checkpoint=str(dirs["train"] / "final"),
        shards=str(dirs["shard"]), metrics=table,
    )
    data = reports.write_result(cfg.out, name, result)
    from tasks.report.render import report_markdown

    create_markdown_artifact(key=artifact_key("pipeline-report", name), markdown=report_markdown(cfg.out),
                             description=f"Pipeline {cfg.name}: the reproduction report of {cfg.out}")
    print(render_text(result))
    return data
