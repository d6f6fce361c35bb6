"""Checkpoints: trainable weights, optimizer, scheduler, RNG states and data position, written to a temporary
directory and renamed into place, so a kill mid-write never leaves a checkpoint that looks complete."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

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
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, stage, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_fn(tmp)
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root, stage)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path) -> dict:
    return json.loads((path / "state.json").read_text())
