"""The model learns through cxrflow: on the learnable fixture, `cxrflow demo` (the `learning` ablation) trains
the tiny model and the shuffle control through every stage, and the trained model wins on rule-based label F1
with non-overlapping 95% CIs. This fails if images stop reaching the model aligned with their own reports, if
the loss masks the wrong tokens, or if generation or scoring read the wrong ids."""

from __future__ import annotations

import json

import pytest

from schemas.evaluation import MetricResult
from tasks.evaluate.learning import collapse_not_computed, learned, learning_record


@pytest.mark.slow
def test_demo_trained_model_beats_the_shuffle_control(prefect_server, tmp_path):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output[-3000:]
    record = json.loads((tmp_path / "demo" / "learning.json").read_text())
    assert set(record) >= {"metric", "trained", "shuffled", "difference", "p_value", "baselines", "learned"}
    assert record["metric"] == "rule_f1_micro_14"
    assert set(record["baselines"]) == {"image_blind", "majority_report"}
    # above the shuffle control and every image-blind baseline, on micro F1 and on macro balanced accuracy
    assert learned(record) and record["learned"], record
    assert learned(record["balanced_accuracy"]), record["balanced_accuracy"]
    lo, hi = record["difference"]["ci"]
    assert 0 < lo <= record["difference"]["value"] <= hi and record["p_value"] < 0.05
    out = res.output
    assert "trained - shuffled" in out and "random init" in out and "ablation:learning" in out
    assert "32 px model input (ingest stored 64 px)" in out
    assert out.rstrip().splitlines()[-1].endswith("report.html")
    assert (tmp_path / "demo" / "report.html").read_text().count("<section") == 6
    section = out.split("== metrics per variant", 1)[1].split("== does the model", 1)[0]
    assert sum("not computed" in line for line in section.splitlines()) == 1  # collapsed to one line


def _m(value, ci=None, reason=None):
    return MetricResult(value=value, ci=ci, n=50 if value is not None else 0, not_computed=reason)


def test_learning_record_shape_and_verdict():
    cmp = {"a": 20.0, "b": 60.0, "diff": 40.0, "diff_ci": (30.0, 50.0), "p_value": 0.002, "p_floor": 0.002, "n": 50}
    rec = learning_record("rule_f1_micro_14", _m(60.0, (52.0, 68.0)), _m(20.0, (14.0, 27.0)), cmp)
    assert rec == {
        "metric": "rule_f1_micro_14",
        "trained": {"value": 60.0, "ci": [52.0, 68.0]},
        "shuffled": {"value": 20.0, "ci": [14.0, 27.0]},
        "difference": {"value": 40.0, "ci": [30.0, 50.0]},
        "p_value": 0.002,
        "p_floor": 0.002,
        "n": 50,
    }
    assert learned(rec)
    overlap = learning_record("m", _m(30.0, (20.0, 40.0)), _m(25.0, (15.0, 35.0)), cmp)
    assert not learned(overlap)
    missing = learning_record(
        "m", _m(30.0, (20.0, 40.0)), _m(25.0, (15.0, 35.0)), {"not_computed": "not computed: x"}
    )
    assert missing["difference"]["value"] is None and missing["p_value"] is None


def test_not_computed_metrics_collapse_to_one_line_with_reasons():
    weights = "not computed: CheXbert weights not configured (set ...)"
    metrics = {
        "rouge_l": _m(30.0, (25.0, 35.0)),
        **{f"chexbert_f1_{k}": _m(None, reason=weights) for k in ("micro_14", "macro_14")},
        "radgraph_f1_partial": _m(None, reason="not computed: RadGraph model not configured (...)"),
        "chexprompt_mean_total_errors": _m(
            None, reason="not computed: no LLM backend configured for the judge"
        ),
    }
    line = collapse_not_computed(metrics)
    assert line == (
        "not computed (4): chexbert_* x2, radgraph_f1_partial: no local model weights configured; "
        "chexprompt_mean_total_errors: no LLM judge configured"
    )
    assert "\n" not in line
    assert collapse_not_computed({"rouge_l": _m(30.0, (25.0, 35.0))}) is None


