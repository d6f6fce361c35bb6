"""`cxrflow demo`: the main job on an embedded default — fixtures, Prefect's local server, files under
artifacts/. Writes a small MIMIC-CXR fixture (with one input per defect kind), runs the `data` flow
(ingest -> structure -> validate -> shard) and prints the reconciliation and where everything is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[Path, typer.Option(help="where everything goes")] = Path("artifacts/demo"),
    studies: Annotated[int, typer.Option(help="fixture studies")] = 24,
    seed: Annotated[int, typer.Option(help="fixture seed")] = 0,
) -> None:
    """Run the demo on fixtures and print the summary."""
    from fixtures.mimic_cxr import write_mimic_cxr
    from flows.data import data_pipeline
    from schemas.shards import DataParams

    root = out / "mimic-cxr"
    if not (root / "mimic-cxr-2.0.0-metadata.csv.gz").exists():
        write_mimic_cxr(root, studies=studies, seed=seed)
    result = data_pipeline(DataParams(root=root, out=out / "run", image_size=224))
    ingest = result["ingest"]
    typer.echo("\n== ingest reconciliation (found = kept + filtered + quarantined)")
    typer.echo(json.dumps({k: ingest[k] for k in ("found", "kept", "filtered", "quarantined",
                                                  "filtered_by_reason", "quarantined_by_reason",
                                                  "decoded", "reused")}, indent=2))
    typer.echo("\n== stages")
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "ingest"}, indent=2, default=str)[:4000])
    typer.echo(f"\nfixture: {root}\noutputs: {out / 'run'}")
