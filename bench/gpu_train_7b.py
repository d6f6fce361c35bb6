"""Step time and model FLOPs utilisation (MFU) of the LLaVA-Rad-shaped model: ViT-B/14 at 518 px (1,369 image
tokens) + mlp2x_gelu projector + a LLaMA-2-7B-shaped LM, random weights (no downloads), bf16 autocast,
gradient checkpointing, stage 1 (projector only) then stage 2 (LoRA r64 + projector).

    python -m bench.gpu_train_7b                 # on a GPU machine (H100 target: MFU >= 40%)
    python -m bench.gpu_train_7b --smoke         # tiny shapes on CPU: checks the script itself (CI)

MFU = model FLOPs per step / (step time x peak bf16 FLOP/s). Model FLOPs count what the stage needs: the
frozen vision tower forward; the LM forward plus its activation-gradient backward (frozen weights get no
weight gradients, so the usual 6N-per-token rule would overstate the work); projector and LoRA forward +
both backward passes; attention as 4*S^2*h per layer forward (full, PaLM convention). Recomputation from
gradient checkpointing is not model work and is not counted.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

H100_BF16_DENSE_TFLOPS = 989.0


def shapes(smoke: bool) -> tuple[dict, dict]:
    if smoke:
        from training.model import TINY

        return dict(TINY["vision"]), {k: v for k, v in TINY["text"].items()} | {"vocab_size": 512}
    vision = dict(image_size=518, patch_size=14, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12)
    text = dict(vocab_size=32001, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    return vision, text


def model_flops(v: dict, t: dict, batch: int, seq: int, n_img: int, stage: int, lora_r: int) -> float:
    sv = n_img + 1
    hv, iv = v["hidden_size"], v["intermediate_size"]
    vis = 2 * batch * sv * v["num_hidden_layers"] * (4 * hv * hv + 2 * hv * iv) \
        + 4 * batch * v["num_hidden_layers"] * sv * sv * hv
    h, i, L = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    lm_fwd = 2 * batch * seq * (L * (4 * h * h + 3 * h * i) + h * t["vocab_size"]) + 4 * batch * L * seq * seq * h
    lm = 2 * lm_fwd  # forward + activation gradients
    proj = 3 * 2 * batch * n_img * (hv * h + h * h)
    lora = 0.0
    if stage == 2:  # A (h->r) and B (r->out) on q,k,v,o (h->h) and gate,up (h->i), down (i->h); fwd + 2 bwd
        per_tok = 4 * (h * lora_r + lora_r * h) + 2 * (h * lora_r + lora_r * i) + (i * lora_r + lora_r * h)
        lora = 3 * 2 * batch * seq * L * per_tok
    return float(vis + lm + proj + lora)


def build(smoke: bool, device: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaForConditionalGeneration

    from training.model import _llava_config

    v, t = shapes(smoke)
    config = _llava_config(CLIPVisionConfig(**v), LlamaConfig(**t), image_token_id=t["vocab_size"] - 1)
    dtype = torch.float32 if smoke else torch.bfloat16
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    return model, v, t


def time_stage(model, stage: int, args, v, t, device: str) -> dict:
    from schemas.train import stage2_defaults
    from training.model import configure_stage, n_image_tokens

    scfg = stage2_defaults()
    model = configure_stage(model, stage, scfg)
    if not args.smoke:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_img = n_image_tokens(model if stage == 1 else model.get_base_model())
    seq = 1 + n_img + args.text_len
    b = args.micro_batch
    ids = torch.randint(0, t["vocab_size"] - 2, (b, seq), device=device)
    ids[:, 1:1 + n_img] = t["vocab_size"] - 1
    labels = ids.clone()
    labels[:, :1 + n_img] = -100
    pixels = torch.randn(b, 3, v["image_size"], v["image_size"], device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    use_amp = device == "cuda"

    def step():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    flops = model_flops(v, t, b, seq, n_img, stage, scfg.lora_r)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    return {"stage": stage, "micro_batch": b, "seq_len": seq, "step_time_s": dt, "tokens_per_s": b * seq / dt,
            "samples_per_s": b / dt, "model_flops_per_step": flops, "achieved_tflops": flops / dt / 1e12,
            "mfu": (flops / dt / peak) if peak else None,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}, model


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (tests the script)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--text-len", type=int, default=128, help="findings tokens after the image tokens")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"peak bf16 dense TFLOP/s (default {H100_BF16_DENSE_TFLOPS:g} = H100 SXM on CUDA)")
    p.add_argument("--out", default=None, help="write the JSON result here too")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if not args.smoke and device != "cuda":
        raise SystemExit("no CUDA device: the 7B benchmark needs a GPU (use --smoke to test the script)")
    if args.smoke:
        args.micro_batch, args.text_len, args.warmup = min(args.micro_batch, 2), min(args.text_len, 16), 1
    if args.peak_tflops is None and device == "cuda":
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    torch.manual_seed(0)
    model, v, t = build(args.smoke, device)
    res = {}
    res["stage1"], model = time_stage(model, 1, args, v, t, device)
    res["stage2"], model = time_stage(model, 2, args, v, t, device)  # LoRA on the same base, as in the recipe
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "smoke": args.smoke, **res}
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    return res


if __name__ == "__main__":
    main()
