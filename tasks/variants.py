"""An ablation variant as the Runs page shows it: whether a variant is already finished (every stage's completion
marker present: a rerun need not create another run for it) and its headline metric (a tag on its run, so the
filtered Runs page says which variant is better). Plain functions over the stage markers (tasks/plan.py) and
EVAL/metrics.json; flows/reruns.py applies them to the runs."""

from __future__ import annotations

from pathlib import Path

from schemas.pipeline import PipelineConfig
from tasks.plan import WORK, read_marker

# Tags a headline carries start with this, so a later value replaces the earlier one instead of adding to it.
HEADLINE_PREFIX = "metric "


def finished_variant(cfg: PipelineConfig) -> dict | None:
    """The variant's result as the `pipeline` flow would return it when every stage of `cfg` has its marker,
    with the pipeline run that produced the evaluation as the variant's run; None when any stage would run."""
    keys, dirs = cfg.stage_hashes(), cfg.stage_dirs()
    markers = {stage: read_marker(stage, dirs[stage], key) for stage, key in keys.items()}
    if any(m is None for m in markers.values()):
        return None
    evaluation = markers["evaluate"]
    if not evaluation.get("flow_run_id"):
        return None  # written by a run that recorded no id: nothing to link the variant to
    stages = {
        stage: {"dir": str(dirs[stage]), "key": keys[stage], "status": "reused", "seconds": 0.0,
                "flow_run_id": m.get("flow_run_id"), "flow_run_name": m.get("flow_run_name")}
        for stage, m in markers.items()
    }
    return {"eval_dir": str(dirs["evaluate"]), "stages": stages, "work": dict.fromkeys(WORK, 0),
            "flow_run_id": evaluation["flow_run_id"], "flow_run_name": evaluation.get("flow_run_name"),
            "reused": True}


def producing_run(eval_dir: Path | str) -> str | None:
    """The flow run id of the pipeline run that wrote this evaluation (its completion marker), if recorded."""
    import json

    from tasks.plan import MARKER

    path = Path(eval_dir) / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("flow_run_id")


def headline(eval_dir: Path | str, metric: str) -> str:
    """`metric <name> <value> [<lo>, <hi>]` of the evaluation, or `... not computed` (never a made-up 0)."""
    from tasks.evaluate.leaderboard import load_metrics

    r = load_metrics(eval_dir).metrics.get(metric)
    if r is None or r.value is None:
        return f"{HEADLINE_PREFIX}{metric} not computed"
    ci = f" [{r.ci[0]:.2f}, {r.ci[1]:.2f}]" if r.ci else ""
    return f"{HEADLINE_PREFIX}{metric} {r.value:.2f}{ci}"


def with_headline(tags: list[str], tag: str) -> list[str]:
    """`tags` with `tag` replacing any earlier headline of the same metric."""
    metric = tag[len(HEADLINE_PREFIX):].split(" ", 1)[0]
    keep = [t for t in tags if not t.startswith(f"{HEADLINE_PREFIX}{metric} ")]
    return [*keep, tag]


def shared_stages(cfgs: dict[str, PipelineConfig]) -> dict[str, list[tuple[str, str]]]:
    """Per variant (in the given order): the stages whose folder an earlier variant also writes, each with the
    first such variant, which runs it while the later one waits to reuse it (flows/ablate.py, side by side)."""
    owner: dict[Path, str] = {}
    shared: dict[str, list[tuple[str, str]]] = {}
    for variant, cfg in cfgs.items():
        dirs = cfg.stage_dirs()
        shared[variant] = [(stage, owner[d]) for stage, d in dirs.items() if d in owner]
        owner.update({d: variant for d in dirs.values() if d not in owner})
    return shared
