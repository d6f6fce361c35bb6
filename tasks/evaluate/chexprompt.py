"""CheXprompt-style LLM judge of factual errors in a candidate findings section, as an Operation on the
cxrflow LLM layer (tasks/llm: backends, cache, cost ledger, data-use guard, re-ask of invalid answers).

Six error types, each counted as clinically significant or insignificant:
A false finding, B omitted finding, C wrong location/position, D wrong severity, E comparison absent from
the reference, F omitted comparison. Answers come as structured JSON (the response model below); the parser
also accepts the original text format (`Number of clinically significant errors by type: [(A, 0), ...]`
plus the same line for `clinically insignificant`, square or round brackets, anything after "Explanation"
ignored). An answer missing either line, or any of A-F, is invalid and re-asked by the runner.
The `rules` backend cannot judge: its metrics are `not computed: needs an LLM backend`.

Three protocols: `json` (cxrflow's zero-shot prompt with a structured answer, above), `original` (the published
prompt, read from a local microsoft/chexprompt checkout, and its parser: tasks/evaluate/chexprompt_published.py)
and `fewshot-own` (cxrflow's paraphrase of that request: tasks/evaluate/chexprompt_original.py). Their error
rates are not interchangeable; every judgment records its protocol and prompt version (and, for `original`, the
sha256 of the checkout's evaluator.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cxrio import atomic_path, atomic_write_bytes
from schemas.evaluation import MetricResult
from tasks.evaluate.resampling import Columns, MetricSpec, bootstrap_indices, score
from tasks.llm.operation import InvalidAnswer, Operation, RulesUnsupported

ERROR_TYPES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")
ERROR_NAMES: dict[str, str] = {
    "A": "false finding (in the candidate, not in the reference)",
    "B": "omitted finding (in the reference, missing from the candidate)",
    "C": "wrong anatomic location or position of a finding",
    "D": "wrong severity of a finding",
    "E": "comparison with a prior study that the reference does not make",
    "F": "omitted comparison: the reference describes change from a prior study, the candidate does not",
}
SIG_COLUMNS = tuple(f"chexprompt_significant_{t}" for t in ERROR_TYPES)
INSIG_COLUMNS = tuple(f"chexprompt_insignificant_{t}" for t in ERROR_TYPES)
NEEDS_LLM = "needs an LLM backend (the rules backend cannot judge reports)"

SYSTEM_PROMPT = """\
You check a machine-written chest X-ray findings section (the CANDIDATE) against a radiologist's findings \
section for the same image (the REFERENCE). The reference is ground truth. Count the candidate's factual \
errors of six types:
A. A finding stated in the candidate that the reference does not support (a false finding).
B. A finding in the reference that the candidate leaves out (an omission).
C. A finding in both, but placed at the wrong anatomic location or position (e.g. side, lobe, tube tip).
D. A finding in both, but with the wrong severity or size (e.g. small versus large, mild versus severe).
E. A comparison with a prior study (new, worsened, improved, unchanged) that the reference does not make.
F. A comparison with a prior study that the reference makes and the candidate leaves out.

Count every error once, under the single type that fits best. Mark an error clinically significant when it \
could change the patient's treatment, management or outcome (for example a missed or invented pneumothorax, \
effusion, consolidation, or a misplaced tube); otherwise it is clinically insignificant. Statements that \
mean the same thing in different words are not errors, and neither are differences in style, order or \
level of detail that do not change a finding. Normal statements missing from the candidate are not \
omissions unless the reference's normal statement rules out something the candidate asserts.

