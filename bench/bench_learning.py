"""Learning curve of the tiny model on the learnable fixture: rule-based label F1 (micro, 14 observations) of
the model trained on aligned image-report pairs vs the shuffle control (images permuted across training
samples), at every `--eval-every` stage-2 steps, with bootstrap CIs and the paired comparison.

The reference is the shuffle control itself, trained and scored in the same command: it learns the reports'
language and the findings' prevalence but cannot tie them to the image.

    python -m bench.bench_learning --shards SHARDS --out DIR [--epochs 12] [--eval-every 24]

SHARDS: the shard stage's output of the learnable fixture (e.g. a `cxrflow pipeline --config
configs/learnable.yaml` run's OUT/stages/shard-*).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METRIC = "rule_f1_micro_14"


def generator_at(run_dir: Path, checkpoint: Path):
    """The run's model with the stage-2 weights of one checkpoint (ReportGenerator.from_run, mid-run)."""
    from safetensors.torch import load_file

    from schemas.train import TrainConfig
    from training.data import ImageTransform
    from training.inference import ReportGenerator
    from training.model import (
        build_model,
        build_tokenizer,
        configure_stage,
        image_size_for,
        load_projector,
        load_trainable,
    )

    cfg = TrainConfig.model_validate_json((run_dir / "config.json").read_text())
    tok = build_tokenizer(cfg, run_dir)
    model = build_model(cfg, tok, run_dir)
    load_projector(model, load_file(str(run_dir / "final" / "stage1-projector.safetensors")))
    model = configure_stage(model, 2, cfg.stage2)
    load_trainable(model, load_file(str(checkpoint / "trainable.safetensors")))
    model = model.merge_and_unload().eval()
    model.requires_grad_(False)
    return ReportGenerator(model, tok, ImageTransform(image_size_for(cfg), cfg.image_resize), 2, "cpu")


def score_checkpoint(run_dir: Path, checkpoint: Path, shards: Path, out: Path, max_new_tokens: int):
    from tasks.evaluate.inference import generate_predictions, read_predictions
    from tasks.evaluate.scoring import score_records

    gen = generator_at(run_dir, checkpoint)
    preds = out / f"{checkpoint.name}.jsonl"
    generate_predictions(gen, shards, preds, split="test", batch_size=16, max_new_tokens=max_new_tokens)
    metrics, frame, _ = score_records(read_predictions(preds), n_bootstrap=1000)
    return metrics.metrics[METRIC], frame


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=12, help="stage-2 epochs")
    p.add_argument("--eval-every", type=int, default=24, help="stage-2 steps between scored checkpoints")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--image-size", type=int, default=0, help="0: the tiny preset's 32 px")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--only", choices=["trained", "shuffled"], help="one variant (a quick sweep; no comparison)")
    args = p.parse_args(argv)

    from schemas.train import default_config, stage1_defaults, stage2_defaults
    from tasks.evaluate.clinical import f1_specs
    from tasks.evaluate.resampling import paired_test
    from tasks.evaluate.scoring import frame_columns
    from training import checkpoint as ckpt
    from training.run import run_training

    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "variants": {}, "curve": []}
    frames: dict[str, dict[str, object]] = {}
    for variant, shuffle in (("trained", False), ("shuffled", True)):
        if args.only and variant != args.only:
            continue
        run = args.out / variant
        cfg = default_config(
            "tiny", args.shards, run, stages=[1, 2], image_size=args.image_size, shuffle_images=shuffle,
            stage1=stage1_defaults(global_batch_size=args.batch, micro_batch_size=args.batch),
            stage2=stage2_defaults(global_batch_size=args.batch, micro_batch_size=args.batch, epochs=args.epochs,
                                   lr=args.lr),
            save_every=args.eval_every, keep_checkpoints=1000,
        )
        t0 = time.perf_counter()
        summary = run_training(cfg)
        train_s = time.perf_counter() - t0
        points = {}
        for c in ckpt.list_checkpoints(run / "checkpoints", 2):
            step = int(c.name.rsplit("-", 1)[1])
            m, frame = score_checkpoint(run, c, args.shards, args.out / "predictions" / variant, args.max_new_tokens)
            points[step] = m
            frames.setdefault(variant, {})[step] = frame
        results["variants"][variant] = {
            "train_seconds": round(train_s, 1),
            "stage2_steps": summary["stages"][2]["steps"] if 2 in summary["stages"] else None,
            "examples": summary["data"]["examples"],
            "points": {s: m.display() for s, m in points.items()},
        }
    spec = next(s for s in f1_specs() if s.name == METRIC)
    for step in sorted(frames["trained"]) if not args.only else []:
        a, b = (frame_columns(frames[v][step]) for v in ("shuffled", "trained"))
        cmp = paired_test(spec, a, b, n_resamples=1000)
        results["curve"].append({
            "step": step, "trained": results["variants"]["trained"]["points"][step],
            "shuffled": results["variants"]["shuffled"]["points"][step],
            "difference": f"{cmp.diff:+.2f} [{cmp.diff_ci[0]:.2f}, {cmp.diff_ci[1]:.2f}]", "p": cmp.p_value,
            "n": cmp.n,
        })
    if not args.only:
        ratio = results["variants"]["trained"]["train_seconds"] / results["variants"]["shuffled"]["train_seconds"]
        results["train_time_ratio_trained_vs_shuffled"] = round(ratio, 2)
    print(json.dumps(results, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
