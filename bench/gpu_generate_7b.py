"""Generation latency and throughput at the LLaVA-Rad 7B shape (CLIP ViT-B/14 at 518 px -> 1,369 image
tokens, mlp2x_gelu projector, LLaMA-2-7B-shaped LM) with random bf16 weights on one GPU.

    python -m bench.gpu_generate_7b               # GPU: batch 1 latency, reports/s at batch 8 and 32
    python -m bench.gpu_generate_7b --smoke       # CPU: same code path at a tiny shape (checks it runs)

Every report generates exactly --max-new-tokens tokens (min_new_tokens = max_new_tokens) so figures do not
depend on where random weights emit EOS. Reference run in the same process: batch 1.
"""

from __future__ import annotations

import argparse
import time

import torch


def build(smoke: bool, device: str):
    """The same LLaVA-Rad 7B shape (or tiny, for --smoke) the training benchmark builds, in eval mode."""
    from bench.gpu_train_7b import build as build_llava

    model, _, text = build_llava(smoke, device)
    return model.eval(), model.config, text["vocab_size"] - 1


@torch.inference_mode()
def run(model, cfg, image_token: int, batch: int, new_tokens: int, device: str, dtype) -> float:
    n_img = cfg.image_seq_length
    prompt = torch.randint(1, 100, (batch, 40), device=device)  # ~instruction + indication length
    ids = torch.cat([prompt[:, :5], torch.full((batch, n_img), image_token, device=device), prompt[:, 5:]], 1)
    pixels = torch.randn(
        batch, 3, cfg.vision_config.image_size, cfg.vision_config.image_size, device=device, dtype=dtype
    )
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=pixels,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny shape on CPU")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batches", default="1,8,32")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device: run with --smoke to check the script on CPU (figures: not measured)"
        )
    dtype = torch.float32 if args.smoke else torch.bfloat16
    new_tokens = min(args.max_new_tokens, 8) if args.smoke else args.max_new_tokens
    model, cfg, image_token = build(args.smoke, device)
    run(model, cfg, image_token, 1, 4, device, dtype)  # warm-up
    base = None
    for b in (int(x) for x in args.batches.split(",")):
        dt = run(model, cfg, image_token, b, new_tokens, device, dtype)
        base = base or b / dt
        print(
            f"batch {b:2d}: {dt / b * 1000:9.1f} ms/report  {b / dt:7.2f} reports/s  "
            f"{b * new_tokens / dt:8.1f} tokens/s  ({b / dt / base:.2f}x batch {args.batches.split(',')[0]})"
            + ("  [smoke: tiny shape on CPU, not a measurement]" if args.smoke else "")
        )
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
