"""`cxrflow structure`: report structuring / translation / synthesis over a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli._common import Backend, Operation, run_flow, value


def register(app: typer.Typer) -> None:
    app.command("structure")(structure)


def structure(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from `cxrflow ingest`")] = ...,
    out: Annotated[Path, typer.Option(help="output folder (reports.parquet, structure-summary.json, ledger)")] = ...,
    operation: Annotated[Operation | None, typer.Option(
        help="default per row: label-only rows synthesize, others structure"
    )] = None,
    backend: Annotated[Backend, typer.Option(help="rules (no model) or an LLM backend")] = Backend.rules,
    model: Annotated[str, typer.Option(help="model, or the Azure deployment name")] = "gpt-4o",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (default OPENAI_BASE_URL)")] = None,
    azure_endpoint: Annotated[str | None, typer.Option(help="Azure OpenAI resource endpoint")] = None,
    secret_block: Annotated[str | None, typer.Option(help="Prefect Secret block holding the API key")] = None,
    batch: Annotated[bool, typer.Option("--batch", help="use the Batch API (half price, up to 24 h)")] = False,
    batch_poll_s: Annotated[float, typer.Option(help="seconds between batch status polls (at most)")] = 30.0,
    concurrency: Annotated[int, typer.Option(help="concurrent requests", min=1)] = 8,
    rpm: Annotated[int | None, typer.Option(help="requests-per-minute budget", min=1)] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens-per-minute budget", min=1)] = None,
    cache_dir: Annotated[Path, typer.Option(help="answer cache")] = Path("artifacts/llm-cache"),
    allow_endpoint: Annotated[list[str] | None, typer.Option(
        help="host that credentialed data may reach (repeatable); only if your data-use agreement covers it"
    )] = None,
    prefect: Annotated[bool, typer.Option("--prefect/--no-prefect", help="run as a Prefect flow")] = True,
) -> None:
    """Structure reports (or translate / synthesize them) with the rules baseline or an LLM."""
    from schemas.llm import LLMConfig, StructureConfig
    from tasks import preflight

    preflight.check_file(manifest, "--manifest", "manifest.parquet from `cxrflow ingest`")
    preflight.check_manifest(manifest)
    preflight.check_out_dir(out)
    backend, operation = value(backend), value(operation)
    llm = LLMConfig(
        backend=backend, model=model, base_url=base_url, azure_endpoint=azure_endpoint, secret_block=secret_block,
        batch=batch, batch_poll_s=batch_poll_s, concurrency=concurrency, rpm=rpm, tpm=tpm, cache_dir=cache_dir,
        allow_endpoints=list(allow_endpoint or []),
    )
    cfg = StructureConfig(manifest=manifest, out=out, operation=operation, llm=llm)
    from cxrflow_cli.progress import counter
    from tasks.llm.guard import DataUseError

    try:
        with counter("reports structured", "cost") as update:
            if prefect:
                from flows.structure import structure as structure_flow

                summary = run_flow(structure_flow, cfg)
            else:
                from flows import progress
                from tasks.reports.structure import run_structure

                def on_progress(done: int, total: int, cost: float) -> None:
                    update(done, total)
                    progress.notify_fields({"cost": f"${cost:.4f}"})

                summary = run_structure(cfg, progress=on_progress)
    except DataUseError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    keys = ("reports", "ok", "quarantined", "requests", "cache_hits", "prompt_tokens", "completion_tokens",
            "estimated_cost_usd", "comparison")
    typer.echo(json.dumps({k: summary.get(k) for k in keys}, indent=2))
