"""Reference parity of the evaluation: the bootstrap the LLaVA-Rad evaluation reports, its prediction files as
written, pairing with them by study, and CheXprompt's published protocol against a local OpenAI server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluate_support import PUBLIC_CASES
from typer.testing import CliRunner

from fixtures.openai_server import OpenAIServer, user_text
from schemas.evaluation import OptionalModelPaths
from schemas.llm import LLMConfig
from tasks.evaluate.chexprompt import SIG_COLUMNS, judge
from tasks.evaluate.chexprompt_original import EXAMPLES, answer_text
from tasks.evaluate.inference import read_predictions
from tasks.evaluate.lexical import lexical_columns, lexical_specs
from tasks.evaluate.resampling import REFERENCE_SEED, bootstrap_indices, score
from tasks.evaluate.scoring import score_records
from tasks.evaluate.significance import compare_evals

REFS = [
    "The heart size is normal. There is no pleural effusion or pneumothorax.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Moderate cardiomegaly. Mild pulmonary edema.",
    "Lungs are clear. No acute osseous abnormality.",
    "Right lower lobe consolidation.",
    "Stable mild cardiomegaly. No focal consolidation.",
]
PREDS = [
    "Heart size is normal. No pleural effusion.",
    "There is a small left effusion.",
    "Cardiomegaly with mild pulmonary edema.",
    "The lungs are clear.",
    "Right lower lobe consolidation. No effusion.",
    "Mild cardiomegaly.",
]


def test_reference_scheme_reproduces_scipy_bootstrap_as_the_reference_calls_it():
    from scipy.stats import bootstrap

    cols = lexical_columns(REFS, PREDS)
    spec = {s.name: s for s in lexical_specs()}["rouge_l"]
    n = len(REFS)
    mine = score(spec, cols, bootstrap_indices(n, 500, REFERENCE_SEED, "reference"))
    # the reference: scipy.stats.bootstrap over row indices, random_state=3, 500 resamples, percentile CI
    ref = bootstrap(
        data=(list(range(n)),),
        statistic=lambda idx: spec.aggregate({c: cols[c][np.asarray(idx, dtype=int)] for c in spec.columns}),
        method="percentile",
        paired=False,
        vectorized=False,
        confidence_level=0.95,
        random_state=3,
        n_resamples=500,
    )
    assert mine.bootstrap_median == pytest.approx(float(np.median(ref.bootstrap_distribution)), abs=1e-12)
    assert mine.ci == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert mine.value == pytest.approx(spec.aggregate(cols))  # the point estimate stays beside it
    with pytest.raises(ValueError, match="unknown bootstrap scheme"):
        bootstrap_indices(n, 5, 0, "bogus")


def test_reference_scheme_bleu_is_sacrebleus_own_bootstrap():
    """The reference's BLEU interval: sacrebleu's corpus_score(n_bootstrap=500), mean +/- half the 2.5-97.5 span
    of its own draw (llava/eval/rrg_eval/run.py bleu1/bleu4); its 'median' is the corpus score."""
    from sacrebleu.metrics import BLEU

    records = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFS, PREDS, strict=True))]
    metrics, _, _ = score_records(records, paths=OptionalModelPaths(), bootstrap_scheme="reference", seed=3)
    for order, name in ((1, "bleu_1"), (4, "bleu_4")):
        ref = BLEU(max_ngram_order=order).corpus_score(PREDS, [REFS], n_bootstrap=500)
        m = metrics.metrics[name]
        assert m.ci == pytest.approx((ref._mean - ref._ci, ref._mean + ref._ci), abs=1e-6)
        assert m.value == pytest.approx(ref.score, abs=1e-9) and m.bootstrap_median == m.value
    # the cxrflow scheme keeps its own percentile interval over its shared draw
    ours, _, _ = score_records(records, paths=OptionalModelPaths(), bootstrap_scheme="cxrflow")
    assert ours.metrics["bleu_4"].ci != metrics.metrics["bleu_4"].ci


def test_reference_scheme_rouge_is_the_reference_aggregators_draw():
    """rouge-score's BootstrapAggregator, as the reference's rouge.compute runs it after `np.random.seed(3)`:
    its mid/low/high F-measure are cxrflow's bootstrap median and CI."""
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    agg = scoring.BootstrapAggregator(confidence_interval=0.95, n_samples=500)
    for r, p in zip(REFS, PREDS, strict=True):
        agg.add_scores(scorer.score(r, p))
    state = np.random.get_state()
    np.random.seed(3)
    try:
        ref = agg.aggregate()["rougeL"]
    finally:
        np.random.set_state(state)
    records = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFS, PREDS, strict=True))]
    metrics, _, _ = score_records(records, paths=OptionalModelPaths(), bootstrap_scheme="reference", seed=3)
    m = metrics.metrics["rouge_l"]
    assert m.bootstrap_median == pytest.approx(ref.mid.fmeasure * 100, abs=1e-9)
    assert m.ci == pytest.approx((ref.low.fmeasure * 100, ref.high.fmeasure * 100), abs=1e-9)


