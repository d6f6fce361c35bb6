"""`cxrflow encoder`: contrastive image-encoder training on shards by open_clip's engine, then retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import run_flow


def register(app: typer.Typer) -> None:
    @app.command("encoder")
    def encoder(
        shards: Path = typer.Option(..., "--shards", help="SHARDS folder ({split}.index.json + tars)"),
        out: Path = typer.Option(
            ..., "--out", help="ENC folder: open_clip/, engine/, retrieval/, encoder-run.json"
        ),
        init: str = typer.Option("tiny", "--init", help="tiny | a local open_clip dir (BiomedCLIP layout)"),
        sources: str = typer.Option(
            None, "--sources", help="comma-separated sources to train on (default all)"
        ),
        epochs: int = typer.Option(1, "--epochs", min=0, help="0: export the start model as it is"),
        batch_size: int = typer.Option(
            64, "--batch-size", min=2, help="per process (the contrastive batch is the global one)"
        ),
        lr: float = typer.Option(5e-4, "--lr", help="learning rate (open_clip's --lr)"),
        samples_per_epoch: int = typer.Option(
            None,
            "--samples-per-epoch",
            min=1,
            help="samples drawn per epoch (default: the train split's size)",
        ),
        nproc: int = typer.Option(1, "--nproc", min=1, help="processes (GPUs) under torchrun"),
        n_bootstrap: int = typer.Option(
            500, "--n-bootstrap", min=0, help="bootstrap resamples of the retrieval CIs"
        ),
    ) -> None:
        """Train (or export) an open_clip encoder and evaluate its retrieval on the test split."""
        from pydantic import ValidationError

        from flows.encoder import encoder as encoder_flow
        from schemas.encoder import EncoderConfig
        from schemas.errors import validation_message
        from tasks import preflight
        from tasks.encoder.train import EncoderTrainingError

        preflight.check_shards(shards, "train")
        preflight.check_out_dir(out)
        try:
            cfg = EncoderConfig(
                shards=shards,
                out=out,
                init=init,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                samples_per_epoch=samples_per_epoch,
                nproc=nproc,
                n_bootstrap=n_bootstrap,
                sources=[s.strip() for s in sources.split(",")] if sources else None,
            )
        except ValidationError as e:
            raise validation_message(e, EncoderConfig) from None
        try:
            result = run_flow(encoder_flow, cfg, experiment=out.name)
        except (EncoderTrainingError, FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {str(e).splitlines()[0]}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2, default=str))
        for row in result["table"]:
            typer.echo(
                f"{row['metric']:<45} {row['value']}  chance {row['chance']}  x{row['ratio_to_chance']}"
            )
