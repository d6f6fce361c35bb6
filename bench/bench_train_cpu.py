"""Tiny-preset training throughput on CPU: samples/s and tokens/s of the real loop (wids reading, decoding,
CLIP preprocessing, tokenising, forward/backward, optimizer, metrics) per stage, as a ratio against a
reference in the same command: the same model and batch size stepping on one pre-collated batch (compute
only), so the ratio is the share of time the data path and bookkeeping leave to compute.

    python -m bench.bench_train_cpu [--samples 64] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def compute_only(cfg, stage: int, run_dir: Path, steps: int) -> dict:
    from training.data import ExampleDataset, ImageTransform, collate
    from training.model import build_model, build_tokenizer, configure_stage, load_projector, n_image_tokens
    from training.run import prepare_data

    ds, examples, _ = prepare_data(cfg, run_dir)
    tok = build_tokenizer(cfg, run_dir)
    base = build_model(cfg, tok, run_dir)
    if stage == 2:
        from safetensors.torch import load_file

        load_projector(base, load_file(str(run_dir / "final" / "stage1-projector.safetensors")))
    model = configure_stage(base, stage, cfg.stage(stage))
    data = ExampleDataset(ds, examples, tok, stage, ImageTransform(32), n_image_tokens(base), 256)
    scfg = cfg.stage(stage)
    batch = collate([data[i] for i in range(scfg.micro_batch_size)], tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=scfg.lr)
    accum = scfg.global_batch_size // scfg.micro_batch_size
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(accum):
            (model(**batch).loss / accum).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    dt = sum(times[1:]) / (len(times) - 1)
    tokens = int(batch["attention_mask"].sum()) * accum
    return {"samples_per_s": scfg.global_batch_size / dt, "tokens_per_s": tokens / dt}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per stage (first one is warm-up)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from fixtures.train_shards import write_train_shards
    from schemas.train import default_config, stage1_defaults, stage2_defaults
    from training.plots import read_metrics
    from training.run import run_training

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        shards = write_train_shards(Path(tmp) / "shards", n=args.samples, per_shard=16)
        cfg = default_config("tiny", shards, Path(tmp) / "run", max_steps=args.steps, save_every=10**6,
                             stage1=stage1_defaults(global_batch_size=8, micro_batch_size=4, epochs=50),
                             stage2=stage2_defaults(global_batch_size=8, micro_batch_size=4, epochs=50))
        run_training(cfg)
        rows = read_metrics(cfg.out / "metrics.jsonl")
        result = {"samples": args.samples, "steps": args.steps, "global_batch": 8, "micro_batch": 4,
                  "threads": torch.get_num_threads()}
        for stage in (1, 2):
            mine = [r for r in rows if r["stage"] == stage][1:]  # drop the warm-up step
            dt = sum(r["step_time_s"] for r in mine) / len(mine)
            loop = {"samples_per_s": 8 / dt,
                    "tokens_per_s": sum(r["tokens_per_s"] * r["step_time_s"] for r in mine) / sum(
                        r["step_time_s"] for r in mine)}
            ref = compute_only(cfg, stage, cfg.out, args.steps)
            result[f"stage{stage}"] = {"loop": loop, "compute_only": ref,
                                       "loop_over_compute": loop["samples_per_s"] / ref["samples_per_s"]}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
