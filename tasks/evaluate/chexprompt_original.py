"""CheXprompt `protocol: original`: the judge as the published metric runs it.

What is taken from the published metric (microsoft/chexprompt), because it defines the metric rather than
its wording: one system + one user message holding the instructions, five worked examples and the pair; the
answer in the text format
    Number of clinically significant errors by type: [(A, n), (B, n), (C, n), (D, n), (E, n), (F, n)]
    Number of clinically insignificant errors by type: [(A, n), ...]
parsed as leniently as the reference parser; its decoding settings (temperature 0, max_tokens 128,
top_p 0.9, frequency/presence penalty 0, no seed, no response_format) and its retry rule (an answer missing
either line is invalid and asked once more: LLMConfig.invalid_answer_retries = 1).
What is cxrflow's own: the instruction wording and the five worked examples (written for cxrflow; the
published examples are not copied). See docs/metrics.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tasks.llm.operation import InvalidAnswer, Operation

PROTOCOL = "original"
SIG_HEAD = "Number of clinically significant errors by type:"
INSIG_HEAD = "Number of clinically insignificant errors by type:"
ERROR_TYPES = ("A", "B", "C", "D", "E", "F")
# The published metric's request settings.
DECODING = {
    "temperature": 0.0,
    "max_tokens": 128,
    "top_p": 0.9,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "seed": None,
    "response_format": None,
}

SYSTEM = (
    "You are a radiologist reviewing machine-written chest X-ray findings. A reference findings section "
    "written by a radiologist is the ground truth. Count the errors in the candidate findings section by "
    "error type, separately for clinically significant and clinically insignificant errors, using the "
    "worked examples as a guide, and give the counts in exactly the list format shown."
)

INSTRUCTIONS = """\
An error is clinically significant when it could change the patient's treatment, management or outcome; \
otherwise it is clinically insignificant. The six error types are:
A) a finding in the candidate that the reference does not contain
B) a finding in the reference that the candidate leaves out
C) a finding placed at the wrong location or position in the candidate
D) a finding given the wrong severity in the candidate
E) a comparison with a prior study in the candidate that the reference does not make
F) a comparison describing change from a prior study in the reference that the candidate leaves out

