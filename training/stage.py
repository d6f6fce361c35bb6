"""The parts of one training stage, built once and returned together: tokenizer, model (frozen and trainable
as the stage says), data (dataset + the deterministic order), optimizer and schedule. training/loop.py runs
them; nothing here takes a step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from schemas.errors import UserError
from schemas.train import StageConfig, TrainConfig
from training import checkpoint as ckpt
from training.data import DataPlan, ExampleDataset, ImageTransform, shuffled_images
from training.model import (
    build_model,
    build_tokenizer,
    configure_stage,
    image_size_for,
    load_projector,
    max_length_for,
    n_image_tokens,
)


def final_dir(run_dir: Path) -> Path:
    return run_dir / "final"


@dataclass
class Stage:
    """Everything one stage trains with. `model` and `optimizer` are the accelerator-prepared ones; `total`
    is the number of optimizer steps planned and `stop_reason` why it stops there."""

    cfg: TrainConfig
    stage: int
    run_dir: Path
    acc: Any  # accelerate.Accelerator
    tokenizer: Any
    model: torch.nn.Module
    dataset: ExampleDataset
    plan: DataPlan
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total: int
    stop_reason: str


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if cuda else "no")
    if cuda:  # tf32 for the fp32 parts (projector master weights, norms)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(mixed_precision=mp, cpu=not cuda)


def planned_steps(cfg: TrainConfig, scfg: StageConfig, steps_per_epoch: int) -> tuple[int, str]:
    """Optimizer steps this stage takes, and why it stops there. max_steps is the number of steps (epochs
    repeat as needed, as in HF Trainer); an explicit `epochs` caps it; otherwise the recipe's epochs."""
    epochs = cfg.epochs or scfg.epochs
    by_epochs = epochs * steps_per_epoch
    if cfg.max_steps is None:
        return by_epochs, f"{epochs} epoch(s) done ({steps_per_epoch} steps each)"
    if cfg.epochs is not None and by_epochs < cfg.max_steps:
        return by_epochs, f"--epochs {cfg.epochs} reached before --max-steps {cfg.max_steps}"
    return (
        cfg.max_steps,
        f"--max-steps {cfg.max_steps} reached ({cfg.max_steps / steps_per_epoch:.2f} epochs)",
    )


def _scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _stage_model(cfg: TrainConfig, stage: int, tokenizer, run_dir: Path):
    """The base model (stage 2: with stage 1's projector), then the stage's frozen/trainable split. Every
    global RNG is seeded from (seed, stage) before the trainable parts are made (LoRA init), so stage 2 does
    not depend on what ran before it in this process."""
    base = build_model(cfg, tokenizer, run_dir)
    if stage == 2:
        proj = final_dir(run_dir) / "stage1-projector.safetensors"
        if not proj.exists():
            raise FileNotFoundError(
                f"stage 2 starts from stage 1's projector: {proj} is missing "
                "(run stage 1 into this run dir first)"
            )
        from safetensors.torch import load_file

        load_projector(base, load_file(str(proj)))
    ckpt.seed_stage(cfg.seed, stage)
    model = configure_stage(base, stage, cfg.stage(stage))
    gc = cfg.gradient_checkpointing
    if gc == "on" or (gc == "auto" and torch.cuda.is_available()):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return base, model


def batch_too_large(n: int, stage: int, global_batch: int, micro_batch: int, world: int) -> str:
    """The one-line error for a split smaller than one global batch: the keys to lower and their `--set` form
    (pipeline config; `cxrflow train` takes the same keys without the `train.` prefix)."""
    if n == 0:
        return f"0 examples in the training split: nothing fills a global batch of {global_batch}"
    micro = min(micro_batch, max(n // world, 1))
    fit = max(micro * world * max(n // (micro * world), 1), micro * world)
    keys = [f"train.stage{stage}.global_batch_size={fit}"]
    if micro != micro_batch:
        keys.append(f"train.stage{stage}.micro_batch_size={micro}")
    return (f"{n} examples do not fill one global batch of {global_batch}: set "
            f"{' and '.join(k.split('=')[0] for k in keys)} to at most {n} (--set "
            + " --set ".join(keys) + ")")


def build_stage(cfg: TrainConfig, stage: int, data, accelerator=None) -> Stage:
    """The parts of `stage` of the run in cfg.out. `data` = (wids dataset, examples) from
    training.run.prepare_data. Config/data mistakes are UserErrors (one line at the CLI and in flow states)."""
    scfg, run_dir = cfg.stage(stage), cfg.out
    acc = accelerator or make_accelerator(cfg)
    tokenizer = build_tokenizer(cfg, run_dir)
    base, model = _stage_model(cfg, stage, tokenizer, run_dir)

    ds, examples = data
    world = acc.num_processes
    accum = scfg.global_batch_size // (scfg.micro_batch_size * world)
    if accum < 1 or scfg.global_batch_size % (scfg.micro_batch_size * world):
        raise UserError(
            f"global batch {scfg.global_batch_size} is not a multiple of micro batch "
            f"{scfg.micro_batch_size} x {world} processes"
        )
    plan = DataPlan(len(examples), scfg.micro_batch_size, accum, world, acc.process_index, cfg.seed)
    if plan.steps_per_epoch == 0:
        raise UserError(batch_too_large(len(examples), stage, scfg.global_batch_size, scfg.micro_batch_size, world))
    total, stop_reason = planned_steps(cfg, scfg, plan.steps_per_epoch)
    dataset = ExampleDataset(
        ds,
        examples,
        tokenizer,
        stage,
        ImageTransform(image_size_for(cfg), cfg.image_resize),
        n_image_tokens(base),
        max_length_for(cfg),
        prompt_format=cfg.preset,
        image_of=shuffled_images(examples, cfg.seed) if cfg.shuffle_images else None,
    )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=scfg.lr, weight_decay=scfg.weight_decay)
    scheduler = _scheduler(optimizer, scfg.scheduler, math.ceil(scfg.warmup_ratio * total), total)
    model, optimizer = acc.prepare(model, optimizer)
    return Stage(
        cfg=cfg,
        stage=stage,
        run_dir=run_dir,
        acc=acc,
        tokenizer=tokenizer,
        model=model,
        dataset=dataset,
        plan=plan,
        optimizer=optimizer,
        scheduler=scheduler,
        total=total,
        stop_reason=stop_reason,
    )
