"""Run open_clip_train on the prepared data and export its result as an open_clip directory.

The engine runs as a subprocess (`python -m tasks.encoder.engine`, or under `torchrun --nproc_per_node N`
for several GPUs) with its logs and checkpoints in ENC/engine/run: a rerun after a kill passes
`--resume latest` and open_clip_train continues from its newest checkpoint. The final epoch's weights become
ENC/open_clip/open_clip_pytorch_model.bin beside the config, the layout of a BiomedCLIP download, which is
what the LLaVA presets load as `vision_path`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cxrio import atomic_dir, atomic_write_json, sha256_file
from schemas.encoder import EncoderConfig
from tasks.encoder.prepare import CONFIG, WEIGHTS, TrainingData, init_model_dir, training_data

REPO = Path(__file__).resolve().parents[2]
RUN_NAME = "run"
RUN_RECORD = "encoder-run.json"


class EncoderTrainingError(RuntimeError):
    """open_clip_train exited non-zero or left no final checkpoint."""


def engine_args(cfg: EncoderConfig, model_dir: Path, data: TrainingData, cuda: bool) -> list[str]:
    samples = cfg.samples_per_epoch or data.samples
    args = [
        "--model",
        f"local-dir:{model_dir}",
        "--train-data",
        "::".join(data.urls),
        "--dataset-type",
        "webdataset",
        # shards drawn with replacement: any shard count works with any worker count, and a small split
        # still yields `samples` per epoch
        "--dataset-resampled",
        "--train-num-samples",
        str(samples),
        "--batch-size",
        str(min(cfg.batch_size, samples)),
        "--epochs",
        str(cfg.epochs),
        "--lr",
        str(cfg.lr),
        "--wd",
        str(cfg.wd),
        "--warmup",
        str(cfg.warmup),
        "--precision",
        cfg.resolved_precision(cuda),
        "--workers",
        str(cfg.workers),
        "--seed",
        str(cfg.seed),
        "--logs",
        str((cfg.out / "engine").resolve()),
        "--name",
        RUN_NAME,
        "--save-frequency",
        "1",
        "--resume",
        "latest",
        "--report-to",
        "none",
        "--log-every-n-steps",
        "1",
    ]
    if cfg.grad_checkpointing:
        args.append("--grad-checkpointing")
    if cfg.nproc > 1:
        # the contrastive batch spans every GPU, as in CLIP training
        args += ["--local-loss", "--gather-with-grad"]
    return args


def command(cfg: EncoderConfig, args: list[str]) -> list[str]:
    if cfg.nproc > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={cfg.nproc}",
            "-m",
            "tasks.encoder.engine",
            *args,
        ]
    return [sys.executable, "-m", "tasks.encoder.engine", *args]


def final_checkpoint(cfg: EncoderConfig) -> Path:
    return cfg.out / "engine" / RUN_NAME / "checkpoints" / f"epoch_{cfg.epochs}.pt"


def final_state(cfg: EncoderConfig, model_dir: Path) -> dict:
    """The final epoch's weights (DDP prefix dropped); with epochs=0 the starting model's (the seeded random
    tiny encoder, or a local dir as it is: the ablation's "random encoder" and "BiomedCLIP as is")."""
    import torch

    if cfg.epochs == 0:
        from tasks.evaluate.retrieval import load_encoder

        model, _, _ = load_encoder(model_dir, seed=cfg.seed)
        return model.state_dict()
    ckpt = torch.load(final_checkpoint(cfg), map_location="cpu", weights_only=False)
    return {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}


def export(cfg: EncoderConfig, model_dir: Path, state: dict) -> Path:
    """ENC/open_clip: the config the run started from + the weights, written under a temporary name."""
    import torch

    out = cfg.out / "open_clip"
    with atomic_dir(out) as tmp:
        shutil.copy2(model_dir / CONFIG, tmp / CONFIG)
        torch.save(state, tmp / WEIGHTS)
    return out


def last_losses(log: Path) -> dict:
    """The last logged contrastive loss of the engine's log (open_clip_train's `Contrastive_loss: v (avg)`)."""
    if not log.exists():
        return {}
    found = re.findall(r"Contrastive_loss: ([0-9.]+) \(([0-9.]+)\)", log.read_text())
    return {"first_loss": float(found[0][0]), "last_loss": float(found[-1][0])} if found else {}


def shard_lineage(shards: Path) -> dict:
    files = sorted(shards.glob("*.index.json")) + [p for p in (shards / "shards.parquet",) if p.exists()]
    return {"shards_dir": str(shards.resolve()), "index_sha256": {p.name: sha256_file(p) for p in files}}


def train_encoder(cfg: EncoderConfig) -> dict:
    """Prepare, run the engine, export; returns the run record (also written to ENC/encoder-run.json)."""
    import torch

    cfg.out.mkdir(parents=True, exist_ok=True)
    model_dir = init_model_dir(cfg.init, cfg.out)
    data = training_data(cfg.shards, cfg.sources, cfg.out)
    if cfg.epochs and not final_checkpoint(cfg).exists():
        args = engine_args(cfg, model_dir, data, torch.cuda.is_available())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        if not torch.cuda.is_available():
            # tiny CPU runs: intra-op threads on shared cores oversubscribe (measured ~10x slower per step here)
            env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.run(command(cfg, args), env=env, cwd=str(cfg.out), capture_output=True, text=True)
        if proc.returncode != 0 or not final_checkpoint(cfg).exists():
            # torch's glog-style exit summaries ("I1202 03:06:56 ...") would push the engine's error out of the tail
            lines = [
                ln for ln in (proc.stderr or proc.stdout).splitlines() if not re.match(r"[IWE]\d{4} ", ln)
            ]
            tail = "\n".join(lines)[-2000:]
            raise EncoderTrainingError(
                f"open_clip_train exited {proc.returncode} without "
                f"{final_checkpoint(cfg).name} (log: {cfg.out / 'engine' / RUN_NAME}):\n{tail}"
            )
    out = export(cfg, model_dir, final_state(cfg, model_dir))
    record = {
        "key": cfg.key,
        "config": cfg.model_dump(mode="json", exclude={"out", "shards", "key"}),
        "init": str(cfg.init),
        "open_clip_dir": str(out.resolve()),
        "weights_sha256": sha256_file(out / WEIGHTS),
        "data": data.summary(),
        "engine": {
            "package": "open_clip_train",
            "version": _version(),
            "log": str(cfg.out / "engine" / RUN_NAME),
            **last_losses(cfg.out / "engine" / RUN_NAME / "out.log"),
        },
        **shard_lineage(cfg.shards),
    }
    atomic_write_json(cfg.out / RUN_RECORD, record)
    atomic_write_json(out / RUN_RECORD, record)  # travels with the directory into the LLaVA run's lineage
    return record


def _version() -> str:
    from importlib.metadata import version

    return version("open_clip_torch")


def read_run_record(open_clip_dir: Path) -> dict | None:
    path = Path(open_clip_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.exists() else None
