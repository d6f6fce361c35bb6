"""Plain entry point, no Prefect: `python -m training --shards DIR --out RUN [--preset tiny] [--stage both]`
or, multi-GPU, `accelerate launch --config_file training/launch/fsdp.yaml -m training ...` / torchrun.

The same flags as `cxrflow train` (tests/test_train_flow.py checks both lists): both build the config with
schemas/train.py config_from_options."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import get_args

from schemas.train import STAGE_CHOICES, TrainConfig


def parser() -> argparse.ArgumentParser:
    f = TrainConfig.model_fields
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("--shards", type=Path, required=True, help=f["shards"].description)
    p.add_argument("--out", type=Path, required=True, help=f["out"].description)
    p.add_argument("--preset", choices=get_args(f["preset"].annotation), default=f["preset"].default)
    p.add_argument("--stage", choices=STAGE_CHOICES, default="both")
    p.add_argument("--max-steps", type=int, default=None, help=f["max_steps"].description)
    p.add_argument("--epochs", type=int, default=None, help=f["epochs"].description)
    p.add_argument("--config", type=Path, default=None, help="TrainConfig JSON; flags override it")
    p.add_argument("--vision-path", type=Path, default=None, help=f["vision_path"].description)
    p.add_argument("--lm-path", type=Path, default=None, help=f["lm_path"].description)
    p.add_argument("--image-resize", choices=get_args(f["image_resize"].annotation), default=None)
    p.add_argument("--save-every", type=int, default=None, help=f["save_every"].description)
    p.add_argument("--seed", type=int, default=None, help=f["seed"].description)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    from schemas.train import config_from_options

    return config_from_options(
        a.shards, a.out, a.preset, a.stage, a.config, max_steps=a.max_steps, epochs=a.epochs,
        vision_path=a.vision_path, lm_path=a.lm_path, image_resize=a.image_resize, save_every=a.save_every,
        seed=a.seed,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from pydantic import ValidationError

    from schemas.errors import UserError, validation_message
    from tasks.preflight import check_train_config
    from training.run import run_training, summary_without_losses

    args = parse_args(argv)
    try:  # a user's mistake is one line and exit 2, as in `cxrflow train`; anything else keeps its traceback
        cfg = config_from_args(args)
        check_train_config(cfg)
        # and so are mistakes seen only in the data (batch vs examples, the shuffle control's studies)
        summary = run_training(cfg)
    except ValidationError as e:
        print(f"error: {validation_message(e, TrainConfig)}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary_without_losses(summary), default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
