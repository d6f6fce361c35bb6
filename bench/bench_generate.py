"""Generation throughput of the tiny preset on CPU through the ReportGenerator contract.

    python -m bench.bench_generate [--reports 16] [--max-new-tokens 32]

Reference run in the same process: batch 1. Reported: reports/s and generated tokens/s at batch 1 and 8,
and the batch-8 / batch-1 ratio (absolute figures depend on the machine; the ratio is what to compare).
Random weights (nothing to download); generated token counts are the real lengths of each continuation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tiny_generator(tmp: Path):
    from schemas.train import default_config
    from training.data import ImageTransform
    from training.inference import ReportGenerator
    from training.model import build_model, build_tokenizer, image_size_for

    cfg = default_config("tiny", tmp / "shards", tmp / "run")
    tok = build_tokenizer(cfg, tmp / "run")
    model = build_model(cfg, tok, tmp / "run").eval()
    return ReportGenerator(model, tok, ImageTransform(image_size_for(cfg), cfg.image_resize), 2, "cpu")


def measure(gen, images, indications, batch: int, max_new_tokens: int) -> dict:
    n_tokens = 0
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        outs = gen.generate(images[i : i + batch], indications[i : i + batch], max_new_tokens=max_new_tokens)
        n_tokens += sum(
            min(len(gen.tok(o, add_special_tokens=False).input_ids), max_new_tokens) for o in outs
        )
    dt = time.perf_counter() - start
    return {
        "batch": batch,
        "seconds": dt,
        "reports_per_s": len(images) / dt,
        "tokens_per_s": n_tokens / dt,
        "tokens": n_tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8), "L") for _ in range(args.reports)
    ]
    indications = [None if i % 2 else "Cough and fever." for i in range(args.reports)]
    with tempfile.TemporaryDirectory() as d:
        gen = tiny_generator(Path(d))
        gen.generate(images[:2], indications[:2], max_new_tokens=4)  # warm-up
        ref = measure(gen, images, indications, 1, args.max_new_tokens)
        b8 = measure(gen, images, indications, 8, args.max_new_tokens)
    for r in (ref, b8):
        print(
            f"batch {r['batch']:2d}: {r['reports_per_s']:7.2f} reports/s  {r['tokens_per_s']:8.1f} tokens/s "
            f"({r['tokens']} tokens in {r['seconds']:.2f} s)"
        )
    print(f"batch 8 / batch 1 tokens/s: {b8['tokens_per_s'] / ref['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
