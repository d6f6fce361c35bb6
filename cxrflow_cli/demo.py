"""`cxrflow demo`: the main job on an embedded default — fixtures, Prefect's local server, files under
artifacts/. Writes a small MIMIC-CXR fixture (with one input per defect kind), runs the `pipeline` flow with
configs/demo.yaml (ingest -> structure -> validate -> shard -> tiny train -> evaluate) and prints the ingest
reconciliation, the metrics table and where everything is. A second `make demo` reuses every stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DEMO_CONFIG = Path("configs/demo.yaml")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def write_demo_fixture(root: Path, studies: int = 24, seed: int = 0) -> Path:
    """The MIMIC-CXR fixture with its LLaVA-Rad annotation files (the report-processing ablation reads them)."""
    from fixtures.mimic_cxr import ANNOTATIONS_DIR, write_mimic_cxr

    if not (root / "mimic-cxr-2.0.0-metadata.csv.gz").exists() or not (root / ANNOTATIONS_DIR).is_dir():
        write_mimic_cxr(root, studies=studies, seed=seed, annotations=True)
    return root


def demo(
    out: Annotated[Path, typer.Option(help="where everything goes")] = Path("artifacts/demo"),
    studies: Annotated[int, typer.Option(help="fixture studies")] = 24,
    seed: Annotated[int, typer.Option(help="fixture seed")] = 0,
    config: Annotated[Path, typer.Option(help="pipeline YAML")] = DEMO_CONFIG,
) -> None:
    """Run the demo on fixtures and print the summary."""
    from flows.pipeline import pipeline, render_text
    from schemas.pipeline import load_pipeline_config

    root = write_demo_fixture(out / "mimic-cxr", studies, seed)
    cfg = load_pipeline_config(config, {"data.root": str(root), "out": str(out / "pipeline")})
    result = pipeline(cfg)
    marker = Path(result["stages"]["ingest"]["dir"]) / "_complete.json"
    ingest = json.loads(marker.read_text())["summary"]
    typer.echo("\n== ingest reconciliation (found = kept + filtered + quarantined)")
    typer.echo(json.dumps({k: ingest[k] for k in ("found", "kept", "filtered", "quarantined",
                                                  "filtered_by_reason", "quarantined_by_reason")}, indent=2))
    typer.echo("\n== " + render_text(result))
    typer.echo(f"\nfixture: {root}\noutputs: {cfg.out}\nrun summary: {Path(cfg.out) / 'runs' / 'demo.json'}")
