"""The three report operations (structure, translate, synthesize) as tasks.llm Operations.

Prompts are cxrflow's own. Changing any prompt text, example or response model changes the operation's
version, which is part of every cache key and output row.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from tasks.llm.operation import InvalidAnswer, Operation
from tasks.reports.rules_backend import structure_rules, synthesize_rules, translate_rules


class StructuredReport(BaseModel):
    examination: str | None = Field(description="type of study, e.g. 'Chest radiograph, PA and lateral'")
    indication: str | None = Field(description="reason for the study, from indication / history / reason")
    findings: str | None = Field(description="observations on the current image, as prose")
    impression: str | None = Field(description="the radiologist's conclusion")


class TranslatedReport(BaseModel):
    translation: str = Field(description="the report in English")


class SynthesizedReport(BaseModel):
    findings: str = Field(description="findings section describing the image")
    impression: str | None = Field(description="one- or two-sentence conclusion")


STRUCTURE_PROMPT = """\
You prepare chest X-ray reports for training a report-generation model. Each report describes one \
study; the model will only ever see the images of that study.

Return JSON with four fields: examination, indication, findings, impression. Use null for a field the \
report does not contain.
- examination: the kind of study (for example "Chest radiograph, PA and lateral").
- indication: why the study was done, taken from an indication, clinical history or reason-for-study \
section; leave out names, ages, dates and other identifying details.
- findings: what is visible on the current images, as plain sentences.
- impression: the conclusion, as plain sentences.

Rules for findings and impression:
1. Keep every observation the radiologist made about the current images, with its location, size, \
severity and certainty words (e.g. "possible", "likely", "cannot be excluded").
2. Statements that compare with an earlier study become statements about the current study: \
"the effusion has decreased compared with yesterday" becomes "there is a small effusion" only if the \
report states its current size; otherwise keep just the current observation ("pleural effusion is present"). \
Drop sentences that only name or date the prior study.
3. Remove what cannot be seen on the images: patient history, demographics, phone calls and \
notifications, recommendations, and placeholders such as "___".
4. Repair words broken by line wrapping or typing errors, remove repeated phrases, numbering and bullets.
5. Never add a finding, a location or a degree that the report does not state. When unsure, keep the \
original wording.
"""

_STRUCTURE_EXAMPLE_IN = """\
Report:
EXAMINATION: CHEST (PA AND LAT)
INDICATION: ___ year old woman with cough and fever, eval for pneumonia.
COMPARISON: Chest radiograph from ___.
FINDINGS:
1. Compared to the prior study there is new opacity in the right lower lobe.
2. The left lung is clear. Heart size is unchanged, normal. No pleu-
ral effusion or pneumothorax.
IMPRESSION: Right lower lobe opacity, concerning for pneumonia. Dr. ___ was notified by phone at 3pm."""

_STRUCTURE_EXAMPLE_OUT = json.dumps(
    {
        "examination": "Chest radiograph, PA and lateral",
        "indication": "Cough and fever, evaluate for pneumonia.",
        "findings": "There is opacity in the right lower lobe. The left lung is clear. Heart size is normal. "
        "There is no pleural effusion or pneumothorax.",
        "impression": "Right lower lobe opacity, concerning for pneumonia.",
    }
)

TRANSLATE_PROMPT = """\
You translate Spanish chest X-ray reports into English for training a report-generation model. The \
input may be full sentences or a list of stemmed or abbreviated Spanish terms (for example \
"cardiomegalia", "pinzamiento seno costofrenico", "sin hallazgos"). Write fluent English radiology \
prose that states the same findings with the same certainty, negation and location. Do not add, drop \
or interpret findings; expand abbreviations only when their meaning is unambiguous. Return JSON with a \
single field, translation.
"""

SYNTHESIZE_PROMPT = """\
You write chest X-ray reports from structured labels, for training a report-generation model. You get \
the view and a label per observation: positive (present), negative (explicitly absent), uncertain \
(possible) or a list of findings that are present. Write a findings section of short, natural radiology \
sentences and a brief impression. State positive observations as present, negative ones as absent, \
uncertain ones with hedged wording ("possible", "cannot be excluded"). Mention only the observations \
you were given; do not invent locations, sizes, severities, devices or comparisons. If "No Finding" is \
positive and nothing else is, describe a normal chest radiograph. Return JSON with findings and impression.
"""

_LABEL_WORDS = {1: "positive", 0: "negative", -1: "uncertain"}


def _render_structure(payload: dict[str, Any]) -> str:
    return "Report:\n" + (payload.get("report_text") or "")


def _render_translate(payload: dict[str, Any]) -> str:
    return "Spanish report:\n" + (payload.get("report_text") or "")


def _render_synthesize(payload: dict[str, Any]) -> str:
    labels = payload.get("labels") or {}
    lines = [f"View: {payload.get('view') or 'unknown'}"]
    if isinstance(labels, list | tuple):
        lines.append("Findings present: " + (", ".join(labels) or "none listed"))
    else:
        lines += [f"{name}: {_LABEL_WORDS[int(v)]}" for name, v in labels.items() if v is not None]
    if payload.get("source_labels"):
        lines.append("Labels as released by the source: " + "; ".join(payload["source_labels"]))
    return "\n".join(lines)


def _none_if_blank(value: str | None) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _post_structure(answer: StructuredReport, payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: _none_if_blank(v) for k, v in answer.model_dump().items()}
    if not any(out.values()):
        raise InvalidAnswer("every section is empty", raw=answer.model_dump_json())
    return out


def _post_translate(answer: TranslatedReport, payload: dict[str, Any]) -> dict[str, Any]:
    text = _none_if_blank(answer.translation)
    if text is None:
        raise InvalidAnswer("empty translation", raw=answer.model_dump_json())
    # PadChest reports are findings-style text: the translation is the findings target.
    return {"translation": text, "findings": text}


def _post_synthesize(answer: SynthesizedReport, payload: dict[str, Any]) -> dict[str, Any]:
    findings = _none_if_blank(answer.findings)
    if findings is None:
        raise InvalidAnswer("empty findings", raw=answer.model_dump_json())
    return {"findings": findings, "impression": _none_if_blank(answer.impression)}


STRUCTURE = Operation(
    name="structure",
    system_prompt=STRUCTURE_PROMPT,
    response_model=StructuredReport,
    render_user=_render_structure,
    examples=((_STRUCTURE_EXAMPLE_IN, _STRUCTURE_EXAMPLE_OUT),),
    postprocess=_post_structure,
    rules=structure_rules,
    description="sections of a free-text report, comparisons rewritten, nothing added",
)
TRANSLATE = Operation(
    name="translate",
    system_prompt=TRANSLATE_PROMPT,
    response_model=TranslatedReport,
    render_user=_render_translate,
    postprocess=_post_translate,
    rules=translate_rules,
    description="Spanish (PadChest) report to English",
)
SYNTHESIZE = Operation(
    name="synthesize",
    system_prompt=SYNTHESIZE_PROMPT,
    response_model=SynthesizedReport,
    render_user=_render_synthesize,
    postprocess=_post_synthesize,
    rules=synthesize_rules,
    description="findings and impression written from CheXpert-style labels and the view",
)
OPERATIONS: dict[str, Operation] = {op.name: op for op in (STRUCTURE, TRANSLATE, SYNTHESIZE)}


def get_operation(name: str) -> Operation:
    if name not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; one of {', '.join(OPERATIONS)}")
    return OPERATIONS[name]
