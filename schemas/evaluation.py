"""Contracts of the evaluation stage: EVAL/metrics.json and the paired comparison of two evaluations.

Every metric is either computed (value, 95% CI, n) or explicitly not computed with a reason; a metric that
could not be computed is never reported as 0 and never silently missing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.finite import finite_check
from schemas.llm import LLMFields
from schemas.shards import SplitName

# The LLaVA-Rad evaluation's bootstrap seed (scipy.stats.bootstrap(random_state=3)): bootstrap_scheme
# "reference" is that draw only with this seed, so it is the default seed of that scheme.
REFERENCE_SEED = 3


def reference_seed_default(data: Any) -> Any:
    """Before validation: `bootstrap_scheme: reference` without an explicit seed takes the reference's seed."""
    if isinstance(data, dict) and data.get("bootstrap_scheme") == "reference" and data.get("seed") is None:
        return {**data, "seed": REFERENCE_SEED}
    return data


METRICS_SCHEMA_VERSION = 1
NOT_COMPUTED_PREFIX = "not computed: "


class MetricResult(BaseModel):
    """One metric. Scores are on a 0-100 scale (as LLaVA-Rad reports them) unless `unit` says otherwise.
    `value` is the point estimate on all reports; `bootstrap_median` the median over the bootstrap resamples
    (the number the LLaVA-Rad paper reports for F1-CheXbert and F1-RadGraph); `ci` the percentile CI."""

    value: float | None = None
    ci: tuple[float, float] | None = None
    bootstrap_median: float | None = None
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
        med = f" (bootstrap median {self.bootstrap_median:.2f})" if self.bootstrap_median is not None else ""
        return f"{self.value:.2f}{ci}{med}"


class BaselineResult(BaseModel):
    """A baseline that needs no training (tasks/evaluate/baselines.py): one text given as the prediction for
    every test report, scored on the same references and resamples as the model."""

    description: str
    prediction: str
    metrics: dict[str, MetricResult] = Field(default_factory=dict)


class EvaluationMetrics(BaseModel):
    """EVAL/metrics.json."""

    schema_version: int = METRICS_SCHEMA_VERSION
    experiment: str
    n_reports: int
    ci_level: float = 0.95
    n_bootstrap: int = 500
    seed: int = 0
    bootstrap_scheme: str = Field(
        "cxrflow", description="cxrflow | reference (the reference's resample draw)"
    )
    predictions_sha256: str | None = None
    metrics: dict[str, MetricResult] = Field(default_factory=dict)
    baselines: dict[str, BaselineResult] = Field(
        default_factory=dict, description="image_blind, majority_report: computed when the training split's "
        "references are at hand (tasks/evaluate/baselines.py)")


class MetricComparison(BaseModel):
    """Paired comparison of one metric between evaluations A and B on the same ids."""

    a: float | None = None
    b: float | None = None
    diff: float | None = None  # b - a
    diff_ci: tuple[float, float] | None = None
    p_value: float | None = None
    # the smallest p the test can give (2/(R+1) for R resamples): p_value == p_floor means no resample crossed
    # 0, i.e. p < p_floor is all the test can say (tasks/evaluate/resampling.py p_text)
    p_floor: float | None = None
    n: int = 0
    method: str = ""
    not_computed: str | None = None


class EvaluationComparison(BaseModel):
    a: str
    b: str
    n_common: int
    n_resamples: int
    seed: int
    paired_by: str = "id"
    note: str | None = None
    metrics: dict[str, MetricComparison] = Field(default_factory=dict)


