"""Run by tests/test_train_distributed.py as one process (`python tests/distributed_train.py ...`) and under
`torchrun --nproc-per-node 2` (gloo on CPU): trains both stages of the tiny model at one global batch and
writes, per rank, the loss of every optimizer step and the key of every sample each micro-batch read."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# 16 samples, global batch 8 = micro 2 x accumulation 4 (one process) or x 2 x 2 processes: 2 steps an epoch,
# nothing left over, so every sample is read exactly once an epoch.
GLOBAL, MICRO, EPOCHS = 8, 2, 2


def main(shards: Path, out: Path, record: Path) -> None:
    from schemas.train import default_config, stage1_defaults, stage2_defaults
    from training import data
    from training.run import run_training

    keys: list[str] = []
    real = data.ExampleDataset.__getitem__

    def reading(self, i):  # every read, cached or not, in the order the loop asks for them
        keys.append(self.ds[self.examples[i].index]["__key__"])
        return real(self, i)

    data.ExampleDataset.__getitem__ = reading
    fixed = {"global_batch_size": GLOBAL, "micro_batch_size": MICRO, "warmup_ratio": 0, "scheduler": "constant"}
    cfg = default_config(
        "tiny", shards, out, epochs=EPOCHS, save_every=1000, expand_targets=False,
        stage1=stage1_defaults(lr=1e-2, **fixed),
        # no LoRA dropout: its masks are drawn per micro-batch from each rank's own RNG stream
        stage2=stage2_defaults(lr=3e-3, lora_dropout=0.0, **fixed),
    )
    summary = run_training(cfg)
    stages = {str(k): {"losses": v["losses"], "steps_per_epoch": v["steps_per_epoch"], "grad_accum": v["grad_accum"]}
              for k, v in summary["stages"].items()}
    rank = int(os.environ.get("RANK", "0"))
    record.mkdir(parents=True, exist_ok=True)
    (record / f"rank{rank}.json").write_text(json.dumps({"stages": stages, "keys": keys}))


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
