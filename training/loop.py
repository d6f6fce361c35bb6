"""One training stage's loop over the parts training/stage.py builds: resume, step, log, checkpoint, finish.

Resume contract: the state after optimizer step s (trainable weights, AdamW moments, scheduler, RNG, and the
data position = s, from which DataPlan recomputes the exact remaining order) is all that step s+1 depends
on, so a run killed after checkpoint s and restarted computes the same step s+1 loss as one never stopped."""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from cxrio import atomic_dir, atomic_path, atomic_write_bytes
from schemas.errors import UserError
from training import checkpoint as ckpt
from training.data import collate
from training.model import load_trainable, projector_state, trainable_state
from training.stage import Stage, final_dir

log = logging.getLogger("cxrflow.training")
# per-step lines on their own child logger: the CLI hides them in quiet mode (the bar and metrics.jsonl have them)
step_log = logging.getLogger("cxrflow.training.steps")


def train_stage(s: Stage, stop_after: int | None = None, on_step=None) -> dict:
    """Train to the end of the stage (or until step `stop_after`, which simulates a kill). `on_step(row)` is
    called after every optimizer step with its metrics (progress bars, flow artifacts)."""
    acc, model, plan, cfg = s.acc, s.model, s.plan, s.cfg
    resumed = resume(s)
    step = resumed or 0
    set_train_mode(s)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    micro = None
    while step < s.total:
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        if micro is None or in_epoch == 0:  # each epoch (and a resume mid-epoch) reads its order from here
            micro = iter(loader(s, epoch, in_epoch))
        t0 = time.perf_counter()
        step_loss, tokens, samples = 0.0, 0, 0
        for m in range(plan.accum):
            batch = {k: v.to(acc.device) for k, v in next(micro).items()}
            last = m == plan.accum - 1  # gradients are all-reduced on the last micro-batch only
            sync = nullcontext() if last or acc.num_processes == 1 else acc.no_sync(model)
            with sync, acc.autocast():
                out = model(**batch)
                acc.backward(out.loss / plan.accum)
            step_loss += out.loss.item() / plan.accum
            tokens += int(batch["attention_mask"].sum())
            samples += batch["input_ids"].shape[0]
        step_loss = global_mean(acc, step_loss)
        if not math.isfinite(step_loss):  # a diverged run must stop, not print metrics of a broken model
            raise UserError(f"stage {s.stage} step {step + 1}: the loss is {step_loss}; training stopped",
                            "lower the learning rate or check the data")
        acc.clip_grad_norm_(trainable, 1.0)
        lr = s.scheduler.get_last_lr()[0]
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        losses.append(step_loss)
        row = {
            "stage": s.stage,
            "step": step,
            "epoch": epoch,
            "loss": step_loss,
            "lr": lr,
            "step_time_s": dt,
            "samples_per_s": samples * acc.num_processes / dt,
            "tokens_per_s": tokens * acc.num_processes / dt,
            "memory_mb": _memory_mb(),
        }
        if step % cfg.log_every == 0 or step == s.total:
            log_row(s, row)
        if on_step is not None and acc.is_main_process:
            on_step({**row, "total_steps": s.total})
        if step % cfg.save_every == 0 or step == s.total:
            save_checkpoint(s, step)
        if stop_after is not None and step >= stop_after:
            break
    done = step >= s.total
    if done:
        write_final(s)
    stopped = s.stop_reason if done else f"interrupted after step {step} (resume to continue)"
    return {
        "stage": s.stage,
        "steps": step,
        "total_steps": s.total,
        "resumed_from": resumed,
        "losses": losses,
        "finished": done,
        "stopped": stopped,
        "examples": plan.n_examples,
        "steps_per_epoch": plan.steps_per_epoch,
        "epochs": round(step / plan.steps_per_epoch, 3),
        "grad_accum": plan.accum,
    }


def global_mean(acc, value: float) -> float:
    """The step's loss over every rank's micro-batches (each rank averaged its own): what a one-process run
    at the same global batch logs, and the same number on every rank."""
    if acc.num_processes == 1:
        return value
    return acc.reduce(torch.tensor(value, dtype=torch.float64, device=acc.device), reduction="mean").item()


def loader(s: Stage, epoch: int, start: int) -> torch.utils.data.DataLoader:
    """The micro-batches of `epoch` from its step `start` on (DataPlan: the same order on every resume)."""
    pad = s.tokenizer.pad_token_id
    return torch.utils.data.DataLoader(
        s.dataset,
        batch_sampler=s.plan.batches(epoch, start),
        num_workers=s.cfg.num_workers,
        collate_fn=lambda b: collate(b, pad),
        # own generator: creating the loader must not consume the global RNG (resume equality)
        generator=torch.Generator().manual_seed(s.cfg.seed + epoch),
        persistent_workers=False,
    )