class OptionalModelPaths(BaseModel):
    """Local weights for the model-based metrics. Nothing is downloaded: an unset path means the metric is
    reported as `not computed: <reason>`. Defaults come from CXRFLOW_* environment variables."""

    chexbert_checkpoint: str | None = Field(
        None, description="CheXbert chexbert.pth (env CXRFLOW_CHEXBERT_CHECKPOINT)"
    )
    chexbert_bert_dir: str | None = Field(
        None, description="local bert-base-uncased dir (config + tokenizer) (env CXRFLOW_CHEXBERT_BERT_DIR)"
    )
    radgraph_model: str | None = Field(
        None, description="radgraph.tar.gz or its extracted dir (env CXRFLOW_RADGRAPH_MODEL)"
    )
    radgraph_bert_dir: str | None = Field(
        None, description="local dir of the BERT the RadGraph archive names (env CXRFLOW_RADGRAPH_BERT_DIR)"
    )
    bertscore_model: str | None = Field(
        None, description="local model dir for BERTScore (env CXRFLOW_BERTSCORE_MODEL)"
    )
    bertscore_num_layers: int | None = Field(
        None, description="layer for BERTScore (env CXRFLOW_BERTSCORE_LAYERS)"
    )

    @classmethod
    def from_env(cls) -> OptionalModelPaths:
        import os

        layers = os.environ.get("CXRFLOW_BERTSCORE_LAYERS")
        return cls(
            chexbert_checkpoint=os.environ.get("CXRFLOW_CHEXBERT_CHECKPOINT"),
            chexbert_bert_dir=os.environ.get("CXRFLOW_CHEXBERT_BERT_DIR"),
            radgraph_model=os.environ.get("CXRFLOW_RADGRAPH_MODEL"),
            radgraph_bert_dir=os.environ.get("CXRFLOW_RADGRAPH_BERT_DIR"),
            bertscore_model=os.environ.get("CXRFLOW_BERTSCORE_MODEL"),
            bertscore_num_layers=int(layers) if layers else None,
        )


class EvaluationSettings(BaseModel):
    """How to evaluate: generation, bootstrap and judge settings. The pipeline's `evaluate:` section is these
    (schemas.pipeline.EvaluateSection); the `evaluate` flow's parameters add where to read and write."""

    model_config = ConfigDict(
        hide_input_in_errors=True
    )  # llm may hold a URL with a key (refused, not echoed)
    _finite = finite_check  # no inf/nan anywhere in the config (schemas/finite.py)

    split: SplitName = Field(
        "test", description="shard split to generate on (validation or validate: the same)"
    )
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    limit: int | None = Field(None, ge=1, description="score only the first N samples (smoke runs)")
    device: str = "cpu"
    n_bootstrap: int = Field(500, ge=0, le=100_000)  # bootstrap memory grows with it: 1e9 is a mistake
    seed: int = 12345
    bootstrap_scheme: Literal["cxrflow", "reference"] = Field(
        "cxrflow", description="reference: the LLaVA-Rad evaluation's resample draw (seed 3 unless given)"
    )
    _reference_seed = model_validator(mode="before")(reference_seed_default)
    llm: LLMFields = Field(None, description="LLMConfig fields for the CheXprompt judge; None skips it")
    chexprompt_protocol: Literal["json", "original", "fewshot-own"] = Field(
        "json",
        description="json: cxrflow's structured judge; original: the published prompt, read from "
        "chexprompt_src; fewshot-own: cxrflow's paraphrase of the published request (not comparable)",
    )
    chexprompt_src: str | None = Field(
        None, description="local checkout of microsoft/chexprompt (protocol original reads its prompt there)"
    )

    @model_validator(mode="after")
    def _original_needs_source(self) -> EvaluationSettings:
        if self.chexprompt_protocol == "original" and self.chexprompt_src is None:
            raise ValueError(
                "chexprompt_protocol original reads the published prompt from a microsoft/chexprompt checkout: "
                "set chexprompt_src (git clone https://github.com/microsoft/chexprompt), or use fewshot-own"
            )
        return self


class EvaluateParams(EvaluationSettings):
    """Parameters of the `evaluate` flow: the settings plus what to read and where to write. Either `run` +
    `shards` (generate, then score) or `predictions`."""

    out: str
    experiment: str = "default"
    run: str | None = None
    shards: str | None = None
    predictions: str | None = None
    source: str = Field("mimic-cxr", description="dataset of the reports, for the LLM data-use guard")
    model_paths: OptionalModelPaths | None = None
    encoder_metrics: str | None = Field(
        None, description="metrics.json of the encoder stage's retrieval evaluation, merged into this one's"
    )

    @model_validator(mode="after")
    def _inputs(self) -> EvaluateParams:
        if self.predictions is None and (self.run is None or self.shards is None):
            raise ValueError("give predictions, or run and shards")
        return self