def test_a_lone_not_computed_metric_is_named_not_its_computed_sibling():
    """One metric of a family not computed, its sibling computed: the line names the one that is missing."""
    metrics = {
        "chexbert_f1_micro_14": _m(40.0, (35.0, 45.0)),
        "chexbert_f1_macro_14": _m(None, reason="not computed: CheXbert weights not configured (set ...)"),
    }
    assert collapse_not_computed(metrics) == (
        "not computed (1): chexbert_f1_macro_14: no local model weights configured"
    )


def test_one_family_split_over_two_reasons_names_each_missing_metric():
    metrics = {
        "chexbert_f1_micro_14": "not computed: CheXbert weights not configured",
        "chexbert_share_x": "not computed: no LLM judge for this one",
        "chexbert_f1_macro_14": None,
    }
    assert collapse_not_computed(metrics) == (
        "not computed (2): chexbert_f1_micro_14: no local model weights configured; "
        "chexbert_share_x: no LLM judge configured"
    )


def test_learned_needs_every_image_blind_baseline_beaten():
    from schemas.evaluation import BaselineResult

    cmp = {"a": 20.0, "b": 60.0, "diff": 40.0, "diff_ci": (30.0, 50.0), "p_value": 0.002, "n": 50}

    def baselines(blind_ci):
        return {"image_blind": BaselineResult(description="d", prediction="Cardiomegaly.",
                                              metrics={"m": _m(sum(blind_ci) / 2, blind_ci)}),
                "majority_report": BaselineResult(description="d", prediction="x",
                                                  metrics={"m": _m(30.0, (25.0, 35.0))})}

    above = learning_record("m", _m(60.0, (52.0, 68.0)), _m(20.0, (14.0, 27.0)), cmp, baselines((40.0, 50.0)))
    assert above["baselines"]["image_blind"] == {"value": 45.0, "ci": [40.0, 50.0]}
    assert learned(above)
    # beats the shuffle control, but a constant report is as good: not learned
    constant = learning_record("m", _m(60.0, (52.0, 68.0)), _m(20.0, (14.0, 27.0)), cmp, baselines((45.0, 55.0)))
    assert not learned(constant)
    # no baseline computed: no verdict either
    missing = learning_record("m", _m(60.0, (52.0, 68.0)), _m(20.0, (14.0, 27.0)), cmp, {})
    assert missing["baselines"]["image_blind"]["value"] is None and not learned(missing)


def test_demo_refuses_a_fixture_of_another_seed(tmp_path):
    from cxrflow_cli.demo import write_demo_fixture
    from schemas.errors import UserError

    root = write_demo_fixture(tmp_path / "learnable", studies=4, seed=0)
    assert write_demo_fixture(root, studies=4, seed=0) == root  # the same fixture is reused
    with pytest.raises(UserError, match="seed 0, 4 studies, not seed 1"):
        write_demo_fixture(root, studies=4, seed=1)


def test_training_description_names_the_model_input_size(tmp_path):
    from tasks.evaluate.learning import _model_image_size

    assert _model_image_size({"preset": "tiny", "image_size": 0}) == 32
    assert _model_image_size({"preset": "tiny", "image_size": 64}) == 64


def test_undefined_rates_collapse_per_family():
    reason = "not computed: undefined on these 50 reports (no reference report of the class)"
    metrics = {f"rule_{k}_{o}": reason for k in ("sensitivity", "balanced_accuracy") for o in ("fracture", "edema")}
    metrics["rule_specificity_fracture"] = None
    assert collapse_not_computed(metrics) == (
        "not computed (4): rule_sensitivity_* x2, rule_balanced_accuracy_* x2: undefined on these 50 reports "
        "(no reference report of the class)"
    )
