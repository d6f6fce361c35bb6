"""A rule-based CheXpert-style labeler: 14 observations, each 1 (positive), 0 (negative), -1 (uncertain) or
None (not mentioned), with NegEx/ConText-style negation and uncertainty.

Owned here rather than taken from medspacy (docs/pitfalls.md: its spaCy pin forces numpy < 2 on Python 3.11)
or the original CheXpert labeler (not installable). It is an offline stand-in for CheXbert, and every
metric built on it is named "rule-based" so nobody mistakes it for F1-CheXbert.

Pipeline per report: split into sentences; find mentions of each observation (phrase regexes, plus
explicit "normal" statements such as "heart size is normal" that state an observation is absent); classify
each mention by trigger words in its sentence scope (pre/post negation, pre/post uncertainty, pseudo
triggers like "no change in"), a scope ending at terminators ("but", "however", "which", ";", ...);
aggregate mentions as CheXpert does: any positive -> 1, else any uncertain -> -1, else 0.
"No Finding" is 1 when no pathology (everything except Support Devices) is positive or uncertain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.labels import CHEXPERT_LABELS

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
Labels = dict[str, int | None]


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# Mention phrases per observation (cxrflow's own lists, shaped after CheXpert's categories).
_HEART = r"(?:heart|cardiac\s+silhouette|cardiac\s+size|heart\s+size)"
MENTIONS: dict[str, re.Pattern[str]] = {
    "Atelectasis": _rx(r"\batelecta\w*", r"\bcollapse[sd]?\b", r"\bvolume\s+loss\b"),
    "Cardiomegaly": _rx(
        r"\bcardiomegaly\b",
        r"\bcardiac\s+enlargement\b",
        r"\benlarge(?:d|ment\s+of\s+the)\s+(?:the\s+)?" + _HEART,
        _HEART + r"\s+(?:size\s+)?(?:is|are|appears?|remains?|seems?)?\s*(?:\w+\s+){0,3}?enlarged\b",
    ),
    "Consolidation": _rx(r"\bconsolidat\w*"),
    "Edema": _rx(
        r"\bedema\b",
        r"\b(?:vascular|venous|pulmonary)\s+congestion\b",
        r"\bcongestive\s+heart\s+failure\b",
        r"\bchf\b",
    ),
    "Enlarged Cardiomediastinum": _rx(
        r"\b(?:enlarged|widened|widening\s+of\s+the)\s+(?:cardio)?mediastin\w*",
        r"\bmediastinal\s+(?:widening|enlargement)\b",
        r"\b(?:cardio)?mediastin\w*\s+(?:silhouette|contours?)?\s*(?:is|are|appears?)?\s*(?:\w+\s+){0,2}?"
        r"(?:enlarged|widened)\b",
    ),
    "Fracture": _rx(r"\bfractur\w*"),
    "Lung Lesion": _rx(
        r"\bnodul\w*",
        r"\bmass(?:es)?\b",
        r"\b(?:lung|pulmonary)\s+lesions?\b",
        r"\btumou?rs?\b",
        r"\bneoplasm\w*",
        r"\bcarcinoma\b",
        r"\bmetasta\w*",
        r"\bcavitary\s+lesions?\b",
    ),
    "Lung Opacity": _rx(
        r"\bopaci\w*",
        r"\binfiltrat\w*",
        r"\bairspace\s+disease\b",
        r"\bhaz(?:y|iness)\b",
        r"\bdensit(?:y|ies)\b(?!\s+of\s+(?:the\s+)?bones?)",
    ),
    "Pleural Effusion": _rx(
        r"(?<!pericardial\s)\beffusions?\b",
        r"\bhydrothorax\b",
        r"\bblunting\s+of\s+the\s+(?:\w+\s+)?costophrenic\s+angles?\b",
        r"\bpleural\s+fluid\b",
    ),
    "Pleural Other": _rx(
        r"\bpleural\s+(?:thickening|plaques?|scarring|calcification\w*)\b",
        r"\bfibrothorax\b",
    ),
    "Pneumonia": _rx(r"\bpneumoni\w*", r"\binfectio\w*"),
    "Pneumothorax": _rx(r"\bpneumothora\w*"),
    "Support Devices": _rx(
        r"\b(?:picc|central|venous|arterial|dialysis|swan[-\s]ganz|ij|subclavian)\s+(?:venous\s+)?"
        r"(?:lines?|catheters?)\b",
        r"\bcatheters?\b",
        r"\b(?:endotracheal|et|enteric|feeding|nasogastric|ng|og|orogastric|chest|tracheostomy|dobhoff)\s+"
        r"tubes?\b",
        r"\btracheostomy\b",
        r"\bpace(?:maker|r)s?\b",
        r"\bdefibrillator\b",
        r"\bicd\b",
        r"\bstents?\b",
        r"\bport-?a-?cath\b",
        r"\b(?:support|monitoring)\s+devices?\b",
        r"\btubes\s+and\s+lines\b",
        r"\blines\s+and\s+tubes\b",
        r"\b(?:pacing|pacer)\s+(?:leads?|wires?)\b",
    ),
}

# Statements that an observation is absent/normal without a negation word ("heart size is normal").
NORMAL_STATEMENTS: dict[str, re.Pattern[str]] = {
    "Cardiomegaly": _rx(
        _HEART + r"\s+(?:size\s+)?(?:is|are|appears?|remains?)?\s*(?:\w+\s+){0,2}?"
        r"(?:normal|within\s+normal\s+limits|unremarkable)\b(?!\s+limits)",
        r"\bnormal\s+(?:heart|cardiac)\s+size\b",
        r"\bnormal(?:-|\s+)sized\s+heart\b",
    ),
    "Enlarged Cardiomediastinum": _rx(
        r"\b(?:cardio)?mediastinal\s+(?:silhouette|contours?)\s+(?:is|are|appears?|remains?)?\s*"
        r"(?:\w+\s+){0,2}?(?:normal|within\s+normal\s+limits|unremarkable|stable)\b",
        r"\bnormal\s+(?:cardio)?mediastinal\s+(?:silhouette|contours?)\b",
        r"\bmediastinum\s+(?:is\s+)?(?:normal|unremarkable)\b",
    ),
    "Lung Opacity": _rx(r"\blungs\s+(?:are|appear|remain)\s+(?:\w+\s+){0,3}?clear\b", r"\bclear\s+lungs\b"),
}

# Borderline statements count as uncertain (checked before the normal statements).
UNCERTAIN_STATEMENTS: dict[str, re.Pattern[str]] = {
    "Cardiomegaly": _rx(
        _HEART
        + r"\s+(?:size\s+)?(?:is|appears?)?\s*(?:at\s+the\s+)?(?:top[-\s]normal|borderline|upper\s+limits?"
        r"\s+of\s+normal)",
        r"\bborderline\s+(?:cardiomegaly|enlarged\s+heart|heart\s+size)\b",
    ),
}

# Triggers. Uncertainty phrases that contain negation words are matched first ("cannot be excluded").
PSEUDO = _rx(
    r"\bno\s+(?:significant\s+|interval\s+|substantial\s+)?(?:change|increase|decrease|worsening)\b",
    r"\bnot\s+(?:only|necessarily)\b",
    r"\bgram[-\s]negative\b",
)
PRE_UNCERTAIN_NEG = _rx(
    r"\bcannot\s+(?:be\s+)?(?:entirely\s+|completely\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b",
    r"\bcan\s*not\s+(?:exclude|rule\s+out)\b",
    r"\bcan't\s+(?:exclude|rule\s+out)\b",
    r"\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)\b",
    r"\bno\s+definite\s+evidence\s+against\b",
)
POST_UNCERTAIN_NEG = _rx(
    r"^\W*(?:\w+\s+){0,3}?(?:cannot|can\s*not|can't|could\s+not|not)\s+(?:be\s+)?(?:entirely\s+|"
    r"completely\s+)?(?:excluded|ruled\s+out|exclude)\b",
)
PRE_NEG = _rx(
    r"\bno\b",
    r"\bnot\b",
    r"\bwithout\b",
    r"\bnegative\s+for\b",
    r"\bfree\s+of\b",
    r"\babsence\s+of\b",
    r"\bresolution\s+of\b",
    r"\bresolved\b",
    r"\brather\s+than\b",
    r"\bnor\b",
    r"\bnever\b",
)
POST_NEG = _rx(
    r"^\W*(?:\w+\s+){0,4}?(?:is|are|has|have)?\s*(?:been\s+)?(?:not\s+(?:seen|identified|present|"
    r"appreciated|demonstrated|visualized|evident|detected|noted|enlarged)|absent|resolved|"
    r"no\s+longer\s+(?:seen|present|visible|evident)|removed)\b",
)
PRE_UNCERTAIN = _rx(
    r"\bpossibl[ey]\b",
    r"\bprobabl[ey]\b",
    r"\blikely\b",
    r"\bmay\b",
    r"\bmight\b",
    r"\bcould\b",
    r"\bsuggest\w*",
    r"\bsuspicious\b",
    r"\bsuspect\w*",
    r"\bconcern\w*\s+for\b",
    r"\bquestionabl[ey]\b",
    r"\bquestion\s+of\b",
    r"\?",
    r"\bversus\b",
    r"\bvs\.?(?=\s)",
    r"\bdifferential\b",
    r"\bconsider\w*",
    r"\bequivocal\b",
    r"\bpresum\w*",
    r"\bmaybe\b",
    r"\bcannot\s+be\s+differentiated\b",
    r"\brule\s+out\b",
    r"\br/o\b",
    r"\bborderline\b",
    r"\bappear\w*\s+to\s+represent\b",
    r"\bunlikely\b",
)
POST_UNCERTAIN = _rx(
    r"^\W*(?:\w+\s+){0,4}?(?:is|are)?\s*(?:possible|likely|probable|suspected|questioned|unlikely|"
    r"not\s+excluded|a\s+consideration|in\s+the\s+differential)\b",
    r"^\W*(?:\w+\s+){0,2}?(?:versus|vs\.?|or)\s+\w+",
    r"^\s*\?",
)
# A trigger's scope ends at these (ConText "terminators").
TERMINATOR = _rx(
    r"\bbut\b",
    r"\bhowever\b",
    r"\balthough\b",
    r"\bthough\b",
    r"\bexcept\b",
    r"\baside\s+from\b",
    r"\bapart\s+from\b",
    r"\bwhich\b",
    r"\bwhereas\b",
    r"\bwhile\b",
    r"\bother\s+than\b",
    r";",
    r":",
    r"\bthere\s+(?:is|are)\b(?!\s+(?:no|not)\b)",
    r"\band\s+(?:the|a|an|there|mild|moderate|severe|small|large)\b",
    r"\bwith\b(?!\s+(?:no|out)\b)",
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!])\s+|\n+|(?<=[a-z])\.(?=[A-Z])")


@dataclass(frozen=True)
class Mention:
    observation: str
    text: str
    status: int


def _scope_before(sentence: str, start: int) -> str:
    pre = sentence[:start]
    ends = [m.end() for m in TERMINATOR.finditer(pre)]
    return pre[ends[-1] :] if ends else pre


def _scope_after(sentence: str, end: int) -> str:
    post = sentence[end:]
    m = TERMINATOR.search(post)
    return post[: m.start()] if m else post


def _classify(sentence: str, start: int, end: int) -> int:
    pre = PSEUDO.sub(" ", _scope_before(sentence, start))
    post = _scope_after(sentence, end)
    inside = sentence[start:end]
    if PRE_UNCERTAIN_NEG.search(pre) or POST_UNCERTAIN_NEG.search(post):
        return UNCERTAIN
    if PRE_NEG.search(pre) or POST_NEG.search(post) or re.search(r"\bnot\b|\bno\b", inside, re.I):
        return NEGATIVE
    if PRE_UNCERTAIN.search(pre) or POST_UNCERTAIN.search(post) or PRE_UNCERTAIN.search(inside):
        return UNCERTAIN
    return POSITIVE


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text or "") if s and s.strip()]


def mentions(text: str) -> list[Mention]:
    found: list[Mention] = []
    for sentence in sentences(text):
        for obs, pattern in MENTIONS.items():
            taken: list[tuple[int, int]] = []
            for table, fixed in ((UNCERTAIN_STATEMENTS, UNCERTAIN), (NORMAL_STATEMENTS, NEGATIVE)):
                special = table.get(obs)
                if special is None:
                    continue
                for m in special.finditer(sentence):
                    if any(m.start() < e and s < m.end() for s, e in taken):
                        continue
                    taken.append(m.span())
                    # "heart size is not normal" style double negation is rare; a negated normal statement
                    # is treated as positive.
                    status = fixed
                    if fixed == NEGATIVE and re.search(r"\bnot\b", m.group(0), re.I):
                        status = POSITIVE
                    found.append(Mention(obs, m.group(0), status))
            for m in pattern.finditer(sentence):
                if any(m.start() < e and s < m.end() for s, e in taken):
                    continue
                found.append(Mention(obs, m.group(0), _classify(sentence, m.start(), m.end())))
    return found


def label_report(text: str) -> Labels:
    """Labels for the 14 CheXpert observations of one report (keys in CHEXPERT_LABELS order)."""
    by_obs: dict[str, list[int]] = {}
    for mention in mentions(text):
        by_obs.setdefault(mention.observation, []).append(mention.status)
    labels: Labels = {}
    for obs in CHEXPERT_LABELS:
        statuses = by_obs.get(obs)
        if obs == "No Finding":
            continue
        if not statuses:
            labels[obs] = None
        elif POSITIVE in statuses:
            labels[obs] = POSITIVE
        elif UNCERTAIN in statuses:
            labels[obs] = UNCERTAIN
        else:
            labels[obs] = NEGATIVE
    pathology = [o for o in CHEXPERT_LABELS if o not in ("No Finding", "Support Devices")]
    abnormal = any(labels[o] in (POSITIVE, UNCERTAIN) for o in pathology)
    labels["No Finding"] = None if abnormal else POSITIVE
    return {obs: labels[obs] for obs in CHEXPERT_LABELS}


def label_reports(texts: list[str]) -> list[Labels]:
    return [label_report(t) for t in texts]
