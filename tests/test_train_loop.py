"""Training end to end on CPU from synthetic contract shards: overfit, resume after kill, stage 1 -> 2,
generate, and the plain `python -m training` entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures.train_shards import write_train_shards
from schemas.train import TrainConfig, default_config, stage1_defaults, stage2_defaults
from training.loop import train_stage
from training.run import prepare_data, run_training
from training.stage import build_stage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_train_shards(tmp_path_factory.mktemp("train-shards"), n=12, per_shard=5)


def small_config(shards: Path, out: Path) -> TrainConfig:
    # 12 samples -> 18 examples (6 samples carry two findings versions); global 4 = micro 2 x accum 2
    return default_config(
        "tiny", shards, out, save_every=3,
        stage1=stage1_defaults(global_batch_size=4, micro_batch_size=2, lr=1e-2),
        stage2=stage2_defaults(global_batch_size=4, micro_batch_size=2, epochs=2, lr=3e-3),
    )


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory) -> tuple[TrainConfig, dict]:
    cfg = small_config(shards, tmp_path_factory.mktemp("run") / "full")
    return cfg, run_training(cfg)


@pytest.mark.slow  # ~15 s on a loaded 2-core machine: 45 optimizer steps of the tiny model
def test_stage_trainer_loss_falls_on_a_fixed_batch(shards, tmp_path):
    """build_stage + train_stage (their optimizer, accumulation, clipping, schedule) on 4 fixed examples, one global batch
    per step: each stage's loss must fall well below its first step's (stage 2 from stage 1's projector)."""
    run = tmp_path / "run"
    run.mkdir()
    fixed = {"global_batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0, "scheduler": "constant"}
    base = default_config("tiny", shards, run, save_every=1000, stage1=stage1_defaults(lr=1e-2, **fixed),
                          stage2=stage2_defaults(lr=3e-3, **fixed))
    ds, examples, _ = prepare_data(base, run)
    for stage, steps, factor in ((1, 30, 0.5), (2, 15, 0.2)):
        cfg = base.model_copy(update={"max_steps": steps})
        result = train_stage(build_stage(cfg, stage, (ds, examples[:4])))
        assert result["finished"] and result["grad_accum"] == 2
        losses = result["losses"]
        assert len(losses) == steps and losses[-1] < factor * losses[0], (stage, losses)


def test_stage1_then_stage2_end_to_end(uninterrupted, shards):
    cfg, summary = uninterrupted
    run = cfg.out
    assert summary["data"] == {"samples_found": 12, "examples": 18, "samples_dropped_by_reason": {}}
    s1, s2 = summary["stages"][1], summary["stages"][2]
    assert s1["finished"] and s1["steps"] == 18 // 4 and s1["grad_accum"] == 2
    assert s2["finished"] and s2["steps"] == 2 * (18 // 4)
    for name in ("config.json", "lineage.json", "metrics.jsonl", "loss.png", "tokenizer/tokenizer.json",
                 "final/stage1-projector.safetensors", "final/stage2-trainable.safetensors",
                 "final/adapter/adapter_config.json"):
        assert (run / name).exists(), name
    lineage = json.loads((run / "lineage.json").read_text())
    assert set(lineage["index_sha256"]) == {"train.index.json"}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [(1, i) for i in range(1, 5)] + [(2, i) for i in range(1, 9)]
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["memory_mb"] > 0 for r in rows)
    # checkpoints are complete dirs, the newest `keep_checkpoints` per stage
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["stage1-step-0000003", "stage1-step-0000004", "stage2-step-0000006", "stage2-step-0000008"]
    # a second call finds both stages done and trains nothing
    again = run_training(cfg)
    assert again["stages"] == {1: {"skipped": "already finished"}, 2: {"skipped": "already finished"}}


def test_resume_after_kill_gives_the_same_next_step_loss(uninterrupted, shards, tmp_path):
    full = uninterrupted[1]["stages"]
    cfg = small_config(shards, tmp_path / "killed")
    # kill in stage 1 right after its step-3 checkpoint, then in stage 2 one step after the step-3 checkpoint
    first = run_training(cfg, stop_at=(1, 3))
    assert first["stages"][1]["steps"] == 3 and 2 not in first["stages"]
    torch.manual_seed(12345)  # a fresh process would not share the RNG state: the checkpoint must restore it
    cfg = TrainConfig.model_validate_json((cfg.out / "config.json").read_text())
    second = run_training(cfg, stop_at=(2, 4))
    assert second["stages"][1]["resumed_from"] == 3
    assert second["stages"][1]["losses"] == pytest.approx(full[1]["losses"][3:], rel=1e-5, abs=1e-6)
    assert second["stages"][2]["losses"] == pytest.approx(full[2]["losses"][:4], rel=1e-5, abs=1e-6)
    torch.manual_seed(999)
    third = run_training(TrainConfig.model_validate_json((cfg.out / "config.json").read_text()))
    s2 = third["stages"][2]
    assert s2["resumed_from"] == 3 and s2["finished"]  # step 4 was lost with the kill and is recomputed
    assert s2["losses"] == pytest.approx(full[2]["losses"][3:], rel=1e-5, abs=1e-6)
    rows = [json.loads(x) for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert len({(r["stage"], r["step"]) for r in rows}) == len(rows) == 4 + 8  # no duplicated steps


def test_stage_1_then_stage_2_as_separate_runs_into_one_run_dir(shards, tmp_path):
    """`cxrflow train --stage 1` then `--stage 2` with the same --out: stage 2 starts from stage 1's projector."""
    out = tmp_path / "split-stages"
    first = run_training(small_config(shards, out).model_copy(update={"stages": [1], "max_steps": 1}))
    assert first["stages"][1]["finished"]
    second = run_training(small_config(shards, out).model_copy(update={"stages": [2], "max_steps": 1}))
    assert second["stages"][2]["finished"] and 1 not in second["stages"]
    assert (out / "final" / "stage2-trainable.safetensors").exists()


def test_generate_on_the_trained_tiny_model(uninterrupted):
    from PIL import Image

    from training.inference import ReportGenerator

    gen = ReportGenerator.from_run(uninterrupted[0].out)
    assert gen.stage == 2
    images = [Image.new("L", (40, 48), 90), Image.new("L", (36, 36), 200)]
    out = gen.generate(images, ["Cough and fever for three days.", None], max_new_tokens=12)
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    # left padding: the short prompt generates the same alone as in a mixed-length batch
    assert gen.generate(images[1:], [None], max_new_tokens=12) == out[1:]


@pytest.mark.slow
def test_plain_module_entry_point_runs_without_prefect(shards, tmp_path):
    out = tmp_path / "cli-run"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "--shards", str(shards), "--out", str(out), "--stage", "1",
         "--max-steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "prefect" not in proc.stderr.lower()
    assert json.loads(proc.stdout)["stages"]["1"]["steps"] == 1
    assert (out / "final/stage1-projector.safetensors").exists()


def test_training_in_a_child_process_gives_the_in_process_run(uninterrupted, shards, tmp_path, caplog,
                                                               monkeypatch):
    """training/child.py (variants side by side in `ablate`): the same weights and losses as run_training here,
    every step row relayed to on_step and the run's log lines to this process's loggers; a failure in the child
    is raised here with its own type. This process has the isolated torchvision on its path, as after an
    open_clip import (training/openclip.py): the child must not import LLaVA with it."""
    import logging
    import sys

    from safetensors.torch import load_file

    from training.child import run_training_in_child
    from training.openclip import ISOLATED

    monkeypatch.setattr(sys, "path", [*sys.path, str(ISOLATED)])
    cfg, summary = uninterrupted
    rows: list[dict] = []
    with caplog.at_level(logging.INFO, logger="cxrflow.training"):
        child = run_training_in_child(small_config(shards, tmp_path / "child"), on_step=rows.append)
    assert [(r["stage"], r["step"]) for r in rows] == [(1, i) for i in range(1, 5)] + [(2, i) for i in range(1, 9)]
    assert child["stages"][2]["losses"] == summary["stages"][2]["losses"]
    for name in ("stage1-projector.safetensors", "stage2-trainable.safetensors"):
        here, there = load_file(cfg.out / "final" / name), load_file(tmp_path / "child" / "final" / name)
        assert here.keys() == there.keys() and all(torch.equal(here[k], there[k]) for k in here), name
    assert any("stage 2: 8 optimizer steps" in r.getMessage() for r in caplog.records)

    with pytest.raises(ValueError, match="different training config"):  # run_training's own error, raised here
        run_training_in_child(small_config(shards, tmp_path / "child").model_copy(update={"seed": 1}))


def _sleeping_training(cfg, relay, levels, warning_filters, parent) -> None:
    """A stand-in for training/child.py's _main in the child (found there by this module's name): one step row,
    then a long wait to be killed in."""
    import time

    relay.put(("step", {"stage": 1, "step": 1}))
    time.sleep(300)


def test_a_training_process_killed_by_a_signal_fails_its_caller_with_the_signal(monkeypatch):
    """The child killed from outside (the kernel's out-of-memory killer sends SIGKILL): the caller fails with a
    message naming the signal instead of waiting on the queue, and the child is no longer tracked."""
    import os
    import signal
    import threading

    import training.child as child_mod

    monkeypatch.setattr(child_mod, "_main", _sleeping_training)
    rows: list[dict] = []
    failed: list[BaseException] = []

    def caller():
        try:
            child_mod.run_training_in_child(None, on_step=rows.append)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failed.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(0)
    for _ in range(600):  # the child's first row (a spawned interpreter: seconds)
        if rows:
            break
        threading.Event().wait(0.1)
    (proc,) = child_mod._children
    os.kill(proc.pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive()
    assert len(failed) == 1 and "killed by SIGKILL (out of memory?)" in str(failed[0]), failed
    assert not child_mod._children


ORPHAN_SCRIPT = """
import sys
import time

import training.run


def sleeping(cfg, on_step=None):
    time.sleep(300)


training.run.run_training = sleeping  # in the child too: a spawned child imports this script first

if __name__ == "__main__":
    import threading

    import training.child

    threading.Thread(target=training.child.run_training_in_child, args=(None,), daemon=True).start()
    while not training.child._children:
        time.sleep(0.1)
    print(next(iter(training.child._children)).pid, flush=True)
    time.sleep(300)
"""


def test_a_training_process_ends_when_its_parent_is_killed(tmp_path):
    """The parent killed outright (no chance to stop its children): the training child does not train on alone,
    an orphan, to its end."""
    import os
    import signal
    import time

    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        child = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    def alive() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 30  # its watch looks once a second
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    outlived = alive()
    if outlived:
        os.kill(child, signal.SIGKILL)  # no orphan left behind by a failing run
    assert not outlived, "the training process outlived its killed parent"
