"""`--max-steps N` is N optimizer steps per stage (epochs repeat as needed); `--epochs` caps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.train_shards import write_train_shards
from schemas.train import default_config
from training.stage import planned_steps


def test_planned_steps_max_steps_repeats_epochs_and_epochs_caps(tmp_path):
    def plan(**kw):
        cfg = default_config("tiny", tmp_path, tmp_path / "r", **kw)
        return planned_steps(cfg, cfg.stage1, steps_per_epoch=2)

    assert plan() == (2, "1 epoch(s) done (2 steps each)")  # the recipe: stage 1 = 1 epoch
    assert plan(max_steps=30)[0] == 30  # 15 epochs, not min(30, 1 epoch)
    assert "--max-steps 30 reached" in plan(max_steps=30)[1]
    assert plan(max_steps=30, epochs=4) == (8, "--epochs 4 reached before --max-steps 30")
    assert plan(max_steps=3, epochs=4)[0] == 3
    assert plan(epochs=5)[0] == 10


@pytest.mark.slow
def test_cli_train_max_steps_30_takes_30_steps(tmp_path, capsys):
    """Stage 1 only (stage 2 follows the same planned_steps; both stages cost twice the CPU)."""
    from cxrflow_cli.main import run

    shards = write_train_shards(tmp_path / "shards", n=12, per_shard=5)  # 18 examples: 2 steps per epoch
    out = tmp_path / "run"
    code = run(
        [
            "train",
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--max-steps",
            "30",
            "--stage",
            "1",
            "--no-prefect",
        ]
    )
    printed, _ = capsys.readouterr()
    assert code == 0
    summary = json.loads(printed)
    s = summary["stages"]["1"]
    assert s["steps"] == s["total_steps"] == 30 and s["finished"] and s["epochs"] == 15.0, s
    assert summary["stopped"] == {"stage1": "30 steps: --max-steps 30 reached (15.00 epochs)"}
    rows = [json.loads(x) for x in Path(out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))


def test_resume_with_another_step_plan_is_refused(tmp_path):
    """--max-steps sets the learning-rate schedule's length: a stage killed at step 2 of 4 and resumed as a
    6-step run would switch schedules mid-stage (matching neither run), so it is refused; the same plan resumes."""
    from schemas.errors import UserError
    from schemas.train import stage1_defaults
    from training.run import run_training

    shards = write_train_shards(tmp_path / "shards", n=6, per_shard=6)
    cfg = default_config("tiny", shards, tmp_path / "run", max_steps=4, stages=[1], save_every=1,
                         stage1=stage1_defaults(global_batch_size=2, micro_batch_size=2))  # fmt: skip
    assert not run_training(cfg, stop_at=(1, 2))["stages"][1]["finished"]
    with pytest.raises(UserError, match="planned for 4 optimizer steps"):
        run_training(cfg.model_copy(update={"max_steps": 6}))
    again = run_training(cfg)["stages"][1]
    assert again["resumed_from"] == 2 and again["steps"] == 4 and again["finished"]


def test_plain_entry_point_mistakes_are_one_line(tmp_path, capsys):
    """`python -m training` (the torchrun entry) fails like `cxrflow train`: one line, exit 2, no traceback."""
    from training.__main__ import main

    shards = write_train_shards(tmp_path / "shards", n=4, per_shard=4)
    for argv, needle in (
        (["--shards", str(shards), "--out", str(tmp_path / "r"), "--max-steps", "0"], "max_steps"),
        (["--shards", str(tmp_path), "--out", str(tmp_path / "r")], "no train.index.json"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_plain_entry_point_data_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    """A mistake seen only once the shards are read (here the shuffle control on samples of one study, which
    no derangement can pair with another study's image) is one line and exit 2 too, not a traceback."""
    import training.run
    from schemas.train import stage1_defaults
    from training.__main__ import main
    from training.data import Example, build_examples

    def one_study(ds, expand):
        examples, summary = build_examples(ds, expand)
        return [Example(e.index, e.target, "50000001") for e in examples], summary

    monkeypatch.setattr(training.run, "build_examples", one_study)
    shards = write_train_shards(tmp_path / "shards", n=4, per_shard=4)
    config = tmp_path / "cfg.json"
    cfg = default_config("tiny", shards, tmp_path / "r", stages=[1], shuffle_images=True,
                         stage1=stage1_defaults(global_batch_size=2, micro_batch_size=2))  # fmt: skip
    config.write_text(cfg.model_dump_json())
    argv = ["--shards", str(shards), "--out", str(tmp_path / "r"), "--config", str(config), "--stage", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: shuffle control: one study holds 4 of the 4"), err


@pytest.mark.slow  # both stages, twice: ~10 s on 2 busy cores
def test_a_kill_while_saving_the_adapter_does_not_mark_stage_2_finished(tmp_path, monkeypatch):
    """The peft adapter was saved after the marker of a finished stage: a kill mid-save left a stage 2 that
    counted as done with a broken adapter/ that no rerun repaired."""
    import peft

    from schemas.train import stage1_defaults, stage2_defaults
    from training.run import run_training, stage_done

    shards = write_train_shards(tmp_path / "shards", n=4, per_shard=4)
    small = {"global_batch_size": 2, "micro_batch_size": 2}
    cfg = default_config("tiny", shards, tmp_path / "run", max_steps=1, stage1=stage1_defaults(**small),
                         stage2=stage2_defaults(**small))  # fmt: skip
    real = peft.PeftModel.save_pretrained

    def killed(self, path, *a, **kw):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "adapter_config.json").write_text("")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg)
    assert not stage_done(cfg.out, 2)
    monkeypatch.setattr(peft.PeftModel, "save_pretrained", real)
    assert run_training(cfg)["stages"][2]["finished"]
    assert json.loads((cfg.out / "final" / "adapter" / "adapter_config.json").read_text())["r"] > 0


def test_a_global_batch_the_data_cannot_fill_is_a_user_error(tmp_path):
    """A data-dependent mistake (seen only once the shards are read): one line at the CLI, not a traceback
    after the pipeline's data stages ran."""
    from schemas.errors import UserError
    from schemas.train import stage1_defaults
    from training.run import run_training

    shards = write_train_shards(tmp_path / "shards", n=4, per_shard=4)
    cfg = default_config("tiny", shards, tmp_path / "run", stages=[1],
                         stage1=stage1_defaults(global_batch_size=256, micro_batch_size=2))  # fmt: skip
    # the key to lower and its --set form, in the one line
    with pytest.raises(UserError, match=r"do not fill one global batch of 256: set train.stage1.global_batch_size "
                       r"to at most \d+ \(--set train.stage1.global_batch_size=\d+\)"):
        run_training(cfg)
    with pytest.raises(UserError, match="not a multiple of micro batch"):
        run_training(cfg.model_copy(update={"out": tmp_path / "run2",
                                            "stage1": stage1_defaults(global_batch_size=5, micro_batch_size=2)}))
