"""`cxrflow train`: stage 1 (projector) and/or stage 2 (LoRA) training from shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        shards: Path = typer.Option(..., "--shards", help="SHARDS folder ({split}.index.json + tars)"),
        out: Path = typer.Option(..., "--out", help="RUN folder (resumes when it holds the same config)"),
        preset: str = typer.Option("tiny", "--preset", help="tiny | llava-rad"),
        stage: str = typer.Option("both", "--stage", help="1 | 2 | both"),
        max_steps: int = typer.Option(None, "--max-steps", help="cap on optimizer steps per stage"),
        vision_path: Path = typer.Option(None, "--vision-path",
                                         help="local vision encoder dir (tiny: an encoder stage's open_clip dir)"),
        lm_path: Path = typer.Option(None, "--lm-path", help="llava-rad: local Vicuna-7B dir"),
        image_resize: str = typer.Option(None, "--image-resize", help="crop (LLaVA-Rad) | pad"),
        prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="run as the `train` flow"),
    ) -> None:
        """Train the LLaVA-style model; writes config, lineage, metrics.jsonl, checkpoints, loss.png."""
        from schemas.train import default_config

        if preset not in ("tiny", "llava-rad") or stage not in ("1", "2", "both"):
            raise typer.BadParameter("--preset tiny|llava-rad, --stage 1|2|both")
        cfg = default_config(preset, shards, out, stages=[1, 2] if stage == "both" else [int(stage)],
                             max_steps=max_steps, vision_path=vision_path, lm_path=lm_path,
                             image_resize=image_resize)
        if prefect:
            from flows.train import train as train_flow

            summary = train_flow(cfg)
        else:
            from training.run import run_training

            summary = run_training(cfg)
            summary["stages"] = {k: {kk: vv for kk, vv in v.items() if kk != "losses"}
                                 for k, v in summary["stages"].items()}
        typer.echo(json.dumps(summary, indent=2, default=str))
