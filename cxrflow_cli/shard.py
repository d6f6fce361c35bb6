"""`cxrflow shard`: validate a manifest with Great Expectations and write WebDataset shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import run_flow


def register(app: typer.Typer) -> None:
    @app.command("shard")
    def shard(
        data: Path = typer.Option(..., "--data", help="folder with manifest.parquet (+ reports.parquet)"),
        out: Path = typer.Option(..., "--out", help="SHARDS folder"),
        max_samples: int | None = typer.Option(
            None, "--max-samples", min=1, help="samples per shard (default: ShardConfig's, 10000)"),
        max_bytes: int | None = typer.Option(
            None, "--max-bytes", min=4096, help="bytes per shard (default: ShardConfig's, 1 GB)"),
        artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="artifacts root (GX context)"),
        frontal_only: bool = typer.Option(True, "--frontal-only/--all-views", help="expect AP/PA views only"),
        llava_image_root: Path = typer.Option(
            None,
            "--llava-image-root",
            help="absolute folder the LLaVA JSON's image paths start with (default: relative to the JSON's folder)",
        ),
        llava_nan: bool = typer.Option(
            False,
            "--llava-nan/--llava-null",
            help="unmentioned labels as NaN like the LLaVA-Rad release (not valid JSON) or null (default)",
        ),
    ) -> None:
        """Validate DATA (quarantining failing rows), shard it per split, index and read it back."""
        from cxrflow_cli._common import given
        from cxrflow_cli.progress import counter
        from flows.shard import shard as shard_flow
        from schemas.errors import UserError
        from schemas.shards import ShardConfig, ShardParams, ValidateConfig
        from tasks import preflight

        preflight.check_data_dir(data)
        preflight.check_out_dir(out)
        preflight.check_out_dir(artifacts, "--artifacts")
        if llava_image_root is not None and not llava_image_root.is_absolute():
            raise UserError(f"--llava-image-root {llava_image_root} is not an absolute path")
        params = ShardParams(
            data=data,
            out=out,
            artifacts=artifacts,
            validate_cfg=ValidateConfig(frontal_only=frontal_only),
            shard=ShardConfig(**given(max_samples=max_samples, max_bytes=max_bytes)),
            llava_image_root=llava_image_root,
            llava_nan_labels=llava_nan,
        )
        with counter("samples sharded"):
            summary = run_flow(shard_flow, params)
        typer.echo(json.dumps({k: summary[k] for k in ("splits", "shards", "reconciliation")}, indent=2))
