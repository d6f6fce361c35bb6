"""Checkpoints: trainable weights, optimizer, scheduler, RNG states and data position, written to a temporary
directory and renamed into place, so a kill mid-write never leaves a checkpoint that looks complete."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from cxrio import atomic_dir
from cxrio import clean_stale_temps as clean_temps_in

_NAME = re.compile(r"^stage(\d)-step-(\d{7})$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_stage(seed: int, stage: int) -> None:
    """Seed every global RNG from (seed, stage) before a stage builds its trainable parts (LoRA init, dropout).
    A stage then starts from the same RNG state whether an earlier stage ran in this process, in another
    one, or was killed right after it finished."""
    import hashlib

    derived = int.from_bytes(hashlib.sha256(f"cxrflow-stage:{seed}:{stage}".encode()).digest()[:4], "big")
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # also seeds every CUDA device


def checkpoint_dir(root: Path, stage: int, step: int) -> Path:
    return root / f"stage{stage}-step-{step:07d}"


def list_checkpoints(root: Path, stage: int) -> list[Path]:
    """Complete checkpoints of a stage, oldest first (temporary dirs start with '.' and never match)."""
    if not root.exists():
        return []
    found = [(int(m[2]), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and int(m[1]) == stage
             and (p / "state.json").exists()]
    return [p for _, p in sorted(found)]


def save(root: Path, stage: int, step: int, write_fn, state: dict, keep: int) -> Path:
    """write_fn(tmp_dir) writes the payload; state.json goes last, then one atomic rename."""
    final = checkpoint_dir(root, stage, step)
    with atomic_dir(final) as tmp:
        write_fn(tmp)
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    for old in list_checkpoints(root, stage)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_pretrained_atomically(obj, path: Path) -> None:
    """`obj.save_pretrained` into a temporary sibling, then one rename: a kill mid-save never leaves a `path`
    that looks complete (a 0-byte base/config.json used to fail every rerun). Where another process (a rank)
    saved the same thing first, its copy is kept."""
    with atomic_dir(path, if_exists="keep") as tmp:
        obj.save_pretrained(str(tmp))


def clean_stale_temps(run_dir: Path) -> list[Path]:
    """Remove temporary files and folders a killed save left behind (checkpoints, base model, tokenizer, the
    stage-2 adapter): those whose writer PID is gone. A save in progress in a live process is left alone.
    Returns what was removed."""
    return [p for parent in (run_dir, run_dir / "checkpoints", run_dir / "final") for p in clean_temps_in(parent)]


def load_state(path: Path) -> dict:
    return json.loads((path / "state.json").read_text())
