"""`cxrflow train`: stage 1 (projector) and/or stage 2 (LoRA) training from shards.

The flags are `python -m training`'s (the plain entry point without Prefect; tests/test_train_flow.py checks
the two lists match) plus --prefect/--no-prefect; both build the config with schemas/train.py
config_from_options."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import Preset, Resize, Stage, default, run_flow, value
from schemas.train import TrainConfig


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        shards: Path = typer.Option(..., "--shards", help="SHARDS folder ({split}.index.json + data/*.tar)"),
        out: Path = typer.Option(..., "--out", help="RUN folder (resumes when it holds the same config)"),
        preset: Preset = typer.Option(Preset(default(TrainConfig, "preset")), "--preset",
                                      help="model size: tiny (CPU tests) or llava-rad"),
        stage: Stage = typer.Option(Stage.both, "--stage", help="which stage(s) to train"),
        max_steps: int = typer.Option(
            None, "--max-steps", min=1,
            help="optimizer steps per stage, as in HF Trainer: epochs repeat as needed to take exactly N "
                 "(capped by --epochs when both are given)"),
        epochs: int = typer.Option(
            None, "--epochs", min=1, help="epochs per stage instead of the recipe's (1 then 3); caps --max-steps"),
        config: Path = typer.Option(None, "--config", exists=True, dir_okay=False,
                                    help="TrainConfig JSON (a run's config.json); flags override it"),
        vision_path: Path = typer.Option(None, "--vision-path",
                                         help="local vision encoder dir (tiny: an encoder stage's open_clip dir)"),
        lm_path: Path = typer.Option(None, "--lm-path", help="llava-rad: local Vicuna-7B dir"),
        image_resize: Resize = typer.Option(None, "--image-resize", help="crop (LLaVA-Rad) or pad to square"),
        save_every: int = typer.Option(None, "--save-every", min=1, help="checkpoint every N optimizer steps"),
        seed: int = typer.Option(None, "--seed", help="every random stream of the run derives from it "
                                 "(default: TrainConfig's, 0)"),
        prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="run as the `train` flow"),
    ) -> None:
        """Train the LLaVA-style model; writes config, lineage, metrics.jsonl, checkpoints, loss.png."""
        from cxrflow_cli.progress import training_progress
        from schemas.train import config_from_options
        from tasks import preflight

        preflight.check_shards(shards, "train")
        preflight.check_out_dir(out)
        cfg = config_from_options(shards, out, value(preset), value(stage), config, max_steps=max_steps,
                                  epochs=epochs, vision_path=vision_path, lm_path=lm_path,
                                  image_resize=value(image_resize), save_every=save_every, seed=seed)
        preflight.check_train_config(cfg)
        with training_progress(show_logs=not prefect) as on_step:
            if prefect:
                from flows.train import train as train_flow

                summary = run_flow(train_flow, cfg)
            else:
                from training.run import run_training, summary_without_losses

                summary = summary_without_losses(run_training(cfg, on_step=on_step))
        typer.echo(json.dumps(summary, indent=2, default=str))
