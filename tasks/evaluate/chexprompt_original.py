"""CheXprompt `protocol: fewshot-own`: the published metric's request shape with cxrflow's own wording.

This is NOT the published prompt (that one is `protocol: original`, read from a microsoft/chexprompt checkout by
tasks/evaluate/chexprompt_published.py); its error rates are not comparable with published CheXprompt figures.
What it shares with the published metric: one system + one user message holding the instructions, five worked
examples and the pair; the answer in the text format
    Number of clinically significant errors by type: [(A, n), (B, n), (C, n), (D, n), (E, n), (F, n)]
    Number of clinically insignificant errors by type: [(A, n), ...]
read by the reference's own parsing rules (chexprompt_published.rating_counts); the decoding settings of its
ReportEvaluator (temperature 0, max_tokens 128, top_p 0.9, frequency/presence penalty 0, no seed, no
response_format) and its retry rule (an answer the parser rejects is asked once more). What is cxrflow's own:
the instruction wording, the five worked examples and their layout. See docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

from tasks.evaluate.chexprompt_published import TextProtocolOperation, post_with

PROTOCOL = "fewshot-own"
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


def fewshot_own_operation(response_model: Any, flatten: Any, no_rules: Any) -> TextProtocolOperation:
    """Built by tasks/evaluate/chexprompt.py (which owns the response model and the output columns)."""

    return TextProtocolOperation(
        name="chexprompt",
        system_prompt=SYSTEM,
        response_model=response_model,
        render_user=render_user,
        template_version="original-1",
        examples=tuple((_pair_block(r, c), answer_text(s, i)) for r, c, s, i in EXAMPLES),
        postprocess=post_with(flatten),
        rules=no_rules,
        description="CheXprompt request shape with cxrflow's own five-shot wording (not the published prompt)",
        request_params=dict(DECODING),
    )
