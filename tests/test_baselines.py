"""Baselines that need no training (tasks/evaluate/baselines.py) and the per-finding rates beside label F1."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from schemas.labels import CHEXPERT_LABELS
from tasks.evaluate.baselines import (
    NORMAL_TEXT,
    POSITIVE_SENTENCES,
    best_constant,
    constant_text,
    majority_report,
)
from tasks.evaluate.clinical import f1_specs, label_columns, rate_specs
from tasks.evaluate.labeler import label_report, label_reports
from tasks.evaluate.resampling import bootstrap_indices, score
from tasks.evaluate.scoring import score_records

F1 = {s.name: s for s in f1_specs()}
RATES = {s.name: s for s in rate_specs()}


def test_each_constant_sentence_reads_back_as_its_observation_only():
    for obs, sentence in POSITIVE_SENTENCES.items():
        got = {k for k, v in label_report(sentence).items() if v is not None}
        assert got == ({obs, "No Finding"} if obs == "Support Devices" else {obs}), (obs, got)
    assert {k for k, v in label_report(NORMAL_TEXT).items() if v is not None} == {"No Finding"}


def _refs(rng: random.Random, n: int, prevalence: dict[str, float]) -> list[str]:
    return [constant_text([o for o, p in prevalence.items() if rng.random() < p]) for _ in range(n)]


def _micro_of(text: str, refs: list[str]) -> float:
    cols = {**label_columns("rule", "ref", label_reports(refs)),
            **label_columns("rule", "pred", label_reports([text] * len(refs)))}
    return F1["rule_f1_micro_14"].aggregate(cols)


def test_best_constant_beats_every_other_constant_on_the_training_references():
    rng = random.Random(0)
    prevalence = {"Cardiomegaly": 0.7, "Pleural Effusion": 0.5, "Pneumothorax": 0.1, "Support Devices": 0.3}
    refs = _refs(rng, 120, prevalence)
    text, value = best_constant(refs, F1["rule_f1_micro_14"])
    assert value == pytest.approx(_micro_of(text, refs))
    for k in range(len(prevalence) + 1):
        for subset in itertools.combinations(prevalence, k):
            assert _micro_of(constant_text(subset), refs) <= value + 1e-9
    assert "Cardiomegaly" in label_report(text) and label_report(text)["Cardiomegaly"] == 1


def test_rare_findings_make_the_normal_report_the_best_constant():
    refs = _refs(random.Random(1), 200, {"Cardiomegaly": 0.05, "Pneumothorax": 0.05})
    text, _ = best_constant(refs, F1["rule_f1_micro_14"])
    assert text == NORMAL_TEXT


def test_majority_report_is_the_most_frequent_training_text():
    assert majority_report(["a  b", "c", "a b", "c", "a b"]) == ("a b", 3)


def _cols(refs: list[str], preds: list[str]) -> dict:
    return {**label_columns("rule", "ref", label_reports(refs)), **label_columns("rule", "pred", label_reports(preds))}


def test_rates_per_finding_and_macro_balanced_accuracy():
    refs = ["Cardiomegaly.", "Cardiomegaly.", NORMAL_TEXT, NORMAL_TEXT]
    preds = ["Cardiomegaly.", NORMAL_TEXT, "Cardiomegaly.", NORMAL_TEXT]
    cols = _cols(refs, preds)
    assert score(RATES["rule_sensitivity_cardiomegaly"], cols).value == 50.0
    assert score(RATES["rule_specificity_cardiomegaly"], cols).value == 50.0
    perfect = _cols(refs, refs)
    assert score(RATES["rule_balanced_accuracy_cardiomegaly"], perfect).value == 100.0
    # only Cardiomegaly and No Finding have both classes in the references: the macro is their mean
    assert score(RATES["rule_balanced_accuracy_macro_14"], perfect).value == 100.0
    fracture = score(RATES["rule_sensitivity_fracture"], perfect)
    assert fracture.value is None and "no reference report of the class" in fracture.not_computed


def test_constant_has_balanced_accuracy_50_and_bootstrap_skips_undefined_resamples():
    rng = random.Random(2)
    refs = _refs(rng, 40, {"Cardiomegaly": 0.1, "Pneumothorax": 0.3})
    cols = _cols(refs, ["Cardiomegaly. Pneumothorax."] * len(refs))
    r = score(RATES["rule_balanced_accuracy_macro_14"], cols, bootstrap_indices(len(refs), 200))
    assert r.value == 50.0 and r.ci == (50.0, 50.0)
    sens = score(RATES["rule_sensitivity_cardiomegaly"], cols, bootstrap_indices(len(refs), 200))
    assert sens.value == 100.0 and sens.ci is not None and np.isfinite(sens.ci).all()


def test_score_records_writes_both_baselines_with_cis():
    rng = random.Random(3)
    prevalence = {"Cardiomegaly": 0.4, "Pleural Effusion": 0.4}
    train = _refs(rng, 60, prevalence)
    test = _refs(rng, 30, prevalence)
    records = [{"id": str(i), "reference": r, "prediction": r} for i, r in enumerate(test)]
    metrics, _, _ = score_records(records, n_bootstrap=100, train_refs=train)
    assert set(metrics.baselines) == {"image_blind", "majority_report"}
    blind = metrics.baselines["image_blind"]
    assert label_report(blind.prediction) == label_report(best_constant(train, F1["rule_f1_micro_14"])[0])
    m = blind.metrics["rule_f1_micro_14"]
    assert m.value is not None and m.ci is not None and m.n == 30
    assert blind.metrics["rule_balanced_accuracy_macro_14"].value == 50.0
    assert metrics.metrics["rule_f1_micro_14"].value == 100.0  # the perfect model beside them
    assert metrics.metrics["rule_f1_micro_14"].value > m.ci[1]
    without, _, _ = score_records(records, n_bootstrap=0)
    assert without.baselines == {}


def test_every_observation_has_rates():
    names = set(RATES)
    for obs in CHEXPERT_LABELS:
        key = obs.lower().replace(" ", "_")
        assert {f"rule_{k}_{key}" for k in ("sensitivity", "specificity", "balanced_accuracy")} <= names
