"""End to end: a tiny model trained for a few steps is evaluated by the `evaluate` flow; CLI commands."""

from __future__ import annotations

import json

import polars as pl
import pytest
from evaluate_support import PUBLIC_CASES, tiny_trained_run
from typer.testing import CliRunner

from fixtures.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny model trained a couple of steps per stage, shared by the slow tests of this module."""
    return tiny_trained_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.mark.slow
def test_tiny_model_evaluated_end_to_end(tmp_path, tiny_run, prefect_server, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.evaluate import evaluate
    from schemas.evaluation import EvaluateParams, EvaluationMetrics
    from tasks.evaluate.chexprompt import judgment_json
    from tasks.evaluate.inference import read_predictions

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    run, shards = tiny_run
    out = tmp_path / "eval"
    with OpenAIServer(lambda body: judgment_json({"A": 1}, {"C": 1})) as srv:
        params = EvaluateParams(
            out=str(out),
            experiment="Tiny Run #1",
            run=str(run),
            shards=str(shards),
            batch_size=2,
            max_new_tokens=8,
            n_bootstrap=50,
            llm={
                "backend": "openai",
                "base_url": srv.base_url,
                "model": "judge",
                "cache_dir": str(tmp_path / "c"),
            },
        )
        result = evaluate(params)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 and set(preds[0]) >= {"id", "query", "reference", "prediction"}
    metrics = EvaluationMetrics.model_validate_json((out / "metrics.json").read_text())
    assert metrics.n_reports == 5 and metrics.predictions_sha256
    assert metrics.metrics["rouge_l"].value is not None and metrics.metrics["rouge_l"].ci is not None
    assert metrics.metrics["chexprompt_mean_significant_errors"].value == pytest.approx(1.0)
    assert metrics.metrics["chexprompt_mean_total_errors"].value == pytest.approx(2.0)
    assert metrics.metrics["bertscore_f1"].not_computed.startswith("not computed: ")
    per_report = pl.read_parquet(out / "per_report.parquet")
    # the file holds the reference's ids (`<subject>_<study>`, repeated per image); each row is its image's key
    assert per_report.height == 5 and per_report["id"].to_list() == [
        r["id"] for r in read_predictions(out / "predictions.jsonl")
    ]
    assert all(p["query"].startswith("<image>\n") and "ASSISTANT" not in p["query"] for p in preds)
    assert result["artifact_key"] == "evaluation-tiny-run-1"
    art = Artifact.get("evaluation-tiny-run-1")
    assert art is not None and art.type == "table"
    assert Artifact.get("evaluation-summary-tiny-run-1").type == "markdown"


def test_cli_score_chexprompt_and_compare(tmp_path):
    from cxrflow_cli.main import app

    refs = ["Small left pleural effusion.", "Mild cardiomegaly.", "No pneumothorax.", "Lungs are clear."]
    for name, preds in (("a", refs), ("b", ["Normal.", "Normal.", "Normal.", "Normal."])):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "predictions.jsonl", "w") as f:
            for i, (r, p) in enumerate(zip(refs, preds, strict=True)):
                f.write(json.dumps({"id": f"r{i}", "query": "q", "reference": r, "prediction": p}) + "\n")
    runner = CliRunner()
    for name in ("a", "b"):
        res = runner.invoke(
            app, ["score", "--predictions", str(tmp_path / name / "predictions.jsonl"), "--n-bootstrap", "20"]
        )
        assert res.exit_code == 0, res.output
        assert "rule_f1_micro_14" in res.output and "not computed: CheXbert" in res.output
    res = runner.invoke(
        app,
        [
            "compare-evals",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--n-resamples",
            "50",
            "--out",
            str(tmp_path / "cmp.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["metrics"]["rouge_l"]["diff"] < 0
    with open(tmp_path / "cases.jsonl", "w") as f:
        for case in PUBLIC_CASES:
            f.write(json.dumps(case) + "\n")
    res = runner.invoke(app, ["chexprompt", "--input", str(tmp_path / "cases.jsonl"), "--backend", "rules"])
    assert res.exit_code == 0, res.output
    assert "not computed: needs an LLM backend" in res.output


@pytest.mark.slow
def test_cli_generate_one_image(tmp_path, tiny_run):
    """`cxrflow generate` on a PNG: decoded and resized by the ingest image pipeline, then the tiny model."""
    import numpy as np
    from PIL import Image

    from cxrflow_cli.main import app
    from tasks.evaluate.single import load_image_like_ingest

    png = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 240), dtype=np.uint8), "L").save(png)
    img = load_image_like_ingest(png)
    assert img.size == (518, 518)
    run, _ = tiny_run
    res = CliRunner().invoke(
        app, ["generate", "--run", str(run), "--image", str(png), "--max-new-tokens", "4"]
    )
    assert res.exit_code == 0, res.output
