"""CheXprompt: the answer parser (JSON and the original text format), aggregates, and the judge against a
real local OpenAI-compatible server whose canned answers the tests control."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluate_support import CARDIOMEGALY_TEXT_ANSWER, PUBLIC_CASES

from fixtures.openai_server import OpenAIServer, user_text
from schemas.llm import LLMConfig
from tasks.evaluate.chexprompt import (
    SIG_COLUMNS,
    aggregate_metrics,
    chexprompt_operation,
    judge,
    judgment_json,
    parse_text_answer,
)
from tasks.llm.operation import InvalidAnswer


def test_text_format_square_and_round_brackets_explanation_ignored():
    counts = parse_text_answer(CARDIOMEGALY_TEXT_ANSWER)
    assert counts["clinically_significant"] == {"A": 1, "B": 0, "C": 0, "D": 0, "E": 0, "F": 0}
    assert sum(counts["clinically_insignificant"].values()) == 0  # round brackets parsed; "(A, 7)" ignored


@pytest.mark.parametrize(
    "answer",
    [
        "Number of clinically significant errors by type: [(A, 1), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]",
        "Number of clinically significant errors by type: [(A, 1), (B, 0)]\n"
        "Number of clinically insignificant errors by type: [(A, 0), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]",
        "Explanation: Number of clinically significant errors by type: [(A, 1), (B, 0), (C, 0), (D, 0), (E, 0), "
        "(F, 0)]\nNumber of clinically insignificant errors by type: [(A, 0), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]",
        "I cannot judge this.",
    ],
)
def test_invalid_text_answers_are_rejected(answer):
    with pytest.raises(InvalidAnswer):
        parse_text_answer(answer)


def test_operation_parses_json_and_text():
    op = chexprompt_operation()
    out_json = op.parse_answer(judgment_json({"B": 2}, {"D": 1}), None, "stop", {})
    out_text = op.parse_answer(CARDIOMEGALY_TEXT_ANSWER, None, "stop", {})
    assert out_json["chexprompt_significant_B"] == 2 and out_json["chexprompt_insignificant_D"] == 1
    assert out_text["chexprompt_significant_A"] == 1
    with pytest.raises(InvalidAnswer):
        op.parse_answer(json.dumps({"explanation": "", "clinically_significant": {"A": 1}}), None, "stop", {})
    assert op.json_schema["additionalProperties"] is False  # strict structured output


def test_aggregates_and_bootstrap():
    cols = {c: np.zeros(4) for c in SIG_COLUMNS}
    cols.update({c.replace("_significant_", "_insignificant_"): np.zeros(4) for c in SIG_COLUMNS})
    cols["chexprompt_significant_A"][:] = [1, 0, 2, np.nan]  # last report not judged
    cols["chexprompt_insignificant_D"][:] = [0, 1, 0, np.nan]
    m = aggregate_metrics(cols, n_bootstrap=100, seed=3, quarantined=1)
    assert m["chexprompt_mean_significant_errors"].value == pytest.approx(1.0)
    assert m["chexprompt_mean_total_errors"].value == pytest.approx(4 / 3)
    assert m["chexprompt_share_zero_significant"].value == pytest.approx(100 / 3)
    assert m["chexprompt_mean_significant_errors"].n == 3
    assert m == aggregate_metrics(cols, n_bootstrap=100, seed=3, quarantined=1)
    none = {c: np.full(2, np.nan) for c in cols}
    assert (
        "2 of 2 reports quarantined"
        in aggregate_metrics(none, quarantined=2)["chexprompt_mean_total_errors"].not_computed
    )


def _responder(body):
    text = user_text(body)
    if "severe cardiomegaly" in text:
        return CARDIOMEGALY_TEXT_ANSWER  # the original text format
    return json.loads(judgment_json({}, {}, "Same finding in other words."))  # structured JSON


@pytest.fixture
def llm(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")

    def make(base_url: str) -> LLMConfig:
        return LLMConfig(
            backend="openai",
            base_url=base_url,
            model="judge-test",
            cache_dir=tmp_path / "cache",
            max_retries=0,
            timeout_s=60,  # generous: a loaded machine must not time a local answer out
        )

    return make


def test_public_cases_against_local_server(llm, tmp_path):
    with OpenAIServer(_responder) as srv:
        outcome = judge(
            PUBLIC_CASES, llm(srv.base_url), ledger_path=tmp_path / "ledger.jsonl", n_bootstrap=50
        )
        again = judge(PUBLIC_CASES, llm(srv.base_url), n_bootstrap=50)  # answered from the cache
        requests = sum(srv.counts.values())
    assert outcome.columns["chexprompt_significant_A"].tolist() == [1.0, 0.0]
    assert sum(outcome.columns[c][1] for c in outcome.columns) == 0
    m = outcome.metrics
    assert m["chexprompt_mean_significant_errors"].value == pytest.approx(0.5)
    assert m["chexprompt_mean_total_errors"].value == pytest.approx(0.5)
    assert m["chexprompt_share_zero_significant"].value == pytest.approx(50.0)
    assert again.metrics == outcome.metrics and again.summary["cache_hits"] == 2
    assert requests >= 2 and (tmp_path / "ledger.jsonl").exists()


def test_invalid_answer_is_retried_then_quarantined(llm):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        if "always-bad" in user_text(body):
            return "Number of clinically significant errors by type: [(A, 1)]"
        if calls["n"] == 1:
            return "no idea"  # invalid first answer, re-asked
        return judgment_json({"B": 1}, {})

    cases = [
        {"id": "1", "reference": "Small effusion.", "candidate": "Clear lungs."},
        {"id": "2", "reference": "always-bad", "candidate": "x"},
    ]
    cfg = llm("")
    with OpenAIServer(flaky) as srv:
        outcome = judge(cases[:1], cfg.model_copy(update={"base_url": srv.base_url}), n_bootstrap=0)
        assert calls["n"] == 2
        assert outcome.columns["chexprompt_significant_B"][0] == 1
        bad = judge(
            cases[1:],
            cfg.model_copy(update={"base_url": srv.base_url, "cache_dir": cfg.cache_dir / "b"}),
            n_bootstrap=0,
        )
    assert "lacks error types" in bad.reasons["2"]
    assert bad.metrics["chexprompt_mean_significant_errors"].not_computed.startswith("not computed: no valid")


def test_rules_backend_is_not_computed():
    outcome = judge(PUBLIC_CASES, LLMConfig(backend="rules"))
    for m in outcome.metrics.values():
        assert (
            m.value is None
            and m.not_computed
            == "not computed: needs an LLM backend (the rules backend cannot judge reports)"
        )


def test_credentialed_reports_never_reach_public_api(llm):
    from tasks.llm.guard import DataUseError

    with pytest.raises(DataUseError):
        judge(PUBLIC_CASES, llm("https://api.openai.com/v1"), source="mimic-cxr")
