"""Every random stream of a training run, derived from the run's one `seed` by one function.

A stream is named, and indexed where it repeats (per stage, per epoch). `derive` is the only place a seed
becomes a stream: the model's initial weights, the global RNGs a stage starts from (LoRA init, dropout), the
per-epoch sample order, the data loader's generator and the shuffle control's permutation.

The values reproduce the streams the run used before they were gathered here (issue 24), so a run with the
same seed trains the same weights byte for byte (bench/bench_identity.py). A new stream takes the default:
the first 4 bytes of sha256("cxrflow-<stream>:<seed>:<index>") — the `stage` stream's formula."""

from __future__ import annotations

import hashlib

STREAMS: tuple[str, ...] = ("init", "stage", "order", "loader", "shuffle_images")

# Streams that kept their pre-issue-24 arithmetic (so trained weights did not change); the rest hash.
_KEPT = {
    "init": lambda seed, index: seed,  # the tiny model's random weights
    "order": lambda seed, epoch: seed * 1_000_003 + epoch,  # DataPlan: the sample order of an epoch
    "loader": lambda seed, epoch: seed + epoch,  # the DataLoader's own generator (worker seeds only)
    "shuffle_images": lambda seed, index: seed * 7_919 + 17,  # the shuffle control's permutation
}


def derive(seed: int, stream: str, index: int = 0) -> int:
    """The seed of `stream` (one of STREAMS) for `index` (the stage or epoch; 0 where it does not repeat)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    kept = _KEPT.get(stream)
    if kept is not None:
        return kept(seed, index)
    return int.from_bytes(hashlib.sha256(f"cxrflow-{stream}:{seed}:{index}".encode()).digest()[:4], "big")
