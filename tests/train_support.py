"""Training test helpers (the shard writer lives in fixtures/ so benchmarks can use it too)."""

from fixtures.train_shards import write_train_shards

__all__ = ["write_train_shards"]
