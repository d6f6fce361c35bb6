"""The `pipeline` flow end to end on a fixture, its reuse of stage outputs, and ablations through `ablate`.

The structure stage talks to a real local OpenAI-compatible server, so "no LLM call on a rerun" is counted at
the server; "no decode" and "no training step" are checked on the files the stages would rewrite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pipeline_support import base_dict, tiny_config, write_fixture
from structure_support import rules_responder

from fixtures.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def llm_server():
    os.environ.setdefault("OPENAI_API_KEY", "test-key")
    with OpenAIServer(rules_responder) as srv:
        yield srv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return write_fixture(root / "mimic"), root / "out"


def _mtimes(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_pipeline_runs_end_to_end_then_reuses_everything(prefect_server, workspace, llm_server):
    from flows.pipeline import pipeline

    root, out = workspace
    cfg = tiny_config(root, out, name="e2e", backend="openai", model="m", base_url=llm_server.base_url)
    first = pipeline(cfg)
    assert {s["status"] for s in first["stages"].values()} == {"ran"}
    assert (
        first["work"]["decoded"] > 0
        and first["work"]["llm_requests"] > 0
        and first["work"]["train_steps"] > 0
    )
    metrics = json.loads(Path(first["metrics_json"]).read_text())
    assert metrics["experiment"] == "e2e" and metrics["n_reports"] > 0
    assert metrics["metrics"]["rouge_l"]["value"] is not None
    shown = {r["metric"] for r in first["metrics"]}
    assert {"rouge_l", "rule_f1_micro_14", "chexprompt_mean_significant_errors"} <= shown
    chats = llm_server.counts["chat"]
    assert chats == first["work"]["llm_requests"]

    before = {s: _mtimes(Path(v["dir"])) for s, v in first["stages"].items()}
    again = pipeline(cfg)
    assert {s["status"] for s in again["stages"].values()} == {"reused"}
    assert again["work"] == {"decoded": 0, "llm_requests": 0, "train_steps": 0}
    assert llm_server.counts["chat"] == chats  # no request reached the server
    assert {s: _mtimes(Path(v["dir"])) for s, v in again["stages"].items()} == before  # nothing rewritten

    # Only evaluation changes: every upstream stage (the checkpoint included) is reused.
    cfg_eval = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"max_new_tokens": 3})})
    third = pipeline(cfg_eval)
    assert [s for s, v in third["stages"].items() if v["status"] == "ran"] == ["evaluate"]
    assert third["stages"]["train"]["dir"] == first["stages"]["train"]["dir"]
    assert third["work"]["train_steps"] == 0


@pytest.mark.slow
def test_ablation_runs_one_tagged_flow_run_per_variant_with_a_leaderboard(prefect_server, workspace, capsys,
                                                                          monkeypatch):
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
    from prefect.utilities.asyncutils import run_coro_as_sync

    from flows.ablate import ablate
    from schemas.pipeline import AblationSpec

    root, out = workspace
    spec = AblationSpec(
        name="lora-t",
        base=base_dict(tiny_config(root, out)),
        variants={"r64": {}, "r4": {"train.stage2.lora_r": 4, "train.stage2.lora_alpha": 8}},
        metrics=["rouge_l", "rule_f1_micro_14"],
    )
    result = ablate(spec, n_resamples=50)
    r64, r4 = result["variants"]["r64"], result["variants"]["r4"]
    # The training-only variant reuses the data outputs of the baseline and trains its own model.
    for stage in ("ingest", "structure", "shard"):
        assert r4["stages"][stage]["status"] == "reused"
        assert r4["stages"][stage]["dir"] == r64["stages"][stage]["dir"]
    assert (
        r4["stages"]["train"]["status"] == "ran"
        and r4["stages"]["train"]["dir"] != r64["stages"]["train"]["dir"]
    )

    async def runs(tag: str, flow: str | None = None):
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])) if flow else None,
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
            )

    # The ablation tag finds one row per variant: stage subflows carry stage:/variant: tags instead.
    found = run_coro_as_sync(runs("ablation:lora-t"))
    by_name = {r.name: r for r in found}
    assert set(by_name) == {"lora-t-r64", "lora-t-r4"}
    stage_runs = run_coro_as_sync(runs("variant:r4"))
    assert {t for r in stage_runs for t in r.tags if t.startswith("stage:")} >= {
        "stage:train",
        "stage:evaluate",
    }
    assert not any("ablation:lora-t" in r.tags for r in stage_runs if r.name not in by_name)
    own = {r.name for r in run_coro_as_sync(runs("ablate:lora-t"))}
    assert own == {"lora-t-ablate", "lora-t-compare"} or own == {"lora-t-compare"}  # ablate() called directly
    assert "variant:r4" in by_name["lora-t-r4"].tags and "variant:r64" in by_name["lora-t-r64"].tags
    assert by_name["lora-t-r4"].parameters["cfg"]["train"]["stage2"]["lora_r"] == 4
    assert all(r.state_name == "Completed" for r in found)

    board = Artifact.get("ablation-lora-t-leaderboard")
    assert board is not None and board.type == "table"
    rows = json.loads(board.data) if isinstance(board.data, str) else board.data
    assert [(r["variant"], r["metric"]) for r in rows] == [
        ("r64", "rouge_l"),
        ("r64", "rule_f1_micro_14"),
        ("r4", "rouge_l"),
        ("r4", "rule_f1_micro_14"),
        # the image-blind baselines of tasks/evaluate/baselines.py, no paired difference
        *((f"baseline:{b}", m) for b in ("image_blind", "majority_report") for m in ("rouge_l", "rule_f1_micro_14")),
    ]
    r4_rouge = rows[2]
    assert (
        isinstance(r4_rouge["value"], float)
        and r4_rouge["ci_low"] <= r4_rouge["value"] <= r4_rouge["ci_high"]
    )
    assert r4_rouge["status"] == "compared" and isinstance(r4_rouge["p_value"], float)
    assert (
        r4_rouge["diff_ci_low"] <= r4_rouge["diff"] <= r4_rouge["diff_ci_high"]
        and r4_rouge["small_n"] is True
    )
    assert r4_rouge["run"] == f"[r4](/runs/flow-run/{r4['flow_run_id']})"  # markdown: a link in the UI
    md = Artifact.get("ablation-lora-t-leaderboard-md")
    assert f"[r4](/runs/flow-run/{r4['flow_run_id']})" in md.data and "⚠" in md.data
    # The reusing variant links to the run that produced its reused stages; per-variant artifact keys.
    stages_md = Artifact.get("pipeline-stages-lora-t-r4").data
    assert f"/runs/flow-run/{r64['flow_run_id']}" in stages_md
    assert Artifact.get("train-loss-curve-lora-t-r4") is not None and Artifact.get(
        "train-loss-curve-lora-t-r64"
    )
    chart = Artifact.get("ablation-lora-t-chart")
    assert "data:image/png;base64," in chart.data
    assert (Path(result["compare"]["dir"]) / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each variant's run carries its headline metric (the spec's first metric) as a tag: the filtered Runs page
    # says which is better.
    from tasks.evaluate.leaderboard import load_metrics

    tagged = {r.name: r.tags for r in run_coro_as_sync(runs("ablation:lora-t"))}
    for variant in ("r64", "r4"):
        rouge = load_metrics(result["variants"][variant]["eval_dir"]).metrics["rouge_l"]
        head = f"metric rouge_l {rouge.value:.2f} [{rouge.ci[0]:.2f}, {rouge.ci[1]:.2f}]"
        assert result["variants"][variant]["headline"] == head and head in tagged[f"lora-t-{variant}"]
    # A rerun with nothing changed creates no new variant run: still one row per variant, the same runs.
    again = ablate(spec, n_resamples=50)
    assert all(v.get("reused") for v in again["variants"].values())
    after = run_coro_as_sync(runs("ablation:lora-t"))
    assert sorted(str(r.id) for r in after) == sorted(str(r.id) for r in found)
    assert {v: r["flow_run_id"] for v, r in again["variants"].items()} == {
        "r64": r64["flow_run_id"], "r4": r4["flow_run_id"]}
    assert all(sum(t.startswith("metric rouge_l ") for t in r.tags) == 1 for r in after)

    # `cxrflow compare` of the two evaluations links each row to the pipeline run that wrote it.
    from cxrflow_cli.main import run as cli
    from cxrflow_cli.quiet import ENV_VARS

    for var in ENV_VARS:  # recorded, so what the CLI's quiet mode sets is undone after the test
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    capsys.readouterr()
    code = cli(["compare", f"r64={r64['eval_dir']}", f"r4={r4['eval_dir']}", "--name", "lora-t-cli", "--out",
                str(out), "--metrics", "rouge_l", "--n-resamples", "20"])
    rows = json.loads(capsys.readouterr().out)
    from tasks.variants import producing_run

    # r4's evaluation ran in r4's run; r64's may come from an earlier run of the same config (the marker's)
    # (the image-blind baseline rows have no run of their own)
    assert code == 0 and {r["variant"]: r["run"] for r in rows if r["variant"] in ("r64", "r4")} == {
        "r4": f"[r4](/runs/flow-run/{r4['flow_run_id']})",
        "r64": f"[r64](/runs/flow-run/{producing_run(r64['eval_dir'])})"}


def test_ablation_spec_overrides_and_errors(tmp_path):
    from schemas.pipeline import AblationSpec, load_ablation_spec

    spec = load_ablation_spec(Path("configs/ablations/demo.yaml"))
    assert spec.baseline == "crop"
    crop, pad = spec.variant_config("crop"), spec.variant_config("pad")
    assert (crop.data.image.resize, pad.data.image.resize) == ("crop", "pad")
    assert crop.stage_hashes()["ingest"] != pad.stage_hashes()["ingest"]
    lora = load_ablation_spec(Path("configs/ablations/lora-rank.yaml"))
    a, b = lora.variant_config("r64").stage_hashes(), lora.variant_config("r8").stage_hashes()
    assert a["shard"] == b["shard"] and a["train"] != b["train"]  # training-only: data keys shared
    with pytest.raises(ValueError, match="not a variant"):
        AblationSpec(name="x", base=spec.base, variants={"a": {}}, baseline="b")
    with pytest.raises(ValueError):
        AblationSpec(name="x", base=spec.base, variants={"a": {"data.image.size": "huge"}})


def test_cli_pipeline_help_lists_commands():
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("pipeline", "ablate", "compare", "demo"):
        assert cmd in res.output


def test_plan_markers_count_only_for_their_key_and_a_present_output(tmp_path):
    from tasks.plan import MARKER, read_marker, write_marker

    d = tmp_path / "stages" / "train-abc"
    write_marker("train", d, "abc", {"stages": {}}, 1.5, ("id-1", "run-1"))
    assert read_marker("train", d, "abc") is None  # the checkpoint the marker vouches for is missing
    (d / "final").mkdir()
    (d / "final" / "stage1-projector.safetensors").write_bytes(b"x")
    marker = read_marker("train", d, "abc")
    assert marker["flow_run_id"] == "id-1" and marker["seconds"] == 1.5
    assert read_marker("train", d, "other-key") is None  # a different config's marker is not this stage's
    assert (d / MARKER).exists()


def test_plan_stage_configs_point_every_stage_at_its_keyed_dir(tmp_path):
    from schemas.shards import DataParams
    from tasks.plan import data_stage_configs, stage_configs, work_done

    cfg = tiny_config(tmp_path / "mimic", tmp_path / "out")
    confs, dirs = stage_configs(cfg), cfg.stage_dirs()
    assert confs.mixture is None and confs.encoder is None
    assert (confs.ingest.out, confs.structure.out, confs.shard.out) == (
        dirs["ingest"],
        dirs["structure"],
        dirs["shard"],
    )
    assert (
        confs.structure.manifest == dirs["ingest"] / "manifest.parquet"
        and confs.shard.data == dirs["structure"]
    )
    assert (confs.train.shards, confs.train.out) == (dirs["shard"], dirs["train"])
    assert (confs.evaluate.run, confs.evaluate.experiment) == (str(dirs["train"]), cfg.name)
    assert confs.train.max_steps == cfg.train.max_steps
    data = data_stage_configs(DataParams(root=tmp_path / "mimic", out=tmp_path / "d", image={"size": 64}))
    assert data.ingest.image.size == 64 and data.structure.out == data.ingest.out == tmp_path / "d" / "data"
    assert data.shard.out == tmp_path / "d" / "shards" and data.mixture is None
    assert (
        work_done("train", {"stages": {1: {"steps": 3}, 2: {"skipped": "already finished"}}})["train_steps"]
        == 3
    )
    ingest = {"found": 9, "kept": 7, "filtered": 1, "quarantined": 1, "decoded": 7}
    assert work_done("ingest", ingest) == {"decoded": 7, "llm_requests": 0, "train_steps": 0}


def test_side_by_side_variants_wait_for_the_stages_an_earlier_one_runs(tmp_path):
    """flows/ablate.py runs variants side by side: each stage folder is run by the first variant with it, and a
    later variant waits for exactly those (a training-only variant for the data stages; an evaluation-only
    one for the checkpoint too; one with other data for nothing)."""
    from schemas.pipeline import AblationSpec
    from tasks.plan import stage_finished
    from tasks.variants import shared_stages

    spec = AblationSpec(name="s", base=base_dict(tiny_config(tmp_path / "mimic", tmp_path / "out")),
                        variants={"a": {}, "lr": {"train.stage2.lr": 1e-3}, "tok": {"evaluate.max_new_tokens": 3},
                                  "px": {"data.image.size": 64}})
    waits = shared_stages({v: spec.variant_config(v) for v in spec.variants})
    assert waits == {"a": [], "lr": [("ingest", "a"), ("structure", "a"), ("shard", "a")],
                     "tok": [("ingest", "a"), ("structure", "a"), ("shard", "a"), ("train", "a")], "px": []}
    assert not stage_finished(spec.variant_config("a"), "ingest")


def test_side_by_side_a_failed_shared_stage_fails_the_ablation_and_starts_no_waiting_variant(tmp_path,
                                                                                               monkeypatch):
    """The first variant fails before its shared data stages finish: the variant waiting for them is never
    started (no hang on their markers) and the ablation raises the first variant's own error."""
    import flows.ablate as ablate_flow
    from schemas.pipeline import AblationSpec

    spec = AblationSpec(name="s", base=base_dict(tiny_config(tmp_path / "mimic", tmp_path / "out")),
                        variants={"a": {}, "lr": {"train.stage2.lr": 1e-3}})
    started: list[str] = []

    def fake_variant(spec, variant, side_by_side):
        started.append(variant)
        raise ValueError(f"{variant} failed in ingest")

    monkeypatch.setattr(ablate_flow, "_run_variant", fake_variant)
    with pytest.raises(ValueError, match="a failed in ingest"):
        ablate_flow._side_by_side(spec, ["a", "lr"], 2)
    assert started == ["a"]