def _llava_rad_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _llava_rows():
    # LLaVA-Rad's model_mimic_cxr.py writes {id, query, reference, prediction}, one line per image; a study
    # with two frontal images appears twice under the same id.
    studies = ["10000032_50414267", "10000032_50414267", "10000764_57375967", "10000898_50771383"]
    return [
        {"id": sid, "query": "<image>\nDescribe the findings.", "reference": REFS[i], "prediction": PREDS[i]}
        for i, sid in enumerate(studies)
    ]


def test_cxrflow_predictions_carry_the_reference_id_and_query():
    """model_mimic_cxr.py writes `id` = the annotation's `<subject>_<study>` and `query` = the record's user turn
    as its loader made it (not the chat prompt; the reason's line breaks as spaces, not stripped)."""
    from PIL import Image

    from tasks.evaluate.inference import TestSample, query_text, record_id

    assert query_text(None, 2, "llava-rad") == (
        "<image>\nProvide a description of the findings in the radiology image."
    )
    assert query_text("Cough,\nfever. ", 2, "llava-rad") == (
        "<image>\nProvide a description of the findings in the radiology image given the following "
        "indication: Cough, fever. "
    )
    assert "ASSISTANT" not in query_text("x", 2, "tiny") and query_text("x", 2, "tiny").startswith("<image>\n")
    img = Image.new("RGB", (4, 4))
    mimic = TestSample("mimic-cxr-abc", img, "ref", None, "10000032_50414267")
    other = TestSample("openi-CXR1_IM-0001-1001", img, "ref", None, "CXR1_CXR1")
    assert record_id(mimic) == "10000032_50414267" and record_id(other) == "openi-CXR1_IM-0001-1001"


def test_llava_rad_predictions_scored_as_written(tmp_path):
    records = read_predictions(_llava_rad_file(tmp_path / "test.jsonl", _llava_rows()))
    assert [r["id"] for r in records] == [
        "10000032_50414267#0",
        "10000032_50414267#1",
        "10000764_57375967#0",
        "10000898_50771383#0",
    ]
    assert records[1]["study"] == "10000032_50414267"
    # a repeated id that is not a LLaVA-Rad study id is still an error
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "reference": "x", "prediction": "y"}\n' * 2)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        read_predictions(bad)


def test_cli_score_llava_rad_file_writes_point_and_bootstrap_median(tmp_path):
    from cxrflow_cli.main import app

    (tmp_path / "preds").mkdir()
    preds = _llava_rad_file(tmp_path / "preds" / "test.jsonl", _llava_rows())
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--predictions",
            str(preds),
            "--out",
            str(tmp_path / "eval"),
            "--bootstrap-scheme",
            "reference",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["n_reports"] == 4 and m["bootstrap_scheme"] == "reference" and m["seed"] == 3
    rouge = m["metrics"]["rouge_l"]
    assert rouge["value"] is not None and rouge["bootstrap_median"] is not None and rouge["ci"] is not None
    assert "bootstrap median" in res.output


