"""Contracts of the evaluation stage: EVAL/metrics.json and the paired comparison of two evaluations.

Every metric is either computed (value, 95% CI, n) or explicitly not computed with a reason; a metric that
could not be computed is never reported as 0 and never silently missing.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

METRICS_SCHEMA_VERSION = 1
NOT_COMPUTED_PREFIX = "not computed: "


class MetricResult(BaseModel):
    """One metric. Scores are on a 0-100 scale (as LLaVA-Rad reports them) unless `unit` says otherwise."""

    value: float | None = None
    ci: tuple[float, float] | None = None
    n: int = 0
    not_computed: str | None = None
    unit: str = "percent"
    method: str = ""

    @model_validator(mode="after")
    def _value_xor_reason(self) -> MetricResult:
        if (self.value is None) == (self.not_computed is None):
            raise ValueError("a metric has exactly one of value or not_computed")
        if self.not_computed is not None and not self.not_computed.startswith(NOT_COMPUTED_PREFIX):
            raise ValueError(f"not_computed must start with {NOT_COMPUTED_PREFIX!r}")
        return self

    @classmethod
    def missing(cls, reason: str, method: str = "", n: int = 0, unit: str = "percent") -> MetricResult:
        text = reason if reason.startswith(NOT_COMPUTED_PREFIX) else NOT_COMPUTED_PREFIX + reason
        return cls(not_computed=text, method=method, n=n, unit=unit)

    def display(self) -> str:
        if self.value is None:
            return str(self.not_computed)
        ci = f" [{self.ci[0]:.2f}, {self.ci[1]:.2f}]" if self.ci else ""
        return f"{self.value:.2f}{ci}"


class EvaluationMetrics(BaseModel):
    """EVAL/metrics.json."""

    schema_version: int = METRICS_SCHEMA_VERSION
    experiment: str
    n_reports: int
    ci_level: float = 0.95
    n_bootstrap: int = 500
    seed: int = 0
    predictions_sha256: str | None = None
    metrics: dict[str, MetricResult] = Field(default_factory=dict)


class MetricComparison(BaseModel):
    """Paired comparison of one metric between evaluations A and B on the same ids."""

    a: float | None = None
    b: float | None = None
    diff: float | None = None  # b - a
    diff_ci: tuple[float, float] | None = None
    p_value: float | None = None
    n: int = 0
    method: str = ""
    not_computed: str | None = None


class EvaluationComparison(BaseModel):
    a: str
    b: str
    n_common: int
    n_resamples: int
    seed: int
    metrics: dict[str, MetricComparison] = Field(default_factory=dict)