def set_train_mode(s: Stage) -> None:
    s.model.train()
    inner = s.acc.unwrap_model(s.model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    inner.model.vision_tower.eval()  # frozen: no dropout/noise from it


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (Linux reports KiB)


def _metrics_path(s: Stage) -> Path:
    return s.run_dir / "metrics.jsonl"


def log_row(s: Stage, row: dict) -> None:
    if s.acc.is_main_process:
        with open(_metrics_path(s), "a") as f:
            f.write(json.dumps(row) + "\n")
        step_log.info("stage %d step %d/%d loss %.4f", s.stage, row["step"], s.total, row["loss"])


# ---- checkpoints ------------------------------------------------------------------------------------------
def _ckpt_root(s: Stage) -> Path:
    return s.run_dir / "checkpoints"


def _sharded(s: Stage) -> bool:
    from accelerate.utils import DistributedType

    return s.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(s: Stage, step: int) -> Path | None:
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        if _sharded(s):  # optimizer state is sharded: accelerate gathers it (untested here)
            s.acc.save_state(str(tmp / "accelerate"))
            return
        save_file(trainable_state(s.acc.unwrap_model(s.model)), str(tmp / "trainable.safetensors"))
        torch.save(s.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(s.scheduler.state_dict(), tmp / "scheduler.pt")

    state = {
        "stage": s.stage,
        "step": step,
        "epoch": step // s.plan.steps_per_epoch,
        "data_position": {
            "seed": s.cfg.seed,
            "step": step,
            "steps_per_epoch": s.plan.steps_per_epoch,
            "n_examples": s.plan.n_examples,
        },
        "config_fingerprint": s.cfg.fingerprint(),
        "total_steps": s.total,
    }
    path = None
    if s.acc.is_main_process:
        path = ckpt.save(_ckpt_root(s), s.stage, step, write, state, s.cfg.keep_checkpoints)
    s.acc.wait_for_everyone()
    return path


def resume(s: Stage) -> int | None:
    """Load the stage's newest checkpoint (weights, optimizer, schedule, RNG); its step, or None if none."""
    found = ckpt.list_checkpoints(_ckpt_root(s), s.stage)
    if not found:
        _truncate_metrics(s, 0)  # a fresh start into a used run dir: its earlier rows would be duplicated
        return None
    path = found[-1]
    state = ckpt.load_state(path)
    if state["config_fingerprint"] != s.cfg.fingerprint():
        raise ValueError(f"{path} was written with a different training config; use a new run dir")
    if state["data_position"]["n_examples"] != s.plan.n_examples:
        raise ValueError(f"{path}: the shards changed since the checkpoint (example count differs)")
    planned = state.get("total_steps")
    if planned is not None and planned != s.total:
        # max_steps is outside the fingerprint (stages may differ) but sets the schedule's length.
        raise UserError(
            f"{path.name}: stage {s.stage} was planned for {planned} optimizer steps and this run plans "
            f"{s.total} (--max-steps/--epochs changed); resuming would switch learning-rate schedules "
            "mid-stage",
            "resume with the same --max-steps/--epochs, or use a new --out",
        )
    if (path / "accelerate").exists():
        s.acc.load_state(str(path / "accelerate"))
    else:
        from safetensors.torch import load_file

        load_trainable(s.acc.unwrap_model(s.model), load_file(str(path / "trainable.safetensors")))
        s.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
        s.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    ckpt.set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    _truncate_metrics(s, state["step"])
    log.info("stage %d: resumed from %s at step %d", s.stage, path.name, state["step"])
    return state["step"]


def _truncate_metrics(s: Stage, step: int) -> None:
    """Drop rows this stage logged after the checkpoint (they will be recomputed)."""
    path = _metrics_path(s)
    if not s.acc.is_main_process or not path.exists():
        return
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    keep = [r for r in rows if not (r.get("stage") == s.stage and r.get("step", 0) > step)]
    if len(keep) != len(rows):
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def write_final(s: Stage) -> None:
    """Stage outputs used by the next stage and by inference (trainable weights only)."""
    from safetensors.torch import save_file

    if not s.acc.is_main_process:
        s.acc.wait_for_everyone()  # the next stage reads what the main process writes here
        return
    model = s.acc.unwrap_model(s.model)
    out = final_dir(s.run_dir)

    def save(name: str, sd: dict) -> None:
        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file(sd, str(tmp))

    save(f"stage{s.stage}-projector", projector_state(model))
    if s.stage == 2:  # peft adapter for use outside cxrflow: complete before the stage counts as done
        with atomic_dir(out / "adapter") as tmp:  # a killed save's leftover is cleaned by its dead PID
            model.save_pretrained(str(tmp))
    save(f"stage{s.stage}-trainable", trainable_state(model))  # last: its presence marks the stage finished
    s.acc.wait_for_everyone()
