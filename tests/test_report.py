"""`cxrflow report`: the six sections from a run's files, self-contained HTML, the forest plot of paired
differences, mean ± sd across training seeds, and the page opened offline by headless Chromium.

The run is assembled from the project's own writers (score_records / write_evaluation, leaderboard_rows,
learning_record, the stage markers), so no training is needed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cxrio import atomic_write_json
from schemas.evaluation import EvaluationMetrics, MetricResult
from tasks.evaluate.leaderboard import leaderboard_rows, significance
from tasks.evaluate.scoring import score_records, write_evaluation
from tasks.plan import MARKER
from tasks.report.collect import collect
from tasks.report.render import SECTIONS, render_html, render_markdown

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REFS = ["Cardiomegaly.", "No acute cardiopulmonary process.", "Pleural effusion.", "Pneumothorax.",
        "Cardiomegaly. Pleural effusion.", "No acute cardiopulmonary process."] * 6
TRAIN = REFS[::2] * 3


def _stage(out: Path, stage: str, key: str, summary: dict | None = None) -> Path:
    d = out / "stages" / f"{stage}-{key}"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / MARKER, {"stage": stage, "key": key, "code_version": "abc123", "summary": summary or {}})
    return d


def _evaluation(out: Path, key: str, preds: list[str], encoder: Path) -> Path:
    """Scored as the pipeline's evaluate stage does, the encoder's retrieval metrics merged in."""
    d = _stage(out, "evaluate", key)
    records = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFS, preds, strict=True))]
    metrics, frame, notes = score_records(records, n_bootstrap=50, train_refs=TRAIN, experiment=key)
    enc = EvaluationMetrics.model_validate_json((encoder / "retrieval" / "metrics.json").read_text())
    metrics.metrics.update(enc.metrics)
    write_evaluation(d, metrics, frame, notes)
    return d


def _encoder(out: Path, key: str, r5: float) -> Path:
    d = _stage(out, "encoder", key)
    m = EvaluationMetrics(experiment=key, n_reports=36, metrics={
        "retrieval_i2t_r5": MetricResult(value=r5, ci=(r5 - 5, r5 + 5), n=36),
        "zeroshot_auroc_macro": MetricResult.missing("no label has both positive and negative samples")})
    (d / "retrieval").mkdir()
    atomic_write_json(d / "retrieval" / "metrics.json", m.model_dump(mode="json"))
    import numpy as np
    import polars as pl

    hits = (np.arange(36) < 36 * r5 / 100).astype(float)  # r5 percent of the queries hit
    pl.DataFrame({"id": [str(i) for i in range(36)], "source": ["mimic-cxr"] * 36, "retrieval_i2t_r5": hits}
                 ).write_parquet(d / "retrieval" / "per_query.parquet")
    atomic_write_json(d / "retrieval" / "retrieval.json", {"samples": 36, "retrieval": {
        "retrieval_i2t_r5": {"chance": 13.9, "ratio_to_chance": r5 / 13.9, "gallery": 36}}})
    return d


def build_run(out: Path, seeds: bool = False) -> Path:
    """A two-variant ablation OUT (variants `random` and `trained`, optionally over two training seeds)."""
    ingest = _stage(out, "ingest", "i1", {"source": "mimic-cxr", "found": 40, "kept": 36, "filtered": 3,
                                          "quarantined": 1, "filtered_by_reason": {"not frontal": 3},
                                          "quarantined_by_reason": {"unreadable image": 1},
                                          "splits": {"train": 18, "validate": 0, "test": 18}})
    shard = _stage(out, "shard", "s1")
    atomic_write_json(shard / "summary.json", {"splits": {"test": {"samples": 36}}, "paper_counts": {
        "paper": {"train": {"images": 237_972, "studies": 213_365, "pairs": 400_042}},
        "this_run": {"train": {"images": 18, "studies": 18, "pairs": 18}, "test": {"images": 36}}}})
    names = [f"{v}-seed{s}" for v in ("random", "trained") for s in (0, 1)] if seeds else ["random", "trained"]
    evals = {}
    for i, name in enumerate(names):
        good = name.startswith("trained")
        preds = REFS if good else ["Cardiomegaly."] * len(REFS)
        if good and i % 2:
            preds = REFS[:-3] + ["Cardiomegaly."] * 3
        enc = _encoder(out, f"n{i}", 60.0 if good else 20.0)
        ev = _evaluation(out, f"e{i}", preds, enc)
        evals[name] = str(ev)
        stages = {s: {"dir": str(d), "key": d.name.split("-", 1)[1]} for s, d in
                  (("ingest", ingest), ("shard", shard), ("encoder", enc), ("evaluate", ev))}
        atomic_write_json(out / "runs" / f"enc-{name}.json", {"name": f"image-encoder-{name}", "stages": stages})
    baseline = names[0]
    sig = {v: significance(evals[baseline], d, 200) for v, d in evals.items() if v != baseline}
    rows = leaderboard_rows(evals, baseline, ["rule_f1_micro_14", "rouge_l", "retrieval_i2t_r5"], sig)
    atomic_write_json(out / "ablations" / "image-encoder" / "leaderboard.json", rows)
    return out


def _section_texts(page: str) -> dict[str, str]:
    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cur, self.out = None, {}

        def handle_starttag(self, tag, attrs):
            if tag == "section":
                self.cur = dict(attrs)["id"]
                self.out[self.cur] = ""

        def handle_endtag(self, tag):
            if tag == "section":
                self.cur = None

        def handle_data(self, data):
            if self.cur:
                self.out[self.cur] += data

    p = P()
    p.feed(page)
    return p.out


def test_report_has_the_six_sections_with_numbers(tmp_path):
    data = collect(build_run(tmp_path / "out"))
    page = render_html(data)
    texts = _section_texts(page)
    assert list(texts) == [s.lower().replace(" ", "-") for s in SECTIONS]
    for sid, text in texts.items():
        assert re.search(r"\d+\.\d\d|\d{2,}", text), sid
    assert "found 40 = kept 36 + filtered 3 + quarantined 1" in texts["data"]
    assert "237,972" in texts["data"] and "not frontal" in texts["data"]
    assert "ratio to chance" in texts["image-encoder"] and "4.32x" in texts["image-encoder"]
    gen = texts["report-generation"]
    assert "baseline: image_blind" in gen and "baseline: majority_report" in gen
    assert "paper (LLaVA-Rad 7B, real MIMIC-CXR)" in gen and "30.6–30.8" in gen  # rouge_l's published figure
    assert "not computed" in gen  # CheXbert etc. without weights, with the reason
    assert "no LLM" in texts["chexprompt"]
    assert "baseline:image_blind" in texts["ablations"]  # the leaderboard's image-blind rows
    assert "abc123" in texts["lineage"] and "metrics.json" in texts["lineage"]
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"<(script|link)\b|src=['\"]https?:|url\(", page)
    assert "data:image/png;base64," in page  # the forest plot, inlined
    md = render_markdown(data)
    assert all(f"## {s}" in md for s in SECTIONS)


def test_forest_plot_of_paired_differences_and_seed_spread(tmp_path):
    data = collect(build_run(tmp_path / "out", seeds=True))
    (abl,) = data["ablations"]
    assert abl["baseline"] == "random-seed0"
    spread = abl["seeds"][("trained", "rule_f1_micro_14")]
    values = [r["value"] for r in abl["rows"] if r["metric"] == "rule_f1_micro_14" and r["variant"].startswith("trained")]
    assert spread["n"] == 2 and spread["mean"] == pytest.approx(sum(values) / 2) and spread["sd"] > 0
    page = render_html(data)
    assert f"{spread['mean']:.2f} ± {spread['sd']:.2f} (2 seeds)" in page
    assert "forest plot of the paired differences" in page
    # retrieval: the leaderboard cannot pair it (no per-report columns); the report pairs the encoders' queries
    r5 = next(r for r in abl["rows"] if r["variant"] == "trained-seed0" and r["metric"] == "retrieval_i2t_r5")
    assert r5["diff"] == pytest.approx(40.0, abs=3) and r5["diff_ci_low"] > 0 and "paired by query" in r5["status"]


def test_cli_report_and_its_errors(tmp_path, capsys):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    out = build_run(tmp_path / "out")
    html = tmp_path / "r" / "report.html"
    res = CliRunner().invoke(app, ["report", "--run", str(out), "--html", str(html),
                                   "--ablations", str(out / "ablations" / "image-encoder")])
    assert res.exit_code == 0, res.output
    assert html.read_text().count("<section") == 6 and str(html) in res.output
    from cxrflow_cli.main import run

    assert run(["report", "--run", str(tmp_path / "nothing"), "--html", str(html)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["report", "--run", str(empty), "--html", str(html)]) == 2
    assert "no pipeline run" in capsys.readouterr().err


def test_learning_verdict_against_both_baselines_in_the_report(tmp_path):
    from tasks.evaluate.learning import learning_record

    out = build_run(tmp_path / "out")
    trained = EvaluationMetrics.model_validate_json(
        (Path(json.loads((out / "runs" / "enc-trained.json").read_text())["stages"]["evaluate"]["dir"])
         / "metrics.json").read_text())
    m = trained.metrics["rule_f1_micro_14"]
    rec = learning_record("rule_f1_micro_14", m, MetricResult(value=20.0, ci=(10.0, 30.0), n=36),
                          {"diff": 80.0, "diff_ci": (70.0, 90.0), "p_value": 0.002, "n": 36}, trained.baselines)
    atomic_write_json(out / "learning.json", {**rec, "learned": True})
    texts = _section_texts(render_html(collect(out)))
    assert "image-blind constant" in texts["report-generation"]
    assert _fmt(rec["baselines"]["image_blind"]) in texts["report-generation"]


def _fmt(d: dict) -> str:
    return f"{d['value']:.2f} [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_renders_every_section_offline(tmp_path):
    """Headless Chromium opens the file with networking off (a proxy that does not exist): the DOM it builds
    holds the six sections, each with numbers, and the inlined forest plot."""
    html = tmp_path / "report.html"
    html.write_text(render_html(collect(build_run(tmp_path / "out"))))
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=http://127.0.0.1:9",
         "--virtual-time-budget=3000", "--run-all-compositor-stages-before-draw", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    texts = _section_texts(res.stdout)
    assert list(texts) == [s.lower().replace(" ", "-") for s in SECTIONS]
    for sid, text in texts.items():
        assert re.search(r"\d+\.\d\d|\d{2,}", text), sid
    assert "kept 36" in texts["data"] and "ratio to chance" in texts["image-encoder"]
    assert "<img alt=\"forest plot of the paired differences" in res.stdout


def test_train_seeds_expand_into_one_variant_per_seed():
    from schemas.pipeline import load_ablation_spec

    spec = load_ablation_spec(Path("configs/ablations/learning-seeds.yaml"))
    assert list(spec.variants) == [f"{v}-seed{s}" for v in ("trained", "shuffled") for s in (0, 1, 2)]
    assert spec.baseline == "shuffled-seed0"
    cfg = spec.variant_config("shuffled-seed2")
    assert cfg.train.seed == 2 and cfg.train.shuffle_images
    # the seed changes training only: every seed shares the data stages
    keys = [spec.variant_config(v).stage_hashes() for v in spec.variants]
    assert len({k["shard"] for k in keys}) == 1 and len({k["train"] for k in keys}) == 6
