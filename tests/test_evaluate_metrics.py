"""Lexical and label metrics against the reference libraries, bootstrap determinism, not-computed reasons,
paired significance."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.evaluation import EvaluationMetrics, MetricResult, OptionalModelPaths
from tasks.evaluate.clinical import f1_specs, label_columns
from tasks.evaluate.lexical import lexical_columns, lexical_specs
from tasks.evaluate.resampling import bootstrap_indices, score
from tasks.evaluate.scoring import score_records
from tasks.evaluate.significance import compare_frames

REFS = [
    "The heart size is normal. There is no pleural effusion or pneumothorax.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Moderate cardiomegaly. Mild pulmonary edema.",
    "Lungs are clear. No acute osseous abnormality.",
    "Endotracheal tube terminates 4 cm above the carina. Right lower lobe consolidation.",
]
PREDS = [
    "Heart size is normal. No pleural effusion. No pneumothorax.",
    "There is a small left effusion.",
    "Cardiomegaly with mild pulmonary edema.",
    "The lungs are clear.",
    "Right lower lobe consolidation. The endotracheal tube is in standard position.",
]


def _by_name(specs):
    return {s.name: s for s in specs}


def test_lexical_metrics_equal_reference_libraries():
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    cols = lexical_columns(REFS, PREDS)
    specs = _by_name(lexical_specs())
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = np.mean([scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(REFS, PREDS, strict=True)]) * 100
    assert score(specs["rouge_l"], cols).value == pytest.approx(rouge, abs=1e-9)
    assert score(specs["bleu_4"], cols).value == pytest.approx(
        BLEU().corpus_score(PREDS, [REFS]).score, abs=1e-9
    )
    bleu1 = BLEU(max_ngram_order=1).corpus_score(PREDS, [REFS]).score
    assert score(specs["bleu_1"], cols).value == pytest.approx(bleu1, abs=1e-9)
    # Bootstrap resamples recompute the corpus score: a resample of rows 0,0,2 equals sacrebleu on those rows.
    sub = {c: v[[0, 0, 2]] for c, v in cols.items()}
    direct = BLEU().corpus_score([PREDS[0], PREDS[0], PREDS[2]], [[REFS[0], REFS[0], REFS[2]]]).score
    assert specs["bleu_4"].aggregate(sub) == pytest.approx(direct, abs=1e-9)


def test_bootstrap_ci_deterministic_under_seed():
    cols = lexical_columns(REFS, PREDS)
    spec = _by_name(lexical_specs())["rouge_l"]
    a = score(spec, cols, bootstrap_indices(len(REFS), 500, seed=7))
    b = score(spec, cols, bootstrap_indices(len(REFS), 500, seed=7))
    c = score(spec, cols, bootstrap_indices(len(REFS), 500, seed=8))
    assert a.ci == b.ci
    assert a.ci != c.ci
    assert a.ci[0] <= a.value <= a.ci[1]


def test_label_f1_by_hand():
    # ref: effusion+, cardiomegaly+ | pred: effusion+ only; uncertain pneumonia counts only in the variant.
    ref = [{"Pleural Effusion": 1, "Cardiomegaly": 1, "Pneumonia": -1}]
    pred = [{"Pleural Effusion": 1, "Pneumonia": -1}]
    from schemas.labels import CHEXPERT_LABELS

    ref = [{o: r.get(o) for o in CHEXPERT_LABELS} for r in ref]
    pred = [{o: p.get(o) for o in CHEXPERT_LABELS} for p in pred]
    cols = {**label_columns("rule", "ref", ref), **label_columns("rule", "pred", pred)}
    specs = _by_name(f1_specs())
    assert score(specs["rule_f1_micro_14"], cols).value == pytest.approx(200 / 3)  # tp1 fn1
    assert score(specs["rule_f1_macro_5"], cols).value == pytest.approx(100 / 5)  # effusion 1, rest 0
    assert score(specs["rule_f1_micro_14_uncertain_positive"], cols).value == pytest.approx(80.0)  # tp2 fn1


def test_score_records_reports_every_metric_or_a_reason():
    records = [
        {"id": str(i), "reference": r, "prediction": p}
        for i, (r, p) in enumerate(zip(REFS, PREDS, strict=True))
    ]
    metrics, frame, _ = score_records(records, paths=OptionalModelPaths(), n_bootstrap=50)
    m = metrics.metrics
    assert m["rouge_l"].value is not None and m["rouge_l"].n == 5 and m["rouge_l"].ci is not None
    assert m["rule_f1_micro_14"].value is not None
    for name in (
        "chexbert_f1_micro_14",
        "radgraph_f1_partial",
        "bertscore_f1",
        "chexprompt_mean_significant_errors",
    ):
        assert m[name].value is None
        assert m[name].not_computed.startswith("not computed: ")
    assert "CheXbert weights not configured" in m["chexbert_f1_macro_5"].not_computed
    assert "bertscore" in m["bertscore_f1"].not_computed.lower()
    assert frame.height == 5 and "rule_ref_label_cardiomegaly" in frame.columns
    # The metrics.json model round-trips and refuses a value together with a reason.
    assert EvaluationMetrics.model_validate_json(metrics.model_dump_json()) == metrics
    with pytest.raises(ValueError):
        MetricResult(value=0.0, not_computed="not computed: x")


def test_chexbert_path_that_does_not_exist_is_named(tmp_path):
    paths = OptionalModelPaths(
        chexbert_checkpoint=str(tmp_path / "chexbert.pth"), chexbert_bert_dir=str(tmp_path)
    )
    metrics, _, _ = score_records(
        [{"id": "1", "reference": "a", "prediction": "b"}], paths=paths, n_bootstrap=0
    )
    assert "does not exist" in metrics.metrics["chexbert_f1_micro_14"].not_computed


def test_paired_significance():
    rng = np.random.default_rng(0)
    refs = [REFS[i % 5] for i in range(40)]
    good = [PREDS[i % 5] for i in range(40)]
    bad = ["No acute cardiopulmonary process." for _ in range(40)]

    def rec(preds):
        return [
            {"id": str(i), "reference": r, "prediction": p}
            for i, (r, p) in enumerate(zip(refs, preds, strict=True))
        ]

    _, fa, _ = score_records(rec(good), paths=OptionalModelPaths(), n_bootstrap=0)
    _, fb, _ = score_records(rec(bad), paths=OptionalModelPaths(), n_bootstrap=0)
    same = compare_frames(fa, fa, n_resamples=200)
    for name in ("rouge_l", "bleu_4", "rule_f1_micro_14"):
        assert same.metrics[name].p_value == 1.0 and same.metrics[name].diff == 0.0
    diff = compare_frames(
        fa, fb.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(100))), n_resamples=200
    )
    for name in ("rouge_l", "bleu_4", "bleu_1", "rule_f1_micro_14"):
        assert diff.metrics[name].p_value < 0.01, name
        assert diff.metrics[name].diff < 0
        lo, hi = diff.metrics[name].diff_ci
        assert hi < 0
    assert diff.metrics["bertscore_f1"].not_computed.startswith("not computed")
    with pytest.raises(ValueError, match="different ids"):
        compare_frames(fa, fb.head(10))


def _chexprompt_frame(significant: np.ndarray):
    import polars as pl

    from tasks.evaluate.chexprompt import INSIG_COLUMNS, SIG_COLUMNS

    n = len(significant)
    data = {"id": [str(i) for i in range(n)], "reference": ["r"] * n, "prediction": ["p"] * n}
    data.update({c: np.zeros(n) for c in SIG_COLUMNS + INSIG_COLUMNS})
    data[SIG_COLUMNS[0]] = np.asarray(significant, dtype=float)
    return pl.DataFrame(data)


def test_paired_chexprompt_uses_only_reports_judged_on_both_sides():
    name = "chexprompt_mean_significant_errors"
    judged = _chexprompt_frame(np.ones(20))
    unjudged = _chexprompt_frame(np.full(20, np.nan))  # every B answer quarantined
    none = compare_frames(judged, unjudged, n_resamples=200).metrics[name]
    assert none.p_value is None and none.not_computed.startswith("not computed: ")
    # B judged only the first half, where both systems agree; A's errors are all in the second half.
    a = _chexprompt_frame(np.r_[np.zeros(10), np.full(10, 3.0)])
    b = _chexprompt_frame(np.r_[np.zeros(10), np.full(10, np.nan)])
    half = compare_frames(a, b, n_resamples=200).metrics[name]
    assert half.n == 10 and half.diff == 0.0 and half.p_value == 1.0


def test_split_without_samples_scores_nothing_and_says_why(tmp_path):
    import json

    from tasks.evaluate.inference import generate_predictions, read_predictions

    class NoCalls:
        def generate(self, *a, **k):
            raise AssertionError("nothing to generate")

    shards = tmp_path / "shards"
    shards.mkdir()
    # what the shard stage writes when the test split is empty: no test index, 0 samples in summary.json
    (shards / "summary.json").write_text(json.dumps({"splits": {"train": {"samples": 3}, "test": {"samples": 0}}}))
    summary = generate_predictions(NoCalls(), shards, tmp_path / "predictions.jsonl", split="test")
    assert summary.found == summary.generated == 0
    metrics, _, _ = score_records(read_predictions(tmp_path / "predictions.jsonl"), paths=OptionalModelPaths())
    assert all(m.value is None and m.not_computed.startswith("not computed: ") for m in metrics.metrics.values())
    with pytest.raises(FileNotFoundError, match="no validate shards"):  # a split the summary does not vouch for
        generate_predictions(NoCalls(), tmp_path, tmp_path / "p2.jsonl", split="validate")


def test_evaluation_writers_clean_what_a_killed_run_left(tmp_path):
    """Each write goes to a unique temporary name (cxrio.atomic_path); a kill mid-generation leaves one behind,
    and the next run into the folder removes those of dead writers instead of letting them pile up."""
    import json
    import os
    import subprocess
    import sys

    from cxrio import is_temp
    from tasks.evaluate.inference import generate_predictions, read_predictions
    from tasks.evaluate.scoring import write_evaluation

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    shards, out = tmp_path / "shards", tmp_path / "eval"
    shards.mkdir()
    out.mkdir()
    (shards / "summary.json").write_text(json.dumps({"splits": {"test": {"samples": 0}}}))
    live = out / f".metrics.json.q1w2.tmp-{os.getpid()}"  # a write in progress in a live process: kept
    live.write_text("")
    for name in ("predictions.jsonl", "metrics.json"):
        (out / f".{name}.a8s7.tmp-{dead}").write_text("partial")
        if name == "predictions.jsonl":
            generate_predictions(None, shards, out / name, split="test")
        else:
            metrics, frame, notes = score_records(read_predictions(out / "predictions.jsonl"),
                                                  paths=OptionalModelPaths())
            write_evaluation(out, metrics, frame, notes)
        assert [p.name for p in out.iterdir() if is_temp(p)] == [live.name], name


def test_gpu_generation_bench_script_smoke(capsys, monkeypatch):
    """The 7B generation benchmark's code path at tiny shape on CPU (figures on a GPU only)."""
    import sys

    from bench.gpu_generate_7b import main

    monkeypatch.setattr(sys, "argv", ["gpu_generate_7b", "--smoke", "--max-new-tokens", "4", "--batches", "1,2"])
    main()
    out = capsys.readouterr().out
    assert "batch  1:" in out and "batch  2:" in out and "not a measurement" in out
