"""Flow `ablate`: one `pipeline` flow run per variant, then `compare`.

In the UI (flows/ui.py): each variant's run is named `<ablation>-<variant>` and tagged `ablation:<name>`,
`variant:<name>`, so filtering Runs by `ablation:<name>` lists one row per variant (its stage subflows carry
`stage:` and `variant:` tags only). The ablate run itself is named `<ablation>-ablate` and the compare step
`<ablation>-compare`, both tagged `ablate:<name>`. Locally the variant runs are subflows, run side by side
(one thread each, up to one per CPU core; each trains in its own child process: flows/train.py); with `deployment` set
(e.g. "pipeline/pipeline") each variant is a `run_deployment` on whatever work pool serves it. Variants share
stage outputs wherever their configs agree (flows/pipeline.py). A rerun creates no run for a finished variant
and each variant's run carries its headline metric as a tag (flows/reruns.py)."""

from __future__ import annotations

import contextvars
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from prefect import flow
from prefect.context import TagsContext

from schemas.pipeline import AblationSpec, slug


def run_name(spec: AblationSpec, variant: str) -> str:
    return f"{slug(spec.name)}-{slug(variant)}"


def variant_tags(spec: AblationSpec, variant: str) -> list[str]:
    return [f"ablation:{spec.name}", f"variant:{variant}"]


def own_tags(spec: AblationSpec, role: str) -> set[str]:
    """Tags of the ablate run and its compare step: findable, but not among the variants' rows."""
    return {f"ablate:{spec.name}", role}


def run_ablation(spec: AblationSpec, deployment: str | None = None, n_resamples: int = 1000,
                 parallel: int | None = None) -> dict:
    """The `ablate` flow under its ablation's name and tags (the CLI's and the demo's entry point)."""
    with TagsContext(current_tags=own_tags(spec, "ablate")):
        return ablate.with_options(flow_run_name=f"{slug(spec.name)}-ablate")(
            spec, deployment=deployment, n_resamples=n_resamples, parallel=parallel)


def _run_variant(spec: AblationSpec, variant: str, side_by_side: bool) -> dict:
    """One variant's `pipeline` run (a subflow of the ablate run); side by side with others (_side_by_side), it
    trains in a child process (flows/train.py TRAIN_IN_CHILD) and its other stages take turns with theirs
    (flows/stages.py)."""
    from flows.pipeline import pipeline
    from flows.train import TRAIN_IN_CHILD

    cfg = spec.variant_config(variant)
    if side_by_side:
        TRAIN_IN_CHILD.set(True)  # in this thread's copy of the ablate run's context only
    # replace (not add to) the ablate run's tags: the variant rows are what `ablation:<name>` finds
    with TagsContext(current_tags=set(variant_tags(spec, variant))):
        res = pipeline.with_options(flow_run_name=run_name(spec, variant))(cfg)
    return {"eval_dir": str(cfg.stage_dirs()["evaluate"]), "stages": res["stages"], "work": res["work"],
            "flow_run_id": res.get("flow_run_id")}


def _side_by_side(spec: AblationSpec, pending: list[str], workers: int) -> dict[str, dict]:
    """The variants, `workers` at a time, each in a thread. A stage folder that variants share is run by the
    first of them in the spec's order: a later variant starts once the stages it shares with earlier ones are
    finished (their completion markers, tasks/plan.py) and reuses them, as it would have run after them. A
    variant whose shared stage failed is not started; the first failure (in the spec's order) is raised."""
    from tasks.plan import stage_finished
    from tasks.variants import shared_stages
    from training.child import clear_stop

    clear_stop()
    cfgs = {v: spec.variant_config(v) for v in pending}
    waits = shared_stages(cfgs)  # variant -> [(stage, the earlier variant that runs it)]
    futures: dict[str, Future] = {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="variant")
    try:
        for variant in pending:
            cfg = cfgs[variant]
            while not all(stage_finished(cfg, s) or futures[o].done() for s, o in waits[variant]):
                time.sleep(0.2)
            if not all(stage_finished(cfg, s) for s, _ in waits[variant]):
                break  # an earlier variant failed before finishing a stage this one needs
            futures[variant] = pool.submit(contextvars.copy_context().run, _run_variant, spec, variant, True)
        wait(futures.values())
    except BaseException:  # an interrupt: the trainings in child processes end now, not when they finish
        from training.child import stop_children

        stop_children()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    done = {v: f.result() for v, f in futures.items()}  # the first failure, in the spec's order
    if len(done) < len(pending):
        raise RuntimeError(f"variants {[v for v in pending if v not in done]} not run: a stage they share with an "
                           "earlier variant did not finish")
    return done


@flow(name="ablate", log_prints=True)
def ablate(spec: AblationSpec, deployment: str | None = None, n_resamples: int = 1000,
           parallel: int | None = None) -> dict:
    """`parallel`: how many variants run at once locally (default: one per CPU core; 1 runs them in turn)."""
    from flows.compare import compare
    from flows.reruns import reusable_variant, tag_headline

    results: dict[str, dict] = {}
    pending: list[str] = []
    for variant in spec.variants:
        cfg = spec.variant_config(variant)
        reused = reusable_variant(cfg, variant_tags(spec, variant))
        if reused is not None:  # its row on the Runs page stays the run that produced it
            results[variant] = reused
            continue
        if deployment:
            from flows.tasking import dispatch

            run = dispatch(deployment, {"cfg": cfg.model_dump(mode="json", by_alias=True)}, f"variant {variant}",
                           flow_run_name=run_name(spec, variant), tags=variant_tags(spec, variant))
            results[variant] = {"flow_run_id": run["flow_run_id"], "eval_dir": str(cfg.stage_dirs()["evaluate"])}
            continue
        pending.append(variant)
    workers = min(len(pending), parallel or getattr(os, "process_cpu_count", os.cpu_count)() or 1)
    if workers > 1:
        results.update(_side_by_side(spec, pending, workers))
    else:
        results.update({v: _run_variant(spec, v, False) for v in pending})
    results = {v: results[v] for v in spec.variants}  # the spec's order, whichever finished first
    for variant in results:  # the filtered Runs page shows each variant's headline metric as a tag
        if results[variant].get("flow_run_id"):
            r = results[variant]
            r["headline"] = tag_headline(r["flow_run_id"], r["eval_dir"], spec.metrics[0])
    evals = {v: r["eval_dir"] for v, r in results.items()}
    out = str(spec.variant_config(spec.baseline).out)
    with TagsContext(current_tags=own_tags(spec, "compare")):
        summary = compare.with_options(flow_run_name=f"{slug(spec.name)}-compare")(
            spec.name, evals, spec.baseline, spec.metrics, out, n_resamples=n_resamples,
            runs={v: r.get("flow_run_id") for v, r in results.items()})
    from prefect.artifacts import create_markdown_artifact

    from flows.ui import artifact_key
    from tasks.report.render import report_markdown

    create_markdown_artifact(key=artifact_key("ablation", spec.name, "report", scoped=False),
                             markdown=report_markdown(out),
                             description=f"Ablation {spec.name}: the reproduction report (cxrflow report --html)")
    return {"name": spec.name, "variants": results, "compare": summary}
