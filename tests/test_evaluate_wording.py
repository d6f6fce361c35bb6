"""Figures say what the tests can say: a paired-bootstrap p at its floor (no resample crossed 0) is written
`p < 0.002` for 1,000 resamples, never `p = 0.002`, wherever p is printed (leaderboard, compare-evals, demo)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.evaluation import EvaluationMetrics, MetricResult
from tasks.evaluate.leaderboard import leaderboard_markdown, leaderboard_rows
from tasks.evaluate.resampling import MetricSpec, p_floor, p_text, paired_test

MEAN = MetricSpec("m", ("x",), lambda c: float(np.mean(c["x"])), "mean")


def test_p_at_the_floor_is_an_upper_bound():
    far = paired_test(MEAN, {"x": np.zeros(40)}, {"x": np.ones(40)}, n_resamples=1000)
    assert far.p_floor == pytest.approx(2 / 1001) and far.p_value == pytest.approx(far.p_floor)
    assert p_text(far.p_value, far.p_floor) == "p < 0.002"
    assert p_text(2 / 501, p_floor(500)) == "p < 0.004" and p_text(2 / 10001, p_floor(10000)) == "p < 0.0002"
    near = paired_test(MEAN, {"x": np.zeros(40)}, {"x": np.r_[np.ones(2), np.zeros(38)]}, n_resamples=1000)
    assert near.p_value > near.p_floor and p_text(near.p_value, near.p_floor).startswith("p = ")
    assert p_text(None, None) == "p not computed"


def _eval(path, value):
    path.mkdir(parents=True)
    m = {"rouge_l": MetricResult(value=value, ci=(value - 2, value + 3), n=50)}
    path.joinpath("metrics.json").write_text(
        EvaluationMetrics(experiment=path.name, n_reports=50, metrics=m).model_dump_json()
    )
    return str(path)


def test_leaderboard_and_demo_write_the_floor_as_a_bound(tmp_path):
    from cxrflow_cli.demo import _comparison_text

    evals = {"base": _eval(tmp_path / "base", 40.0), "v": _eval(tmp_path / "v", 45.0)}
    floor = p_floor(1000)
    sig = {
        "v": {
            "metrics": {
                "rouge_l": {"diff": 5.0, "diff_ci": [1.0, 9.0], "p_value": floor, "p_floor": floor, "n": 50}
            }
        }
    }
    md = leaderboard_markdown("t", "base", leaderboard_rows(evals, "base", ["rouge_l"], sig))
    assert "| +5.00 [1.00, 9.00] | < 0.002 | 50 |" in md and "| 0.002 |" not in md
    record = {
        "trained": {"value": 60.0, "ci": [50.0, 70.0]},
        "shuffled": {"value": 20.0, "ci": [10.0, 30.0]},
        "difference": {"value": 40.0, "ci": [30.0, 50.0]},
        "p_value": floor,
        "p_floor": floor,
        "n": 50,
    }
    assert "p < 0.002 (paired bootstrap" in _comparison_text(record)


def test_learning_record_keeps_a_floor_p_at_its_floor_when_rounded():
    """learning.json rounds p to 6 places; its floor is rounded the same way, so a p at the floor still prints
    as a bound after the round trip (2/2001 rounds up to 0.001 at 6 places)."""
    from cxrflow_cli.demo import _comparison_text
    from tasks.evaluate.learning import learning_record

    trained = MetricResult(value=60.0, ci=(50.0, 70.0), n=50)
    shuffled = MetricResult(value=20.0, ci=(10.0, 30.0), n=50)
    for r in (1000, 2000):
        floor = p_floor(r)
        cmp = {"diff": 40.0, "diff_ci": (30.0, 50.0), "p_value": floor, "p_floor": floor, "n": 50}
        rec = learning_record("m", trained, shuffled, cmp)
        assert p_text(rec["p_value"], rec["p_floor"]).startswith("p < "), r
        assert "p < " in _comparison_text(rec)
