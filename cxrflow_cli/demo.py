"""`cxrflow demo`: the main job on an embedded default — fixtures, Prefect's local server, files under
artifacts/. Writes the learnable MIMIC-CXR-JPG fixture (findings drawn into the pixels, reports stating them, one
input per defect kind: fixtures/learnable.py), runs the `learning` ablation (configs/ablations/learning.yaml:
the tiny model trained on aligned image-report pairs vs the shuffle control, each through ingest -> structure
-> validate -> shard -> train -> evaluate, the data stages shared), and prints the ingest reconciliation, the
comparison (against the shuffle control and the image-blind baselines, tasks/evaluate/baselines.py), what was
trained and how to see the runs in the UI. Writes OUT/learning.json and, last, OUT/report.html (tasks/report).
A second `make demo` reuses every stage; an OUT holding a fixture of another seed or size is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli._common import run_flow

DEMO_SPEC = Path("configs/ablations/learning.yaml")
# The project's own copy, for a `cxrflow demo` started outside the repository root.
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_STUDIES = 200
FIXTURE_MARKER = "cxrflow-demo-fixture.json"  # the seed and size the fixture was written with


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def write_demo_fixture(root: Path, studies: int = DEMO_STUDIES, seed: int = 0) -> Path:
    """The learnable MIMIC-CXR-JPG fixture (the configuration BENCHMARKS.md measured learning on, and quicker to
    ingest) with its LLaVA-Rad annotation files (the report-processing ablation reads them)."""
    from cxrio import atomic_write_json
    from fixtures.mimic_cxr import ANNOTATIONS_DIR, write_mimic_cxr
    from schemas.errors import UserError

    wanted = {"seed": seed, "studies": studies}
    marker = root / FIXTURE_MARKER
    if (root / "mimic-cxr-2.0.0-metadata.csv.gz").exists() and (root / ANNOTATIONS_DIR).is_dir():
        # a fixture of another seed or size must not be reported as this one
        written = json.loads(marker.read_text()) if marker.exists() else None
        if written != wanted:
            what = f"seed {written['seed']}, {written['studies']} studies" if written else "an unrecorded seed"
            raise UserError(f"{root} holds a demo fixture of {what}, not seed {seed}, {studies} studies",
                            f"remove {root.parent} (its pipeline stages came from that fixture) or give another --out")
        return root
    write_mimic_cxr(root, studies=studies, seed=seed, jpg=True, learnable=True, annotations=True)
    atomic_write_json(marker, wanted)
    return root


def demo(
    out: Annotated[Path, typer.Option(help="where everything goes")] = Path("artifacts/demo"),
    studies: Annotated[int, typer.Option(min=1, help="fixture studies")] = DEMO_STUDIES,
    seed: Annotated[int, typer.Option(help="fixture seed")] = 0,
    spec: Annotated[Path, typer.Option(help="ablation YAML: a `trained` and a `shuffled` variant")] = DEMO_SPEC,
    parallel: Annotated[int | None, typer.Option(min=1, help="variants trained at once, each in its own process "
                                                 "(default: one per CPU core; 1: one after the other)")] = None,
) -> None:
    """Run the demo on fixtures and print the summary."""
    from cxrio import atomic_write_json
    from flows.ablate import run_ablation
    from schemas.evaluation import EvaluationMetrics
    from schemas.pipeline import load_ablation_spec
    from tasks.evaluate.learning import (
        BALANCED_METRIC,
        LEARNING_METRIC,
        collapse_not_computed,
        describe_training,
        learned,
        learning_record,
    )
    from tasks.preflight import check_file, check_out_dir
    from tasks.report.render import write_report

    check_out_dir(out)  # before the fixture is written (a file there was a traceback after minutes of work)
    if spec == DEMO_SPEC and not spec.exists():
        spec = _PROJECT_ROOT / DEMO_SPEC
    check_file(spec, "--spec", "an ablation YAML with a `trained` and a `shuffled` variant")
    ablation = load_ablation_spec(spec, {"data.root": str(out / "learnable"), "out": str(out / "pipeline")})
    if not (out / "learnable" / FIXTURE_MARKER).exists() and any((out / "pipeline" / "stages").glob("ingest-*")):
        # stage keys hash the config, not the fixture's files: a new fixture would reuse the old one's stages
        from schemas.errors import UserError

        raise UserError(f"{out} holds pipeline stages but no record of the demo fixture they were ingested from",
                        f"remove {out} or give another --out")
    root = write_demo_fixture(out / "learnable", studies, seed)
    result = run_flow(run_ablation, ablation, parallel=parallel)
    variants = result["variants"]
    trained = variants["trained"]

    marker = Path(trained["stages"]["ingest"]["dir"]) / "_complete.json"
    ingest = json.loads(marker.read_text())["summary"]
    typer.echo("\n== ingest reconciliation (found = kept + filtered + quarantined)")
    typer.echo(json.dumps({k: ingest[k] for k in ("found", "kept", "filtered", "quarantined",
                                                  "filtered_by_reason", "quarantined_by_reason")}, indent=2))

    metrics = {v: EvaluationMetrics.model_validate_json((Path(r["eval_dir"]) / "metrics.json").read_text())
               for v, r in variants.items()}
    typer.echo("\n== metrics per variant (95% bootstrap CIs)")
    for v, m in metrics.items():
        shown = [f"{k} {r.display()}" for k, r in m.metrics.items()
                 if r.value is not None and k in (LEARNING_METRIC, "rule_f1_macro_14", "rouge_l", "bleu_4")]
        typer.echo(f"  {v:<9} " + "; ".join(shown))
    line = collapse_not_computed(metrics["trained"].metrics)
    if line:
        typer.echo(f"  {line}")

    comparison = result["compare"]["significance"]["trained"]
    records = {}
    for name in (LEARNING_METRIC, BALANCED_METRIC):
        cmp = comparison.get("metrics", {}).get(name) or {"not_computed": comparison.get("not_computed")}
        records[name] = learning_record(name, metrics["trained"].metrics[name], metrics["shuffled"].metrics[name],
                                        cmp, metrics["trained"].baselines)
    record = {**records[LEARNING_METRIC], "learned": learned(records[LEARNING_METRIC]),
              "balanced_accuracy": {**records[BALANCED_METRIC], "learned": learned(records[BALANCED_METRIC])}}
    atomic_write_json(out / "learning.json", record)
    typer.echo("\n== does the model read the images? Against the shuffle control (the same training, images "
               "swapped across studies) and the image-blind baselines (no training: the constant report best on the "
               "training split, and its most frequent report; the same text for every test study)")
    for name, text in ((LEARNING_METRIC, "rule-based label F1, micro over the 14 CheXpert observations"),
                       (BALANCED_METRIC, "balanced accuracy, mean over the findings the test references hold")):
        r = records[name]
        typer.echo(f"  {name} ({text}):")
        typer.echo(_comparison_text(r))
        typer.echo("    learned: " + ("yes, trained beats the shuffle control and every image-blind baseline with "
                                      "non-overlapping 95% CIs" if learned(r) else "not shown: " + _why_not(r)))
    for b_name, b in metrics["trained"].baselines.items():
        typer.echo(f"  baseline {b_name}: \"{b.prediction}\"")

    run_dir = Path(trained["stages"]["train"]["dir"])
    stored = ablation.variant_config("trained").data.image.size
    typer.echo(f"\n== what was trained\n  {describe_training(run_dir)} (ingest stored {stored} px), on CPU; the "
               "`shuffled` control is the "
               "same training with each training image swapped for another study's (a fixed derangement: no sample "
               "keeps its own image or gets one of its own study).")
    typer.echo(f"\n== where\n  learning.json: {out / 'learning.json'}\n  leaderboard:   "
               f"{result['compare']['dir']}\n  fixture:       {root}")
    from cxrflow_cli._links import LOCAL_UI, server_command

    # `make demo` keeps the runs in artifacts/prefect (PREFECT_HOME); no telemetry from the server either
    typer.echo(f"\n== the UI\n  {server_command()}\n  then open "
               f"{LOCAL_UI}/runs?tag=ablation:{ablation.name} (Runs filtered by tag "
               f"`ablation:{ablation.name}`: one row per variant, tagged with its headline metric);\n  Artifacts: "
               f"`ablation-{ablation.name}-leaderboard` (sortable) and `-leaderboard-md`.")
    # last, so `make demo` ends with it: the six sections of the paper, the verdict against both baselines
    write_report(out, out / "report.html")
    typer.echo(f"\n== the report (opens offline)\n{out / 'report.html'}")


def _why_not(r: dict) -> str:
    """Which comparators the trained model did not beat, and why (overlap, or no CI to compare)."""
    from tasks.evaluate.learning import not_beaten, value_ci_text

    if not r["trained"]["ci"]:
        return "the trained model has no 95% CI"
    others = {"shuffled": r["shuffled"], **r.get("baselines", {})}
    return "; ".join(f"{k}: the 95% CIs overlap (or trained lies below)" if others[k].get("ci") else
                     f"{k}: no 95% CI ({value_ci_text(others[k])})" for k in not_beaten(r))


def _comparison_text(r: dict) -> str:
    from tasks.evaluate.leaderboard import SMALL_N
    from tasks.evaluate.learning import value_ci_text as ci
    from tasks.evaluate.resampling import p_text

    d = ci(r["difference"])
    p = p_text(r["p_value"], r.get("p_floor"), 4)  # `p < 0.002` when no resample crossed 0
    small = f"  (small n: fewer than {SMALL_N} test reports, the CIs are wide)" if (r["n"] or 0) < SMALL_N else ""
    base = "".join(f"\n    {k:<16} {ci(v)}  (image-blind baseline)" for k, v in r.get("baselines", {}).items())
    return (f"    trained          {ci(r['trained'])}\n    shuffled         {ci(r['shuffled'])}{base}\n"
            f"    trained - shuffled {d}, {p} (paired bootstrap over n = {r['n']} test reports){small}")
