"""Training under torchrun: two gloo processes on CPU at the same global batch give the one-process loss curve,
and between them read every sample exactly once an epoch (docs/training.md, multi-process training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fixtures.train_shards import write_train_shards
from training.data import DataPlan

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "distributed_train.py"
# Relative tolerance on each step's loss. Both runs average the same micro-batches' losses and gradients in
# fp32; only the order of the sums differs (the all-reduce adds two ranks' halves), ~1e-7 relative per step
# here, growing slowly through AdamW's steps. 1e-5 leaves room for that and is ~100x below what a different
# grouping of samples into micro-batches moves the loss (~1e-3 here).
RTOL = 1e-5


def _run_together(*cmds: list[str]) -> None:
    """The runs at once: each is its own process tree with one thread per process, so running them side by side
    changes no result, and the one-process run uses a core the two ranks leave idle while they wait on each other."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]  # fmt: skip
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()  # a no-op for a process that ended; one left after a timeout must not outlive the test
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-4000:]


@pytest.mark.slow  # two training runs of the tiny model (8 optimizer steps each): ~40 s on a loaded 2-core machine
def test_torchrun_two_processes_match_one_process_loss_and_read_each_sample_once_an_epoch(tmp_path):
    shards = write_train_shards(tmp_path / "shards", n=16, per_shard=5)
    one, two = tmp_path / "rec-1", tmp_path / "rec-2"
    _run_together(
        [sys.executable, str(DRIVER), str(shards), str(tmp_path / "run-1"), str(one)],
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(DRIVER),
         str(shards), str(tmp_path / "run-2"), str(two)],
    )
    ref = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]

    for stage in ("1", "2"):
        assert ref["stages"][stage]["grad_accum"] == 4 and ranks[0]["stages"][stage]["grad_accum"] == 2
        want = ref["stages"][stage]["losses"]
        assert len(want) == 4 and want[-1] < want[0]  # it trains
        for r in ranks:  # every rank logs the global loss, the one-process run's
            assert r["stages"][stage]["losses"] == pytest.approx(want, rel=RTOL), stage

    # Coverage: 16 samples, 2 steps x 8 an epoch; each process read 8 per epoch, one process 16.
    samples = {f"s{i:05d}" for i in range(16)}
    for stage_epoch in range(4):  # stage 1 epochs 0-1, then stage 2 epochs 0-1
        per_rank = [r["keys"][stage_epoch * 8:(stage_epoch + 1) * 8] for r in ranks]
        both = Counter(per_rank[0] + per_rank[1])
        assert set(both) == samples and set(both.values()) == {1}, (stage_epoch, both)
        assert both.keys() == set(ref["keys"][stage_epoch * 16:(stage_epoch + 1) * 16])
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 32 and len(ref["keys"]) == 64


@pytest.mark.parametrize("n", [16, 19])
def test_data_plan_gives_every_world_size_the_same_micro_batches(n):
    """Each step's micro-batches are the one-process run's whatever the world size, split between ranks, each
    example once an epoch; the tail that does not fill a global batch (n=19: 3) is dropped at every size."""
    one = DataPlan(n, micro_batch=2, accum=4, world=1, rank=0, seed=3)
    for world in (2, 4):
        plans = [DataPlan(n, micro_batch=2, accum=4 // world, world=world, rank=r, seed=3) for r in range(world)]
        assert {p.steps_per_epoch for p in plans} == {one.steps_per_epoch} == {n // 8}
        for epoch in (0, 1):
            ref = one.batches(epoch)
            per_rank = [p.batches(epoch) for p in plans]
            assert all(len(b) == len(ref) // world for b in per_rank)  # equal shares: no rank waits
            for step in range(one.steps_per_epoch):
                k = 4 // world
                mine = [mb for b in per_rank for mb in b[step * k:(step + 1) * k]]
                assert sorted(map(tuple, mine)) == sorted(map(tuple, ref[step * 4:(step + 1) * 4]))
            seen = [i for b in per_rank for mb in b for i in mb]
            assert len(seen) == len(set(seen)) == 8 * (n // 8)
        # and from any step on, as a resume reads it
        assert plans[1].batches(1, start_step=1) == plans[1].batches(1)[4 // world:]
