"""Plain entry point, no Prefect: `python -m training --shards DIR --out RUN [--preset tiny] [--stage both]`
or, multi-GPU, `accelerate launch --config_file training/launch/fsdp.yaml -m training ...` / torchrun."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=["tiny", "llava-rad"], default="tiny")
    p.add_argument("--stage", choices=["1", "2", "both"], default="both")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps per stage (epochs repeat as needed; --epochs caps it)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage instead of the recipe's")
    p.add_argument("--config", type=Path, default=None, help="TrainConfig JSON; flags override it")
    p.add_argument("--vision-path", type=Path, default=None)
    p.add_argument("--lm-path", type=Path, default=None)
    p.add_argument("--image-resize", choices=["crop", "pad"], default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args(argv)


def stages_of(stage: str) -> list[int]:
    return [1, 2] if stage == "both" else [int(stage)]


def config_from_args(a: argparse.Namespace):
    from schemas.train import TrainConfig, default_config

    over = {"stages": stages_of(a.stage), "max_steps": a.max_steps, "epochs": a.epochs, "vision_path": a.vision_path,
            "lm_path": a.lm_path, "image_resize": a.image_resize, "save_every": a.save_every, "seed": a.seed}
    if a.config:
        base = json.loads(a.config.read_text())
        base.update({"shards": str(a.shards), "out": str(a.out), "preset": a.preset})
        base.update({k: v for k, v in over.items() if v is not None})
        return TrainConfig.model_validate(base)
    return default_config(a.preset, a.shards, a.out, **over)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from pydantic import ValidationError

    from schemas.errors import UserError, validation_message
    from schemas.train import TrainConfig
    from tasks.preflight import check_train_config
    from training.run import run_training

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
    stages = {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in summary["stages"].items()}
    print(json.dumps({**summary, "stages": stages}, default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