Answer in the requested JSON format: a short explanation listing each error with its type, then the counts \
per type (0 when there is none) for clinically significant and for clinically insignificant errors."""


def render_user(payload: dict[str, Any]) -> str:
    return f"REFERENCE:\n{payload['reference'].strip()}\n\nCANDIDATE:\n{payload['candidate'].strip()}"


class ErrorCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    A: int = Field(ge=0, description=ERROR_NAMES["A"])
    B: int = Field(ge=0, description=ERROR_NAMES["B"])
    C: int = Field(ge=0, description=ERROR_NAMES["C"])
    D: int = Field(ge=0, description=ERROR_NAMES["D"])
    E: int = Field(ge=0, description=ERROR_NAMES["E"])
    F: int = Field(ge=0, description=ERROR_NAMES["F"])


class Judgment(BaseModel):
    """Structured answer of the judge (sent as a strict json_schema)."""

    model_config = ConfigDict(extra="forbid")

    explanation: str
    clinically_significant: ErrorCounts
    clinically_insignificant: ErrorCounts


# --- the original text format ---------------------------------------------------------------------------
_LINE = re.compile(
    r"clinically\s+(?P<kind>significant|insignificant)\s+errors?\s+by\s+type\s*:?\s*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
_PAIR = re.compile(r"[\(\[]\s*['\"]?([A-Fa-f])['\"]?\s*[,:]\s*(\d+)\s*[\)\]]")
_EXPLANATION = re.compile(r"explanation", re.IGNORECASE)


def parse_text_answer(text: str) -> dict[str, dict[str, int]]:
    """`{"clinically_significant": {A..F: n}, "clinically_insignificant": {...}}` or InvalidAnswer."""
    cut = _EXPLANATION.search(text)
    body = text[: cut.start()] if cut else text
    found: dict[str, dict[str, int]] = {}
    for m in _LINE.finditer(body):
        key = "clinically_" + m.group("kind").lower()
        if key in found:
            raise InvalidAnswer(f"two '{key.replace('_', ' ')}' lines", raw=text)
        counts: dict[str, int] = {}
        for letter, n in _PAIR.findall(m.group("rest")):
            letter = letter.upper()
            if letter in counts:
                raise InvalidAnswer(f"error type {letter} given twice in the {key} line", raw=text)
            counts[letter] = int(n)
        missing = [t for t in ERROR_TYPES if t not in counts]
        if missing:
            raise InvalidAnswer(f"{key} line lacks error types {','.join(missing)}", raw=text)
        found[key] = counts
    for key in ("clinically_significant", "clinically_insignificant"):
        if key not in found:
            raise InvalidAnswer(f"answer has no '{key.replace('_', ' ')} errors by type' line", raw=text)
    return found


def _looks_like_json(content: str | None) -> bool:
    return bool(content) and content.lstrip().startswith("{")


def _postprocess(parsed: BaseModel, payload: dict[str, Any]) -> dict[str, Any]:
    return flatten(parsed.model_dump())


def flatten(judgment: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in ERROR_TYPES:
        out[f"chexprompt_significant_{t}"] = int(judgment["clinically_significant"][t])
        out[f"chexprompt_insignificant_{t}"] = int(judgment["clinically_insignificant"][t])
    return out


def _no_rules(payload: dict[str, Any]) -> dict[str, Any]:
    raise RulesUnsupported(NEEDS_LLM)


@dataclass(frozen=True, eq=False)
class CheXpromptOperation(Operation):
    """Adds the original text answer format to the JSON parsing of a plain Operation."""

    def parse_answer(
        self, content: str | None, refusal: str | None, finish_reason: str | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        if refusal or content is None or _looks_like_json(content):
            return super().parse_answer(content, refusal, finish_reason, payload)
        if finish_reason == "length":
            raise InvalidAnswer("answer cut off at max_tokens (finish_reason=length)", raw=content)
        counts = parse_text_answer(content)
        return flatten(Judgment(explanation="", **counts).model_dump())


# json: cxrflow's zero-shot structured judge; original: the published prompt read from a microsoft/chexprompt
# checkout (chexprompt_published.py); fewshot-own: cxrflow's paraphrase of its request (chexprompt_original.py).
PROTOCOLS = ("json", "original", "fewshot-own")
TEXT_PROTOCOLS = ("original", "fewshot-own")  # a text answer, the published parser and retry rule


def chexprompt_operation(protocol: str = "json", chexprompt_src: Any = None) -> Operation:
    if protocol == "original":
        from tasks.evaluate.chexprompt_published import check_protocol_source, published_operation

        check_protocol_source(protocol, chexprompt_src)  # without a checkout: a one-line error with the hint
        return published_operation(chexprompt_src, Judgment, flatten, _no_rules)
    if protocol == "fewshot-own":
        from tasks.evaluate.chexprompt_original import fewshot_own_operation

        return fewshot_own_operation(Judgment, flatten, _no_rules)
    if protocol != "json":
        raise ValueError(f"unknown CheXprompt protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    return CheXpromptOperation(
        name="chexprompt",
        system_prompt=SYSTEM_PROMPT,
        response_model=Judgment,
        render_user=render_user,
        template_version="1",
        postprocess=_postprocess,
        rules=_no_rules,
        description="CheXprompt-style count of clinically significant/insignificant errors of types A-F",
    )


# --- aggregates --------------------------------------------------------------------------------------------
def _judged(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    sig = np.stack([np.asarray(cols[c], dtype=float) for c in SIG_COLUMNS], axis=1)
    insig = np.stack([np.asarray(cols[c], dtype=float) for c in INSIG_COLUMNS], axis=1)
    ok = ~np.isnan(sig).any(axis=1) & ~np.isnan(insig).any(axis=1)
    return sig[ok].sum(axis=1), insig[ok].sum(axis=1)


def _mean_significant(cols: Columns) -> float:
    sig, _ = _judged(cols)
    return float(sig.mean()) if len(sig) else float("nan")


def _mean_total(cols: Columns) -> float:
    sig, insig = _judged(cols)
    return float((sig + insig).mean()) if len(sig) else float("nan")


def _share_zero_significant(cols: Columns) -> float:
    sig, _ = _judged(cols)
    return float((sig == 0).mean() * 100.0) if len(sig) else float("nan")


def chexprompt_specs() -> list[MetricSpec]:
    cols = SIG_COLUMNS + INSIG_COLUMNS
    return [
        MetricSpec(
            "chexprompt_mean_significant_errors",
            cols,
            _mean_significant,
            "CheXprompt-style LLM judge: mean clinically significant errors per report",
            unit="errors",
        ),
        MetricSpec(
            "chexprompt_mean_total_errors",
            cols,
            _mean_total,
            "CheXprompt-style LLM judge: mean errors (significant + insignificant) per report",
            unit="errors",
        ),
        MetricSpec(
            "chexprompt_share_zero_significant",
            cols,
            _share_zero_significant,
            "CheXprompt-style LLM judge: % of reports with no clinically significant error",
        ),
    ]


def not_computed_metrics(reason: str, n: int = 0) -> dict[str, MetricResult]:
    return {
        s.name: MetricResult.missing(reason, method=s.method, unit=s.unit, n=n) for s in chexprompt_specs()
    }


def aggregate_metrics(
    cols: Columns, n_bootstrap: int = 500, seed: int = 12345, quarantined: int = 0, scheme: str = "cxrflow"
) -> dict[str, MetricResult]:
    """Aggregates over judged reports (rows with NaN counts were not judged and are left out of n)."""
    n_rows = len(cols[SIG_COLUMNS[0]])
    judged = np.array(
        [not any(np.isnan(float(cols[c][i])) for c in SIG_COLUMNS + INSIG_COLUMNS) for i in range(n_rows)],
        dtype=bool,
    )
    if not judged.any():
        return not_computed_metrics(f"no valid judgments ({quarantined} of {n_rows} reports quarantined)")
    kept = {c: np.asarray(cols[c], dtype=float)[judged] for c in SIG_COLUMNS + INSIG_COLUMNS}
    idx = bootstrap_indices(int(judged.sum()), n_bootstrap, seed, scheme) if n_bootstrap else None
    return {s.name: score(s, kept, idx) for s in chexprompt_specs()}


# --- running the judge ------------------------------------------------------------------------------------
@dataclass
class JudgeOutcome:
    columns: dict[str, np.ndarray]  # per record, NaN where not judged
    metrics: dict[str, MetricResult]
    summary: dict[str, Any]
    reasons: dict[str, str]  # id -> why it was not judged
    protocol: str = "json"
    prompt_version: str = ""
    provenance: dict[str, str] = field(default_factory=dict)  # original: chexprompt_src(_sha256)


def judge(
    records: Sequence[dict[str, Any]],
    cfg: Any,
    *,
    source: str = "mimic-cxr",
    ledger_path: Any = None,
    n_bootstrap: int = 500,
    seed: int = 12345,
    bootstrap_scheme: str = "cxrflow",
    protocol: str = "json",
    chexprompt_src: Any = None,
) -> JudgeOutcome:
    """Judge `{id, reference, candidate}` records (a `prediction` key is accepted for `candidate`).

    `source` names the records' dataset for the data-use guard; a record carrying its own `source` is judged
    under the stricter of the two (a record cannot loosen the licence the caller named). The default treats
    them as credentialed MIMIC-CXR data, so public endpoints are refused.
    """
    n = len(records)
    nan_cols = {c: np.full(n, np.nan) for c in SIG_COLUMNS + INSIG_COLUMNS}
    op = chexprompt_operation(protocol, chexprompt_src)
    if protocol in TEXT_PROTOCOLS:  # the published retry rule: an invalid answer is asked exactly once more
        cfg = cfg.model_copy(update={"invalid_answer_retries": 1})
    if cfg.backend == "rules":
        summary = {"backend": "rules", "judged": 0, "protocol": protocol, "prompt_version": op.version}
        summary.update(op.extra)
        return JudgeOutcome(
            nan_cols, not_computed_metrics(NEEDS_LLM), summary, {}, protocol, op.version, dict(op.extra)
        )
    from tasks.llm.guard import binding_source
    from tasks.llm.operation import WorkItem
    from tasks.llm.runner import run_operation

    items = []
    for r in records:
        candidate = r.get("candidate", r.get("prediction"))
        if candidate is None or r.get("reference") is None:
            raise ValueError(f"record {r.get('id')!r} needs 'reference' and 'candidate' (or 'prediction')")
        items.append(
            WorkItem(
                id=str(r["id"]),
                source=binding_source([source, str(r.get("source") or source)]),
                payload={"reference": str(r["reference"]), "candidate": str(candidate)},
            )
        )
    result = run_operation(op, items, cfg, ledger_path=ledger_path)
    reasons: dict[str, str] = {}
    for i, item in enumerate(items):
        res = result.results[item.id]
        if res.status == "ok" and res.output is not None:
            for c in SIG_COLUMNS + INSIG_COLUMNS:
                nan_cols[c][i] = float(res.output[c])
        else:
            reasons[item.id] = res.reason or res.status
    metrics = aggregate_metrics(
        nan_cols, n_bootstrap=n_bootstrap, seed=seed, quarantined=len(reasons), scheme=bootstrap_scheme
    )
    summary = result.summary()
    summary["judged"] = n - len(reasons)
    summary["protocol"] = protocol
    summary.update(op.extra)  # original: the checkout's evaluator.py path and sha256
    return JudgeOutcome(nan_cols, metrics, summary, reasons, protocol, op.version, dict(op.extra))


def write_judgments(out: Path, records: Sequence[dict[str, Any]], outcome: JudgeOutcome) -> None:
    """OUT/judgments.jsonl (per record: the error counts, null where not judged, and why) and
    OUT/chexprompt.json (the metrics and the run's summary)."""
    with atomic_path(out / "judgments.jsonl") as tmp, open(tmp, "w") as f:
        for i, r in enumerate(records):
            row = {"id": r["id"], **{c: outcome.columns[c][i] for c in SIG_COLUMNS + INSIG_COLUMNS}}
            row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            row["not_judged"] = outcome.reasons.get(r["id"])
            row["protocol"], row["prompt_version"] = outcome.protocol, outcome.prompt_version
            row.update(outcome.provenance)
            f.write(json.dumps(row) + "\n")
    report = {"metrics": {k: v.model_dump() for k, v in outcome.metrics.items()}, "summary": outcome.summary}
    atomic_write_bytes(out / "chexprompt.json", json.dumps(report, indent=2, default=str).encode())


def judgment_json(significant: dict[str, int], insignificant: dict[str, int], explanation: str = "") -> str:
    """A structured answer as the judge would send it (for tests, fixtures and docs)."""
    return json.dumps(
        {
            "explanation": explanation,
            "clinically_significant": {t: significant.get(t, 0) for t in ERROR_TYPES},
            "clinically_insignificant": {t: insignificant.get(t, 0) for t in ERROR_TYPES},
        }
    )
