"""What each stage reports back: typed summaries (issue 24), read by attribute, never by string keys.

A stage's task function still returns (and writes) its JSON summary with every field it has; these models
name the fields the wiring reads (counts, reconciliation, work done) and keep the rest (`extra="allow"`), so
`Model.model_validate(summary).model_dump()` is the summary unchanged. The stage table: README (stage map);
a stage's flow: flows/stages.py; its config and required output: tasks/plan.py."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Summary(BaseModel):
    model_config = ConfigDict(extra="allow")


class Counts(Summary):
    """found = kept + filtered + quarantined (every input accounted for)."""

    found: int
    kept: int
    filtered: int
    quarantined: int
    filtered_by_reason: dict[str, int] = Field(default_factory=dict)
    quarantined_by_reason: dict[str, int] = Field(default_factory=dict)
    decoded: int = 0
    reused: int = 0


class IngestSummary(Counts):
    source: str
    notes: dict = Field(default_factory=dict)

    @property
    def hint(self) -> str | None:
        return self.notes.get("hint")


class MixtureSummary(Counts):
    sources: list[str]
    per_source: dict[str, dict]


class StructureSummary(Summary):
    backend: str
    model: str | None = None
    mode: str | None = None
    reports: int
    ok: int = 0
    quarantined: int
    requests: int = 0
    cache_hits: int = 0
    quarantined_by_reason: dict[str, int] = Field(default_factory=dict)
    comparison: dict = Field(default_factory=dict)
    estimated_cost_note: str | None = None


class Reconciliation(BaseModel):
    found: int
    sharded: int
    filtered: int
    quarantined: int
    balanced: bool


class SplitShards(BaseModel):
    samples: int
    shards: int
    bytes: int


class ShardSummary(Summary):
    splits: dict[str, SplitShards]
    shards: int
    reconciliation: Reconciliation
    llava_records: dict | int | None = None
    read_back: dict | None = None


class TrainSummary(Summary):
    """A run trained here (stages: per-stage results) or handed to a GPU pool (dispatched + its state)."""

    stages: dict[str | int, dict] = Field(default_factory=dict)  # stage number (a str once through JSON)
    dispatched: str | None = None
    flow_run_id: str | None = None
    state: str | None = None

    @property
    def steps(self) -> int:
        return sum(int(s.get("steps", 0)) for s in self.stages.values())


class Work(BaseModel):
    """What a pipeline run did (a rerun that reuses every stage does none)."""

    decoded: int = 0
    llm_requests: int = 0
    train_steps: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(**{k: getattr(self, k) + getattr(other, k) for k in Work.model_fields})


class StageRecord(BaseModel):
    """One stage of a pipeline run: where, under which key, ran or reused, produced by which flow run."""

    dir: str
    key: str
    status: str
    seconds: float
    flow_run_id: str | None = None
    flow_run_name: str | None = None


class PipelineResult(BaseModel):
    name: str
    flow_run_id: str | None
    out: str
    stages: dict[str, StageRecord]
    work: Work
    metrics_json: str
    checkpoint: str
    shards: str
    metrics: list[dict]