def test_compare_evals_pairs_cxrflow_with_llava_rad_file_by_study(tmp_path):
    # cxrflow's side: one line per image key, with the study it belongs to
    ours = tmp_path / "ours.jsonl"
    ours.write_text(
        "".join(
            json.dumps({"id": f"img{i}", "study": s, "reference": REFS[i], "prediction": PREDS[(i + 1) % 6]})
            + "\n"
            for i, s in enumerate(["10000032_50414267", "10000764_57375967", "10000898_50771383", "1_2"])
        )
    )
    theirs = _llava_rad_file(tmp_path / "llava.jsonl", _llava_rows())
    cmp = compare_evals(ours, theirs, n_resamples=50, pair_by="study")
    assert cmp.n_common == 3 and cmp.paired_by == "study"
    assert "3 studies in both" in cmp.note and "1 only in" in cmp.note
    assert cmp.metrics["rouge_l"].p_value is not None
    with pytest.raises(ValueError, match="different ids"):
        compare_evals(ours, theirs, n_resamples=10)  # by id the two files do not pair


def _cxrflow_lines(path, rows):
    """cxrflow's predictions as generate_predictions writes them: id `<subject>_<study>` (repeated per image of a
    study), key = the shard sample."""
    path.write_text("".join(json.dumps({"id": st, "key": k, "study": st, "reference": r, "prediction": p}) + "\n"
                            for k, st, r, p in rows))
    return path


def test_two_cxrflow_evaluations_pair_image_by_image_whatever_the_line_order(tmp_path):
    """A study's images are paired by their shard key, not by their position in the study: the same predictions
    written in another order compare as identical systems (every resampled difference 0, p = 1)."""
    studies = ["10000032_50414267"] * 3 + ["10000764_57375967"] * 2 + ["10000898_50771383"]
    # one report per study (its images share it), one prediction per image
    rows = [(f"mimic-cxr-{i}", st, REFS[sorted(set(studies)).index(st)], PREDS[i]) for i, st in enumerate(studies)]
    a = _cxrflow_lines(tmp_path / "a.jsonl", rows)
    b = _cxrflow_lines(tmp_path / "b.jsonl", [rows[2], rows[0], rows[1], rows[4], rows[3], rows[5]])
    cmp = compare_evals(a, b, n_resamples=50)
    for name in ("bleu_4", "rouge_l"):
        assert cmp.metrics[name].diff_ci == (0.0, 0.0) and cmp.metrics[name].p_value == 1.0, name
    assert [r["id"] for r in read_predictions(a)] == [k for k, *_ in rows]  # the key is the row
    assert read_predictions(a)[0]["study"] == "10000032_50414267"
    dup = _cxrflow_lines(tmp_path / "dup.jsonl", [rows[0], rows[0]])
    with pytest.raises(ValueError, match="duplicate key"):
        read_predictions(dup)


# --- CheXprompt, protocol fewshot-own (cxrflow's paraphrase; `original` is tests/test_evaluate_chexprompt_published.py)
def _text_judge(body):
    """A server answering in the published format: one significant false finding for the cardiomegaly case."""
    text = user_text(body)
    pair = text.rsplit("##", 1)[-1]
    return answer_text({"A": 1} if "severe cardiomegaly" in pair else {}, {})


def test_fewshot_own_protocol_request_and_counts(tmp_path):
    seen = []

    def responder(body):
        seen.append(body)
        return _text_judge(body)

    with OpenAIServer(responder) as srv:
        cfg = LLMConfig(backend="openai", base_url=srv.base_url, model="judge", cache_dir=tmp_path / "c")
        out = judge(PUBLIC_CASES, cfg, n_bootstrap=0, protocol="fewshot-own")
    body = seen[0]
    assert "response_format" not in body and "seed" not in body
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.0, 128, 0.9)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"].count("Errors:") == len(EXAMPLES) + 1  # five shots + the pair
    assert out.columns["chexprompt_significant_A"].tolist() == [1.0, 0.0]
    assert out.metrics["chexprompt_mean_significant_errors"].value == pytest.approx(0.5)
    assert out.protocol == "fewshot-own" and out.summary["protocol"] == "fewshot-own"
    assert out.summary["parameters"]["top_p"] == 0.9
    # a different protocol is a different prompt version (and cache key)
    with OpenAIServer(lambda b: json.loads(json.dumps({"explanation": "", **_zero()}))) as srv:
        cfg_j = LLMConfig(backend="openai", base_url=srv.base_url, model="judge", cache_dir=tmp_path / "c")
        j = judge(PUBLIC_CASES, cfg_j, n_bootstrap=0, protocol="json")
    assert j.prompt_version != out.prompt_version