Answer with these two lines:
Number of clinically significant errors by type: [(A, n_A), (B, n_B), (C, n_C), (D, n_D), (E, n_E), (F, n_F)]
Number of clinically insignificant errors by type: [(A, n_A), (B, n_B), (C, n_C), (D, n_D), (E, n_E), (F, n_F)]"""

# (reference, candidate, significant counts, insignificant counts): cxrflow's own five worked examples.
EXAMPLES: tuple[tuple[str, str, dict[str, int], dict[str, int]], ...] = (
    (
        "Heart size is normal. The lungs are clear without focal consolidation, pleural effusion or "
        "pneumothorax.",
        "Mild enlargement of the cardiac silhouette. Small right pleural effusion. No pneumothorax.",
        {"A": 1},
        {"A": 1},
    ),
    (
        "Endotracheal tube tip projects 4 cm above the carina. Nasogastric tube courses below the diaphragm "
        "with its tip in the stomach. Patchy left lower lobe atelectasis.",
        "Endotracheal tube tip is in the right main bronchus. Patchy atelectasis at the left base.",
        {"C": 1},
        {"B": 1},
    ),
    (
        "Compared with the radiograph from the previous day, the right apical pneumothorax has decreased and "
        "is now small. Right-sided chest tube unchanged in position.",
        "Small right apical pneumothorax. A right-sided chest tube is present.",
        {"F": 1},
        {},
    ),
    (
        "Large left pleural effusion with compressive atelectasis of the left lower lobe. The right lung is "
        "clear.",
        "Small left pleural effusion, unchanged from the prior study. The right lung is clear.",
        {"D": 1},
        {"B": 1, "E": 1},
    ),
    (
        "The lungs are well expanded and clear. No pleural effusion or pneumothorax. Normal cardiomediastinal "
        "silhouette. Multilevel degenerative changes of the thoracic spine.",
        "Clear lungs. No effusion or pneumothorax. The heart and mediastinum are normal in size.",
        {},
        {"B": 1},
    ),
)


def answer_text(significant: dict[str, int], insignificant: dict[str, int]) -> str:
    """An answer in the published format (examples, fixtures, the benchmark's responder)."""

    def line(counts: dict[str, int]) -> str:
        return "[" + ", ".join(f"({t}, {int(counts.get(t, 0))})" for t in ERROR_TYPES) + "]"

    return f"{SIG_HEAD} {line(significant)}\n{INSIG_HEAD} {line(insignificant)}"


def _pair_block(reference: str, candidate: str) -> str:
    return f'Reference findings: """{reference.strip()}"""\nCandidate findings: """{candidate.strip()}"""\nErrors:'


def render_user(payload: dict[str, Any]) -> str:
    shots = "\n##\n".join(f"{_pair_block(r, c)} {answer_text(s, i)}" for r, c, s, i in EXAMPLES)
    return (
        f"{INSTRUCTIONS}\n##\n{shots}\n##\n"
        f"{_pair_block(str(payload['reference']), str(payload['candidate']))}"
    )


# --- the lenient parser ----------------------------------------------------------------------------------
_ITEM_END = re.compile(r"[\)\]]\s*,")


def _counts(segment: str, which: str, raw: str) -> tuple[dict[str, int], list[str]]:
    """`[(A, 1), (B, 0), ...]` or `((A, 1), ...)`, possibly partial -> (counts, missing types)."""
    counts: dict[str, int] = {}
    for item in _ITEM_END.split(segment.strip()):
        item = re.sub(r"[\(\)\[\]]", "", item).strip()
        if not item:
            continue
        key, sep, value = item.partition(",")
        key, value = key.strip().strip("'\"").upper(), value.strip()
        if not sep or key not in ERROR_TYPES or not value.isdigit():
            raise InvalidAnswer(f"{which} line: cannot read {item[:40]!r} as (type, count)", raw=raw)
        counts[key] = int(value)  # a repeated type: the last one counts, as in the reference parser
    if not counts:
        raise InvalidAnswer(f"{which} line has no (type, count) pairs", raw=raw)
    return {t: counts.get(t, 0) for t in ERROR_TYPES}, [t for t in ERROR_TYPES if t not in counts]


def parse_original_answer(text: str) -> dict[str, Any]:
    """Both lines are required (else InvalidAnswer, which the runner re-asks once); text from the first
    "Explanation" on is ignored; square or round brackets; types left out of a line count 0 and are listed
    in `missing_types`."""
    if SIG_HEAD not in text or INSIG_HEAD not in text:
        raise InvalidAnswer(
            "answer lacks a 'Number of clinically (in)significant errors by type' line", raw=text
        )
    body = text.split("Explanation")[0]
    head, sep, insignificant = body.partition(INSIG_HEAD)
    if not sep or SIG_HEAD not in head:
        raise InvalidAnswer("the error-count lines come after 'Explanation'", raw=text)
    significant = head.split(SIG_HEAD)[-1]
    sig, sig_missing = _counts(significant, "clinically significant", text)
    insig, insig_missing = _counts(insignificant, "clinically insignificant", text)
    return {
        "clinically_significant": sig,
        "clinically_insignificant": insig,
        "missing_types": {"significant": sig_missing, "insignificant": insig_missing},
    }


@dataclass(frozen=True, eq=False)
class OriginalProtocolOperation(Operation):
    """Instructions, examples and pair in one user message; a text answer, no response_format."""

    def build_messages(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.render_user(payload)},
        ]

    def parse_answer(
        self, content: str | None, refusal: str | None, finish_reason: str | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        if refusal:
            raise InvalidAnswer(f"refusal: {refusal[:200]}", raw=refusal)
        if not content or not content.strip():
            raise InvalidAnswer(f"empty answer (finish_reason={finish_reason})", raw=content)
        # No finish_reason check: the reference accepts any answer whose two lines parse, cut or not.
        parsed = parse_original_answer(content)
        assert self.postprocess is not None
        return self.postprocess(parsed, payload)  # type: ignore[arg-type]


def original_operation(response_model: Any, flatten: Any, no_rules: Any) -> OriginalProtocolOperation:
    """Built by tasks/evaluate/chexprompt.py (which owns the response model and the output columns)."""

    def post(parsed: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        return {**flatten(parsed), "missing_types": parsed["missing_types"]}

    return OriginalProtocolOperation(
        name="chexprompt",
        system_prompt=SYSTEM,
        response_model=response_model,
        render_user=render_user,
        template_version="original-1",
        examples=tuple((_pair_block(r, c), answer_text(s, i)) for r, c, s, i in EXAMPLES),
        postprocess=post,
        rules=no_rules,
        description="CheXprompt as published: five-shot, text answer format, reference decoding settings",
        request_params=dict(DECODING),
    )
