"""One training stage: build, freeze, stream, optimise, checkpoint, resume.

Resume contract: the state after optimizer step s (trainable weights, AdamW moments, scheduler, RNG, and the
data position = s, from which DataPlan recomputes the exact remaining order) is all that step s+1 depends
on, so a run killed after checkpoint s and restarted computes the same step s+1 loss as one never stopped."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from schemas.train import TrainConfig
from training import checkpoint as ckpt
from training.data import DataPlan, ExampleDataset, ImageTransform, collate, shuffled_images
from training.model import (
    build_model,
    build_tokenizer,
    configure_stage,
    image_size_for,
    load_projector,
    load_trainable,
    max_length_for,
    n_image_tokens,
    projector_state,
    trainable_state,
)

log = logging.getLogger("cxrflow.training")
# per-step lines on their own child logger: the CLI hides them in quiet mode (the bar and metrics.jsonl have them)
step_log = logging.getLogger("cxrflow.training.steps")


def final_dir(run_dir: Path) -> Path:
    return run_dir / "final"


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (Linux reports KiB)


def _scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if cuda else "no")
    if cuda:  # tf32 for the fp32 parts (projector master weights, norms)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(mixed_precision=mp, cpu=not cuda)


class StageTrainer:
    def __init__(self, cfg: TrainConfig, stage: int, run_dir: Path, data, accelerator=None):
        """`data` = (wids dataset, examples) from training.run.prepare_data."""
        self.cfg, self.stage, self.run_dir = cfg, stage, run_dir
        self.scfg = cfg.stage(stage)
        self.acc = accelerator or make_accelerator(cfg)
        self.tok = build_tokenizer(cfg, run_dir)
        base = build_model(cfg, self.tok, run_dir)
        if stage == 2:
            proj = final_dir(run_dir) / "stage1-projector.safetensors"
            if not proj.exists():
                raise FileNotFoundError(f"stage 2 starts from stage 1's projector: {proj} is missing "
                                        "(run stage 1 into this run dir first)")
            from safetensors.torch import load_file

            load_projector(base, load_file(str(proj)))
        ckpt.seed_stage(cfg.seed, stage)  # stage 2 must not depend on what ran before it in this process
        self.model = configure_stage(base, stage, self.scfg)
        gc = cfg.gradient_checkpointing
        if gc == "on" or (gc == "auto" and torch.cuda.is_available()):
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ds, examples = data
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        accum = self.scfg.global_batch_size // (self.scfg.micro_batch_size * self.world)
        from schemas.errors import UserError  # config/data mistakes: one line at the CLI and in flow states

        if accum < 1 or self.scfg.global_batch_size % (self.scfg.micro_batch_size * self.world):
            raise UserError(f"global batch {self.scfg.global_batch_size} is not a multiple of micro batch "
                            f"{self.scfg.micro_batch_size} x {self.world} processes")
        self.plan = DataPlan(len(examples), self.scfg.micro_batch_size, accum, self.world, self.rank,
                             cfg.seed)
        if self.plan.steps_per_epoch == 0:
            raise UserError(f"{len(examples)} examples do not fill one global batch of "
                            f"{self.scfg.global_batch_size}: lower global_batch_size")
        self.total, self.stop_reason = planned_steps(cfg, self.scfg, self.plan.steps_per_epoch)
        self.dataset = ExampleDataset(ds, examples, self.tok, stage,
                                      ImageTransform(image_size_for(cfg), cfg.image_resize),
                                      n_image_tokens(base), max_length_for(cfg), prompt_format=cfg.preset,
                                      image_of=shuffled_images(examples, cfg.seed) if cfg.shuffle_images else None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.scfg.lr, weight_decay=self.scfg.weight_decay)
        warmup = math.ceil(self.scfg.warmup_ratio * self.total)
        self.scheduler = _scheduler(self.optimizer, self.scfg.scheduler, warmup, self.total)
        self.model, self.optimizer = self.acc.prepare(self.model, self.optimizer)
        self.step = 0
        self.ckpt_root = run_dir / "checkpoints"
        self.metrics_path = run_dir / "metrics.jsonl"

    # ---- checkpoints -------------------------------------------------------------------------------
    def _sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def save_checkpoint(self) -> Path | None:
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            if self._sharded():  # optimizer state is sharded: accelerate gathers it (untested here)
                self.acc.save_state(str(tmp / "accelerate"))
                return
            save_file(trainable_state(self.acc.unwrap_model(self.model)), str(tmp / "trainable.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")

        state = {"stage": self.stage, "step": self.step, "epoch": self.step // self.plan.steps_per_epoch,
                 "data_position": {"seed": self.cfg.seed, "step": self.step,
                                   "steps_per_epoch": self.plan.steps_per_epoch,
                                   "n_examples": self.plan.n_examples},
                 "config_fingerprint": self.cfg.fingerprint(), "total_steps": self.total}
        path = None
        if self.acc.is_main_process:
            path = ckpt.save(self.ckpt_root, self.stage, self.step, write, state, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        return path

    def maybe_resume(self) -> int | None:
        found = ckpt.list_checkpoints(self.ckpt_root, self.stage)
        if not found:
            return None
        path = found[-1]
        state = ckpt.load_state(path)
        if state["config_fingerprint"] != self.cfg.fingerprint():
            raise ValueError(f"{path} was written with a different training config; use a new run dir")
        if state["data_position"]["n_examples"] != self.plan.n_examples:
            raise ValueError(f"{path}: the shards changed since the checkpoint (example count differs)")
        planned = state.get("total_steps")
        if planned is not None and planned != self.total:
            from schemas.errors import UserError

            # max_steps is outside the fingerprint (stages may differ) but sets the schedule's length.
            raise UserError(
                f"{path.name}: stage {self.stage} was planned for {planned} optimizer steps and this run plans "
                f"{self.total} (--max-steps/--epochs changed); resuming would switch learning-rate schedules "
                "mid-stage", "resume with the same --max-steps/--epochs, or use a new --out",
            )
        if (path / "accelerate").exists():
            self.acc.load_state(str(path / "accelerate"))
        else:
            from safetensors.torch import load_file

            load_trainable(self.acc.unwrap_model(self.model), load_file(str(path / "trainable.safetensors")))
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
            self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        ckpt.set_rng_state(torch.load(path / "rng.pt", weights_only=False))
        self.step = state["step"]
        self._truncate_metrics(self.step)
        log.info("stage %d: resumed from %s at step %d", self.stage, path.name, self.step)
        return self.step

    def _truncate_metrics(self, step: int) -> None:
        """Drop rows this stage logged after the checkpoint (they will be recomputed)."""
        if not self.acc.is_main_process or not self.metrics_path.exists():
            return
        rows = [json.loads(x) for x in self.metrics_path.read_text().splitlines() if x.strip()]
        keep = [r for r in rows if not (r.get("stage") == self.stage and r.get("step", 0) > step)]
        if len(keep) != len(rows):
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    # ---- training ----------------------------------------------------------------------------------
    def _loader(self, epoch: int, start: int):
        batches = self.plan.batches(epoch, start)
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.cfg.num_workers,
            collate_fn=lambda b: collate(b, self.tok.pad_token_id),
            # own generator: creating the loader must not consume the global RNG (resume equality)
            generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
            persistent_workers=False,
        )

    def _set_train_mode(self) -> None:
        self.model.train()
        vision = self.acc.unwrap_model(self.model)
        vision = vision.get_base_model() if hasattr(vision, "get_base_model") else vision
        vision.model.vision_tower.eval()  # frozen: no dropout/noise from it

    def run(self, stop_after: int | None = None, on_step=None) -> dict:
        """Train to the end of the stage (or until step `stop_after`, which simulates a kill). `on_step(row)`
        is called after every optimizer step with its metrics (progress bars, flow artifacts)."""
        resumed = self.maybe_resume()
        self._set_train_mode()
        losses: list[float] = []
        accum = self.plan.accum
        while self.step < self.total:
            epoch, in_epoch = divmod(self.step, self.plan.steps_per_epoch)
            micro = iter(self._loader(epoch, in_epoch))
            for _ in range(in_epoch, self.plan.steps_per_epoch):
                t0 = time.perf_counter()
                step_loss, tokens, samples = 0.0, 0, 0
                for m in range(accum):
                    batch = {k: v.to(self.acc.device) for k, v in next(micro).items()}
                    sync = m == accum - 1
                    ctx = self.acc.no_sync(self.model) if not sync and self.world > 1 else nullcontext()
                    with ctx, self.acc.autocast():
                        out = self.model(**batch)
                        self.acc.backward(out.loss / accum)
                    step_loss += out.loss.item() / accum
                    tokens += int(batch["attention_mask"].sum())
                    samples += batch["input_ids"].shape[0]
                self.acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                dt = time.perf_counter() - t0
                losses.append(step_loss)
                row = {"stage": self.stage, "step": self.step, "epoch": epoch, "loss": step_loss,
                       "lr": lr, "step_time_s": dt, "samples_per_s": samples * self.world / dt,
                       "tokens_per_s": tokens * self.world / dt, "memory_mb": _memory_mb()}
                if self.step % self.cfg.log_every == 0 or self.step == self.total:
                    self._log(row)
                if on_step is not None and self.acc.is_main_process:
                    on_step({**row, "total_steps": self.total})
                if self.step % self.cfg.save_every == 0 or self.step == self.total:
                    self.save_checkpoint()
                if self.step >= self.total or (stop_after is not None and self.step >= stop_after):
                    break
            if stop_after is not None and self.step >= stop_after:
                break
        done = self.step >= self.total
        if done:
            self._write_final()
        stopped = self.stop_reason if done else f"interrupted after step {self.step} (resume to continue)"
        return {"stage": self.stage, "steps": self.step, "total_steps": self.total, "resumed_from": resumed,
                "losses": losses, "finished": done, "stopped": stopped, "examples": self.plan.n_examples,
                "steps_per_epoch": self.plan.steps_per_epoch, "epochs": round(self.step / self.plan.steps_per_epoch, 3),
                "grad_accum": accum}

    def _log(self, row: dict) -> None:
        if self.acc.is_main_process:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            step_log.info("stage %d step %d/%d loss %.4f", self.stage, row["step"], self.total, row["loss"])

    def _write_final(self) -> None:
        """Stage outputs used by the next stage and by inference (trainable weights only)."""
        from safetensors.torch import save_file

        if not self.acc.is_main_process:
            return
        model = self.acc.unwrap_model(self.model)
        out = final_dir(self.run_dir)
        out.mkdir(parents=True, exist_ok=True)
        def save(name: str, sd: dict) -> None:
            tmp = out / f".{name}.tmp"
            save_file(sd, str(tmp))
            tmp.replace(out / f"{name}.safetensors")

        save(f"stage{self.stage}-projector", projector_state(model))
        if self.stage == 2:  # peft adapter for use outside cxrflow: complete before the stage counts as done
            adapter = out / "adapter"
            tmp = out / f".adapter.tmp-{os.getpid()}"  # a killed save's leftover is cleaned by its dead PID
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp))
            shutil.rmtree(adapter, ignore_errors=True)
            os.replace(tmp, adapter)
        save(f"stage{self.stage}-trainable", trainable_state(model))  # last: its presence marks the stage finished


def planned_steps(cfg: TrainConfig, scfg, steps_per_epoch: int) -> tuple[int, str]:
    """Optimizer steps this stage takes, and why it stops there. max_steps is the number of steps (epochs
    repeat as needed, as in HF Trainer); an explicit `epochs` caps it; otherwise the recipe's epochs."""
    epochs = cfg.epochs or scfg.epochs
    by_epochs = epochs * steps_per_epoch
    if cfg.max_steps is None:
        return by_epochs, f"{epochs} epoch(s) done ({steps_per_epoch} steps each)"
    if cfg.epochs is not None and by_epochs < cfg.max_steps:
        return by_epochs, f"--epochs {cfg.epochs} reached before --max-steps {cfg.max_steps}"
    return cfg.max_steps, f"--max-steps {cfg.max_steps} reached ({cfg.max_steps / steps_per_epoch:.2f} epochs)"
