"""`cxrflow data`: a source in its released layout to validated WebDataset shards in one command."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import IMAGE_SIZE, SOURCE_HELP, Backend, given, run_flow, value


def register(app: typer.Typer) -> None:
    @app.command("data")
    def data(
        source: str = typer.Option("mimic-cxr", "--source", help=SOURCE_HELP),
        root: Path | None = typer.Option(None, "--root", help="the dataset as released"),
        mixture: Path | None = typer.Option(
            None, "--mixture", help="YAML with `sources:` (several into one manifest)"
        ),
        out: Path = typer.Option(..., "--out", help="OUT: data/, shards/, artifacts/"),
        size: int = typer.Option(IMAGE_SIZE, "--size", min=16, max=4096, help="output image side"),
        all_views: bool = typer.Option(False, "--all-views", help="keep lateral views too"),
        workers: int | None = typer.Option(
            None, "--workers", min=1, help="ingest processes (default: all cores)"
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="cap on candidate images"),
        backend: Backend = typer.Option(Backend.rules, "--backend", help="report structuring backend"),
        model: str = typer.Option("gpt-4o", "--model", help="LLM model / deployment"),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint"),
        max_samples: int | None = typer.Option(
            None, "--max-samples", min=1, help="samples per shard (default: ShardConfig's, 10000)"),
        max_bytes: int | None = typer.Option(
            None, "--max-bytes", min=4096, help="bytes per shard (default: ShardConfig's, 1 GB)"),
        annotations: list[Path] | None = typer.Option(
            None,
            "--annotations",
            help="LLaVA-Rad MIMIC-CXR Annotations JSON (file or folder; repeatable): "
            "the released texts replace report structuring",
        ),
    ) -> None:
        """Ingest -> structure reports -> validate (Great Expectations) -> shard (WebDataset)."""
        from cxrflow_cli._common import load_yaml_mapping
        from flows.data import data_pipeline
        from schemas.config import ImageConfig
        from schemas.errors import UserError
        from schemas.shards import DataParams, ShardConfig
        from tasks import preflight

        preflight.check_out_dir(out)
        sources = []
        if mixture is not None:
            from schemas.config import SourceSpec

            listed = load_yaml_mapping(mixture, "--mixture").get("sources")
            if not isinstance(listed, list) or not listed:
                raise UserError(f"--mixture {mixture}: no `sources:` list")
            sources = [SourceSpec.model_validate(s) for s in listed]
            for spec in sources:
                preflight.check_source(spec.name)
                preflight.check_root(spec.name, spec.root, spec.options)
        else:
            preflight.check_source(source)
            preflight.check_root(source, root)
        from tasks.reports.annotations import AnnotationsError, annotation_files

        if annotations and (mixture is not None or source != "mimic-cxr"):
            raise typer.BadParameter(
                "--annotations (LLaVA-Rad's MIMIC-CXR texts) needs --source mimic-cxr and no --mixture"
            )
        try:
            annotation_files(annotations or [])
        except AnnotationsError as exc:
            raise typer.BadParameter(str(exc)) from exc
        params = DataParams(
            annotations=annotations or [],
            source=source,
            root=root,
            sources=sources,
            out=out,
            frontal_only=not all_views,
            image=ImageConfig(size=size),
            workers=workers,
            limit=limit,
            llm_backend=value(backend),
            llm_model=model,
            llm_base_url=base_url,
            shard=ShardConfig(**given(max_samples=max_samples, max_bytes=max_bytes)),
        )
        from cxrflow_cli.progress import counter

        with counter("images ingested"):
            result = run_flow(data_pipeline, params)  # an unreadable annotations file inside it is a user error (main.py)
        shards = result["shards"]
        typer.echo(
            json.dumps({"splits": shards["splits"], "reconciliation": shards["reconciliation"]}, indent=2)
        )