def _zero():
    z = {t: 0 for t in "ABCDEF"}
    return {"clinically_significant": z, "clinically_insignificant": z}


def test_fewshot_own_protocol_retries_an_invalid_answer_once(tmp_path):
    calls = []

    def responder(body):
        calls.append(1)
        return "I think there is one error." if len(calls) % 2 else _text_judge(body)

    with OpenAIServer(responder) as srv:
        cfg = LLMConfig(
            backend="openai",
            base_url=srv.base_url,
            model="judge",
            cache_dir=tmp_path / "c",
            invalid_answer_retries=3,
        )
        out = judge(PUBLIC_CASES[:1], cfg, n_bootstrap=0, protocol="fewshot-own")
    assert len(calls) == 2 and out.columns[SIG_COLUMNS[0]].tolist() == [1.0]
    with OpenAIServer(lambda b: "no counts here") as srv:
        cfg = LLMConfig(
            backend="openai",
            base_url=srv.base_url,
            model="judge",
            cache_dir=tmp_path / "d",
            invalid_answer_retries=3,
        )
        bad = judge(PUBLIC_CASES[:1], cfg, n_bootstrap=0, protocol="fewshot-own")
        assert (
            srv.chat_requests == 2
        )  # asked once, retried once, as the reference does, whatever the config says
    assert "case-cardiomegaly" in bad.reasons


def test_cli_chexprompt_protocol_fewshot_own_records_protocol_and_version(tmp_path):
    from cxrflow_cli.main import app

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(c) + "\n" for c in PUBLIC_CASES))
    with OpenAIServer(_text_judge) as srv:
        res = CliRunner().invoke(
            app,
            [
                "chexprompt",
                "--input",
                str(pairs),
                "--backend",
                "openai-compatible",
                "--base-url",
                srv.base_url,
                "--model",
                "judge",
                "--protocol",
                "fewshot-own",
                "--out",
                str(tmp_path / "o"),
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "judgments.jsonl").read_text().splitlines()]
    assert [r["chexprompt_significant_A"] for r in rows] == [1.0, 0.0]
    assert {r["protocol"] for r in rows} == {"fewshot-own"} and all(len(r["prompt_version"]) == 16 for r in rows)
    assert "chexprompt_mean_significant_errors" in res.output


def test_score_records_carries_protocol_per_judgment(tmp_path):
    records = [
        {"id": c["id"], "reference": c["reference"], "prediction": c["candidate"]} for c in PUBLIC_CASES
    ]
    with OpenAIServer(_text_judge) as srv:
        cfg = LLMConfig(backend="openai", base_url=srv.base_url, model="judge", cache_dir=tmp_path / "c")
        metrics, frame, notes = score_records(
            records, llm=cfg, paths=OptionalModelPaths(), n_bootstrap=20, chexprompt_protocol="fewshot-own"
        )
    assert frame["chexprompt_protocol"].to_list() == ["fewshot-own", "fewshot-own"]
    assert notes["chexprompt"]["protocol"] == "fewshot-own"
    assert metrics.metrics["chexprompt_mean_significant_errors"].bootstrap_median is not None


def test_protocol_agreement_benchmark_smoke(tmp_path):
    from bench.bench_chexprompt_protocols import make_pairs, responder, run

    with OpenAIServer(responder) as srv:
        result = run(make_pairs(8, seed=2), srv.base_url, "judge", tmp_path)
    assert result["judged_by_both"] == 8
    assert result["agreement_all_counts"] == 1.0  # one judge, two formats: the plumbing must not disagree
    assert result["prompt_chars_original_over_json"] > 1


def test_reference_scheme_in_configs_draws_with_the_reference_seed():
    """`bootstrap_scheme: reference` in a pipeline config or the evaluate flow's parameters is the reference's
    draw only with its seed (3): without an explicit seed it takes that one, as the CLI does."""
    from schemas.evaluation import EvaluateParams
    from schemas.pipeline import EvaluateSection

    for model, extra in ((EvaluateSection, {}), (EvaluateParams, {"out": "x", "predictions": "p.jsonl"})):
        assert model(bootstrap_scheme="reference", **extra).seed == 3
        assert model(bootstrap_scheme="reference", seed=7, **extra).seed == 7  # an explicit seed stays
        assert model(**extra).seed == 12345