def test_side_by_side_an_interrupt_starts_no_further_stage_or_training(tmp_path, monkeypatch):
    """Ctrl-C while variants run side by side: the variants' threads cannot be killed, so each stops at its next
    stage (flows/stages.py) and starts no training (training/child.py) instead of running its pipeline on to the
    end (the process would wait for them at exit); the stage under way when it came finishes."""
    import threading

    import flows.ablate as ablate_flow
    import flows.stages as stages
    from flows.train import TRAIN_IN_CHILD
    from schemas.pipeline import AblationSpec
    from training.child import Stopped, clear_stop, run_training_in_child

    spec = AblationSpec(name="s", base=base_dict(tiny_config(tmp_path / "mimic", tmp_path / "out")),
                        variants={"a": {}, "px": {"data.image.size": 64}})  # no stage in common: both start
    in_stage, release = threading.Event(), threading.Event()
    ran: list[str] = []
    ends: dict[str, BaseException | None] = {}
    ended = {v: threading.Event() for v in spec.variants}

    def fake_stage(confs, opts, experiment):
        ran.append(confs)
        in_stage.set()
        assert release.wait(30)
        return {}

    for stage in ("ingest", "structure"):
        monkeypatch.setitem(stages.FLOWS, stage, fake_stage)

    def fake_variant(spec, variant, side_by_side):
        TRAIN_IN_CHILD.set(side_by_side)
        try:
            for stage in ("ingest", "structure"):
                stages.run_stage(stage, stage)
            run_training_in_child(spec.variant_config(variant).train)
            ends[variant] = None
        except BaseException as exc:  # noqa: BLE001 - the test looks at how each variant ended
            ends[variant] = exc
        finally:
            ended[variant].set()

    def interrupted_wait(futures):
        assert in_stage.wait(30)
        raise KeyboardInterrupt

    monkeypatch.setattr(ablate_flow, "_run_variant", fake_variant)
    monkeypatch.setattr(ablate_flow, "wait", interrupted_wait)
    try:
        with pytest.raises(KeyboardInterrupt):
            ablate_flow._side_by_side(spec, ["a", "px"], 2)
        release.set()
        assert all(e.wait(30) for e in ended.values())
        assert ran == ["ingest"]  # the stage under way, nothing after it
        assert all(isinstance(e, Stopped) for e in ends.values()), ends
        with pytest.raises(Stopped):
            run_training_in_child(spec.variant_config("a").train)
    finally:
        release.set()
        clear_stop()  # this process's later trainings
