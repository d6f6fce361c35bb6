"""The offline `rules` backend: deterministic, no model.

structure  = the ingest section parser (tasks.reports.sections) plus removal of sentences that compare
             with prior studies (a rule cannot rewrite them as statements about the current image).
synthesize = one sentence template per CheXpert observation, positive / negative / uncertain.
translate  = refused: a rule cannot translate, and fake output would poison training data.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.labels import CHEXPERT_LABELS
from tasks.llm.operation import RulesUnsupported

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9_\"(])")
_COMPARISON = re.compile(
    r"\bcompar(?:ed|ison|isons|able)\b"
    r"|\b(?:prior|previous|preceding|earlier|recent|last)\s+(?:\w+\s+){0,2}?"
    r"(?:study|studies|exam|exams|examination|examinations|radiographs?|films?|images?|imaging|x-rays?|ct|cxr)\b"
    r"|\bsince\s+(?:the\s+)?(?:prior|previous|last|recent|earlier|___)"
    r"|\binterval(?:ly)?\b|\bunchanged\b|\bno\s+(?:significant\s+|relevant\s+|substantial\s+)?change\b"
    r"|\bas before\b|\bagain\s+(?:seen|noted|demonstrated|visualized|identified)\b"
    r"|\b(?:has|have)\s+(?:increased|decreased|improved|worsened|resolved)\b",
    re.IGNORECASE,
)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def remove_comparison_sentences(text: str | None) -> tuple[str | None, int]:
    """Drop sentences that refer to prior studies; (remaining text or None, sentences removed)."""
    if not text:
        return text, 0
    sentences = split_sentences(text)
    kept = [s for s in sentences if not _COMPARISON.search(s)]
    return (" ".join(kept) or None), len(sentences) - len(kept)


def structure_rules(payload: dict[str, Any]) -> dict[str, Any]:
    from tasks.reports.sections import parse_report

    text = payload.get("report_text")
    if not text or not text.strip():
        raise RulesUnsupported("no report text to structure")
    sections = parse_report(text).sections
    findings, removed_f = remove_comparison_sentences(sections.get("findings"))
    impression, removed_i = remove_comparison_sentences(sections.get("impression"))
    return {
        "examination": sections.get("examination"),
        # LLaVA-Rad's indication may come from History / Indication / Reason for study.
        "indication": sections.get("indication") or sections.get("history"),
        "findings": findings,
        "impression": impression,
        "comparison_sentences_removed": removed_f + removed_i,
    }


# observation -> (impression noun, positive, negative, uncertain)
TEMPLATES: dict[str, tuple[str, str, str | None, str]] = {
    "Atelectasis": ("atelectasis", "There is atelectasis.", "There is no atelectasis.", "There may be atelectasis."),
    "Cardiomegaly": (
        "cardiomegaly", "The heart is enlarged.", "The heart size is normal.", "The heart may be mildly enlarged.",
    ),
    "Consolidation": (
        "consolidation", "There is focal consolidation.", "There is no focal consolidation.",
        "Focal consolidation cannot be excluded.",
    ),
    "Edema": (
        "pulmonary edema", "There is pulmonary edema.", "There is no pulmonary edema.",
        "Mild pulmonary edema is possible.",
    ),
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinal silhouette", "The cardiomediastinal silhouette is enlarged.",
        "The cardiomediastinal silhouette is within normal limits.", "The cardiomediastinal silhouette may be enlarged.",
    ),
    "Fracture": ("fracture", "A fracture is seen.", "No acute fracture is seen.", "A fracture cannot be excluded."),
    "Lung Lesion": (
        "lung lesion", "There is a focal lung lesion.", "There is no focal lung lesion.",
        "A focal lung lesion is possible.",
    ),
    "Lung Opacity": (
        "lung opacity", "There is an airspace opacity.", "There is no focal airspace opacity.",
        "A subtle airspace opacity may be present.",
    ),
    "Pleural Effusion": (
        "pleural effusion", "There is a pleural effusion.", "There is no pleural effusion.",
        "A small pleural effusion is possible.",
    ),
    "Pleural Other": (
        "pleural abnormality", "There is pleural thickening.", "There is no other pleural abnormality.",
        "Pleural thickening is possible.",
    ),
    "Pneumonia": (
        "pneumonia", "The findings are consistent with pneumonia.", "There is no evidence of pneumonia.",
        "Pneumonia cannot be excluded.",
    ),
    "Pneumothorax": (
        "pneumothorax", "There is a pneumothorax.", "There is no pneumothorax.",
        "A small pneumothorax cannot be excluded.",
    ),
    "Support Devices": (
        "support devices", "Support devices are in place.", None, "A support device may be present.",
    ),
}
NO_FINDING_FINDINGS = "The lungs are clear. The cardiomediastinal silhouette is normal. No acute abnormality is seen."
NO_FINDING_IMPRESSION = "No acute cardiopulmonary process."
_VIEW_NAMES = {"PA": "PA", "AP": "AP", "FRONTAL": "frontal", "LATERAL": "lateral", "LL": "left lateral"}


def _labels(payload: dict[str, Any]) -> dict[str, int]:
    raw = payload.get("labels") or {}
    if isinstance(raw, list | tuple):  # a label list (ChestX-ray14-style): every named finding is positive
        raw = dict.fromkeys(raw, 1)
    labels = {k: int(v) for k, v in raw.items() if v is not None}
    unknown = sorted(set(labels) - set(CHEXPERT_LABELS))
    if unknown:
        raise RulesUnsupported(f"no template for label(s) {', '.join(unknown)}; use an LLM backend")
    bad = sorted(k for k, v in labels.items() if v not in (1, 0, -1))
    if bad:
        raise RulesUnsupported(f"label values must be 1/0/-1/blank: {', '.join(bad)}")
    return labels


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def synthesize_rules(payload: dict[str, Any]) -> dict[str, Any]:
    labels = _labels(payload)
    if not labels:
        raise RulesUnsupported("no labels to write a report from (all blank)")
    view = payload.get("view")
    examination = f"Chest radiograph, {_VIEW_NAMES.get(str(view).upper(), str(view))} view." if view else None
    order = [n for n in CHEXPERT_LABELS if n != "No Finding"]
    positive = [n for n in order if labels.get(n) == 1]
    uncertain = [n for n in order if labels.get(n) == -1]
    negative = [n for n in order if labels.get(n) == 0]
    if labels.get("No Finding") == 1 and not positive and not uncertain:
        sentences = [NO_FINDING_FINDINGS]
        sentences += [TEMPLATES["Support Devices"][1]] if labels.get("Support Devices") == 1 else []
        return {"examination": examination, "indication": None, "findings": " ".join(sentences),
                "impression": NO_FINDING_IMPRESSION}
    sentences = [TEMPLATES[n][1] for n in positive] + [TEMPLATES[n][3] for n in uncertain]
    sentences += [TEMPLATES[n][2] for n in negative if TEMPLATES[n][2]]
    clinical_pos = [TEMPLATES[n][0] for n in positive if n != "Support Devices"]
    clinical_unc = [TEMPLATES[n][0] for n in uncertain if n != "Support Devices"]
    parts = []
    if clinical_pos:
        parts.append(_cap(", ".join(clinical_pos)) + ".")
    if clinical_unc:
        parts.append("Possible " + ", ".join(clinical_unc) + ".")
    impression = " ".join(parts) or NO_FINDING_IMPRESSION
    return {"examination": examination, "indication": None, "findings": " ".join(sentences) or None,
            "impression": impression}


def translate_rules(payload: dict[str, Any]) -> dict[str, Any]:
    raise RulesUnsupported("translation needs an LLM backend")
