"""The leaderboard's rows and markdown (tasks/evaluate/leaderboard.py) from two evaluations on disk."""

from __future__ import annotations

from schemas.evaluation import EvaluationMetrics, MetricResult
from tasks.evaluate.leaderboard import SMALL_N, chart_png, leaderboard_markdown, leaderboard_rows


def _eval(path, n, value, reason=None):
    path.mkdir(parents=True)
    metrics = {
        "rouge_l": MetricResult(value=value, ci=(value - 2, value + 3), n=n),
        "bertscore_f1": MetricResult(not_computed=reason or "not computed: no weights"),
    }
    path.joinpath("metrics.json").write_text(
        EvaluationMetrics(experiment=path.name, n_reports=n, metrics=metrics).model_dump_json()
    )
    return str(path)


def test_rows_are_numeric_and_say_why_a_number_is_missing(tmp_path):
    evals = {"base": _eval(tmp_path / "base", 50, 40.0), "lora": _eval(tmp_path / "lora", 50, 45.0)}
    sig = {"lora": {"metrics": {"rouge_l": {"diff": 5.0, "diff_ci": [1.0, 9.0], "p_value": 0.01, "n": 50}}}}
    rows = leaderboard_rows(evals, "base", ["rouge_l", "bertscore_f1"], sig, {"lora": "/runs/flow-run/x"})
    assert [(r["variant"], r["metric"], r["status"]) for r in rows] == [
        ("base", "rouge_l", "baseline"),
        ("base", "bertscore_f1", "not computed: no weights"),
        ("lora", "rouge_l", "compared"),
        ("lora", "bertscore_f1", "not computed: no weights"),
    ]
    lora = rows[2]
    assert (
        lora["value"],
        lora["ci_low"],
        lora["ci_high"],
        lora["diff"],
        lora["diff_ci_low"],
        lora["diff_ci_high"],
        lora["p_value"],
        lora["n"],
        lora["small_n"],
    ) == (45.0, 43.0, 48.0, 5.0, 1.0, 9.0, 0.01, 50, False)
    assert rows[3]["value"] is None and rows[0]["run"] == ""
    md = leaderboard_markdown("t", "base", rows)
    assert (
        "| rouge_l | [lora](/runs/flow-run/x) | 45.00 [43.00, 48.00] | +5.00 [1.00, 9.00] | 0.010 | 50 |"
        in md
    )
    assert "[lora]" not in leaderboard_markdown("t", "base", rows, links=False)
    assert chart_png(evals, ["rouge_l", "bertscore_f1"]).startswith(b"\x89PNG")


def test_small_n_is_flagged(tmp_path):
    evals = {
        "base": _eval(tmp_path / "base", SMALL_N - 1, 40.0),
        "b": _eval(tmp_path / "b", SMALL_N - 1, 41.0),
    }
    rows = leaderboard_rows(evals, "base", ["rouge_l"], {"b": {"not_computed": "not computed: ids differ"}})
    assert rows[1]["status"] == "not computed: ids differ" and rows[1]["small_n"]
    md = leaderboard_markdown("t", "base", rows)
    assert f"{SMALL_N - 1} ⚠" in md and f"fewer than {SMALL_N} test reports" in md
