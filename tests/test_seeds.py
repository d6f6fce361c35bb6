"""One function derives every random stream of a training run from its seed (training/seeds.py)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from training.seeds import STREAMS, derive


def test_streams_keep_the_values_the_runs_used_so_weights_do_not_change():
    assert derive(3, "init") == 3
    assert derive(3, "order", 2) == 3 * 1_000_003 + 2
    assert derive(3, "loader", 2) == 5
    assert derive(3, "shuffle_images") == 3 * 7_919 + 17
    assert derive(3, "stage", 2) == int.from_bytes(hashlib.sha256(b"cxrflow-stage:3:2").digest()[:4], "big")
    with pytest.raises(ValueError, match="unknown random stream"):
        derive(0, "dropout")
    assert len({derive(1, s, 1) for s in STREAMS}) == len(STREAMS)  # distinct streams


def test_no_other_seed_formula_in_training():
    """Every generator and global RNG in training/ is seeded through derive (or from a derived value)."""
    seeded = re.compile(r"(manual_seed|\.seed|default_rng)\(([^)]*)\)")
    for path in Path("training").rglob("*.py"):
        for m in seeded.finditer(path.read_text()):
            assert "derive(" in m.group(2) or m.group(2).strip() == "derived", (path, m.group(0))
