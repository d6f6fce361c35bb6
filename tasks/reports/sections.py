"""Rule-based section parser for free-text radiology reports (the baseline LLaVA-Rad calls "rule-based").

Follows the shape of the MIMIC-CXR code repository's parser: a header is upper-case words and a colon at
the start of a line; text runs to the next header. Header spellings (and common misspellings) map onto
cxrflow's canonical sections; addenda above a line of underscores are set aside.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from schemas.manifest import REPORT_SECTIONS

# Canonical section -> header spellings seen in MIMIC-CXR (docs/datasets.md lists their frequencies).
_ALIASES: dict[str, tuple[str, ...]] = {
    "findings": ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION"),
    "impression": ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "SUMMARY"),
    "indication": (
        "INDICATION",
        "INDICATIONS",
        "REASON FOR EXAMINATION",
        "REASON FOR EXAM",
        "REASON FOR STUDY",
        "CLINICAL INDICATION",
    ),
    "history": ("HISTORY", "CLINICAL HISTORY", "CLINICAL INFORMATION", "PATIENT HISTORY"),
    "comparison": ("COMPARISON", "COMPARISONS", "PRIOR STUDIES", "PRIOR"),
    "examination": ("EXAMINATION", "EXAM", "STUDY", "PROCEDURE"),
    "technique": ("TECHNIQUE", "TECHNIQUES"),
}
# Headers that are real sections of a report but feed none of the canonical fields.
_OTHER = ("NOTIFICATION", "WET READ", "ADDENDUM", "RECOMMENDATION", "RECOMMENDATIONS", "FINAL REPORT", "NOTE")

_LOOKUP: dict[str, str | None] = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_LOOKUP.update({h: None for h in _OTHER})

# A header: optional indent, upper-case words (with spaces, parentheses, slashes, commas, dashes), a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]{1,40}?)[ \t]*:", re.MULTILINE)
_ADDENDUM_RULE = re.compile(r"^[ \t]*_{8,}[ \t]*$", re.MULTILINE)
_SPACES = re.compile(r"\s+")


@dataclass
class ParsedReport:
    sections: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(REPORT_SECTIONS))
    has_addendum: bool = False
    addendum: str | None = None
    unknown_headers: list[str] = field(default_factory=list)


def canonical_header(header: str) -> tuple[bool, str | None]:
    """(is a known header, canonical section or None). Misspellings match by similarity (>= 0.8)."""
    h = _SPACES.sub(" ", header.strip().upper())
    if h in _LOOKUP:
        return True, _LOOKUP[h]
    close = difflib.get_close_matches(h, list(_LOOKUP), n=1, cutoff=0.8)
    if close:
        return True, _LOOKUP[close[0]]
    return False, None


def clean_text(text: str) -> str | None:
    """Unwrap the 79-column lines and collapse whitespace; empty -> None."""
    cleaned = _SPACES.sub(" ", text).strip()
    return cleaned or None


def split_addendum(text: str) -> tuple[str | None, str]:
    """Addenda sit above a line of underscores; the original report is below the last such line."""
    rules = list(_ADDENDUM_RULE.finditer(text))
    if not rules:
        return None, text
    last = rules[-1]
    return clean_text(text[: last.start()]), text[last.end() :]


def parse_report(text: str) -> ParsedReport:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    addendum, body = split_addendum(text)
    parsed = ParsedReport(has_addendum=addendum is not None, addendum=addendum)
    collected: dict[str, list[str]] = {}
    headers = [m for m in _HEADER.finditer(body)]
    kept: list[tuple[re.Match, str | None]] = []
    for m in headers:
        known, name = canonical_header(m.group(1))
        if known:
            kept.append((m, name))
        else:
            parsed.unknown_headers.append(m.group(1).strip())
    for i, (m, name) in enumerate(kept):
        end = kept[i + 1][0].start() if i + 1 < len(kept) else len(body)
        content = clean_text(body[m.end() : end])
        if name is not None and content:
            collected.setdefault(name, []).append(content)
    for name, parts in collected.items():
        parsed.sections[name] = " ".join(parts)
    return parsed
