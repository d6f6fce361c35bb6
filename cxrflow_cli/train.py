"""`cxrflow train`: stage 1 (projector) and/or stage 2 (LoRA) training from shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import Preset, Resize, Stage, value


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        shards: Path = typer.Option(..., "--shards", help="SHARDS folder ({split}.index.json + data/*.tar)"),
        out: Path = typer.Option(..., "--out", help="RUN folder (resumes when it holds the same config)"),
        preset: Preset = typer.Option(Preset.tiny, "--preset", help="model size: tiny (CPU tests) or llava-rad"),
        stage: Stage = typer.Option(Stage.both, "--stage", help="which stage(s) to train"),
        max_steps: int = typer.Option(
            None, "--max-steps", min=1,
            help="optimizer steps per stage, as in HF Trainer: epochs repeat as needed to take exactly N "
                 "(capped by --epochs when both are given)"),
        epochs: int = typer.Option(
            None, "--epochs", min=1, help="epochs per stage instead of the recipe's (1 then 3); caps --max-steps"),
        vision_path: Path = typer.Option(None, "--vision-path",
                                         help="local vision encoder dir (tiny: an encoder stage's open_clip dir)"),
        lm_path: Path = typer.Option(None, "--lm-path", help="llava-rad: local Vicuna-7B dir"),
        image_resize: Resize = typer.Option(None, "--image-resize", help="crop (LLaVA-Rad) or pad to square"),
        prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="run as the `train` flow"),
    ) -> None:
        """Train the LLaVA-style model; writes config, lineage, metrics.jsonl, checkpoints, loss.png."""
        from cxrflow_cli.progress import training_progress
        from schemas.train import default_config
        from tasks import preflight

        preflight.check_shards(shards, "train")
        preflight.check_out_dir(out)
        cfg = default_config(value(preset), shards, out,
                             stages=[1, 2] if stage is Stage.both else [int(value(stage))],
                             max_steps=max_steps, epochs=epochs, vision_path=vision_path, lm_path=lm_path,
                             image_resize=value(image_resize))
        preflight.check_train_config(cfg)
        with training_progress(show_logs=not prefect) as on_step:
            if prefect:
                from flows.train import train as train_flow

                summary = train_flow(cfg)
            else:
                from training.run import run_training

                summary = run_training(cfg, on_step=on_step)
                summary["stages"] = {k: {kk: vv for kk, vv in v.items() if kk != "losses"}
                                     for k, v in summary["stages"].items()}
        typer.echo(json.dumps(summary, indent=2, default=str))
