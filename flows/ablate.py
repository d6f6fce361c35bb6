"""Flow `ablate`: one `pipeline` flow run per variant, then `compare`.

Each variant's run is named `<ablation>-<variant>` and tagged `ablation:<name>`, `variant:<name>`, so the UI's
flow-run filter finds an ablation's runs by tag. Locally the runs are subflows; with `deployment` set
(e.g. "pipeline/pipeline") each variant is a `run_deployment` on whatever work pool serves it. Variants share
stage outputs wherever their configs agree (flows/pipeline.py)."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, tags  # noqa: E402

from schemas.pipeline import AblationSpec, slug  # noqa: E402


def run_name(spec: AblationSpec, variant: str) -> str:
    return f"{slug(spec.name)}-{slug(variant)}"


def variant_tags(spec: AblationSpec, variant: str) -> list[str]:
    return [f"ablation:{spec.name}", f"variant:{variant}"]


@flow(name="ablate", log_prints=True)
def ablate(spec: AblationSpec, deployment: str | None = None, n_resamples: int = 1000) -> dict:
    from flows.compare import compare
    from flows.pipeline import pipeline

    results: dict[str, dict] = {}
    for variant in spec.variants:
        cfg = spec.variant_config(variant)
        if deployment:
            from prefect.deployments import run_deployment

            run = run_deployment(name=deployment, parameters={"cfg": cfg.model_dump(mode="json")},
                                 flow_run_name=run_name(spec, variant), tags=variant_tags(spec, variant))
            if run.state_name != "Completed":
                raise RuntimeError(f"variant {variant}: flow run {run.id} ended {run.state_name}")
            results[variant] = {"flow_run_id": str(run.id), "eval_dir": str(cfg.stage_dirs()["evaluate"])}
            continue
        with tags(*variant_tags(spec, variant)):
            res = pipeline.with_options(flow_run_name=run_name(spec, variant))(cfg)
        results[variant] = {"eval_dir": str(cfg.stage_dirs()["evaluate"]), "stages": res["stages"],
                            "work": res["work"]}
    evals = {v: r["eval_dir"] for v, r in results.items()}
    out = str(spec.variant_config(spec.baseline).out)
    summary = compare(spec.name, evals, spec.baseline, spec.metrics, out, n_resamples=n_resamples)
    return {"name": spec.name, "variants": results, "compare": summary}
