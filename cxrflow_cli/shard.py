"""`cxrflow shard`: validate a manifest with Great Expectations and write WebDataset shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("shard")
    def shard(
        data: Path = typer.Option(..., "--data", help="folder with manifest.parquet (+ reports.parquet)"),
        out: Path = typer.Option(..., "--out", help="SHARDS folder"),
        max_samples: int = typer.Option(10_000, "--max-samples", help="samples per shard"),
        max_bytes: int = typer.Option(1_000_000_000, "--max-bytes", help="bytes per shard"),
        artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="artifacts root (GX context)"),
        frontal_only: bool = typer.Option(True, "--frontal-only/--all-views", help="expect AP/PA views only"),
    ) -> None:
        """Validate DATA (quarantining failing rows), shard it per split, index and read it back."""
        from flows.validate_shard import validate_and_shard
        from schemas.shards import ShardConfig, ValidateConfig, ValidateShardParams
        from tasks.validate import ValidationFailed

        params = ValidateShardParams(
            data=data,
            out=out,
            artifacts=artifacts,
            validate_cfg=ValidateConfig(frontal_only=frontal_only),
            shard=ShardConfig(max_samples=max_samples, max_bytes=max_bytes),
        )
        try:
            summary = validate_and_shard(params)
        except ValidationFailed as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        typer.echo(json.dumps({k: summary[k] for k in ("splits", "shards", "reconciliation")}, indent=2))
