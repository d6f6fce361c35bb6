"""Rule-based section parser: the behaviour of the MIMIC-CXR code repository's parser, which is what LLaVA-Rad
calls its "rule-based" reports (docs/reports.md).

cxrflow's own implementation of that behaviour (the parity test in tests/test_sections_parity.py checks it
against an independent re-statement of the reference procedure):
- a header is a newline, a space, then upper-case letters, spaces and `()/,-`, a colon and whitespace; the
  text before the first header is the preamble, a report without one is a single "full report" section;
- the whitespace a header's colon needs may be its own line break: a header on the very next line then has
  no line break left to start it and stays inside the first section's text ("FINDINGS:" over "PA AND
  LATERAL VIEWS OF THE CHEST:"), while "FINDINGS: " with a trailing space is an empty section;
- header names are normalised with the reference's table (frequent spellings and misspellings), then by
  substring (impression, findings, history, comparison, addendum), then view-like titles ("PA AND LATERAL
  VIEWS OF THE CHEST", "CHEST, TWO VIEWS", "RIGHT RIBS") become findings;
- empty findings/impression sections are dropped; of several sections with one name the *last* counts;
- a report with neither findings nor impression gets its last paragraph as "last_paragraph";
- per-study corrections (tasks/reports/mimic_cxr_sections.json) give some studies' conclusion by section
  name or character span; the reference writes such studies to its conclusion file only, so they get an
  impression (the conclusion) and no findings.
Reports not in MIMIC's layout (other sources: headers at the start of a line, no one-space indent) are first
put into it (a leading line break, one space before every line), so the same rule finds their headers; text
already in the layout, and every MIMIC-CXR report (called with its study id), is parsed exactly as it is.
cxrflow extras that leave findings/impression untouched: addenda above a line of underscores are reported
(`has_addendum`, `addendum`), and the other canonical sections (examination, indication, history, ...) take
the last non-empty section of their name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from schemas.manifest import REPORT_SECTIONS

PARSER_METHOD = "mimic-cxr-sections"  # manifest report_method of rows this parser structured
_DATA = Path(__file__).with_name("mimic_cxr_sections.json")

# newline + one space + the header name + ":" + whitespace (the reference's header definition)
_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_ADDENDUM_RULE = re.compile(r"^[ \t]*_{8,}[ \t]*$", re.MULTILINE)
_SPACES = re.compile(r"\s+")
_PARAGRAPH = "\n \n"  # a blank line in MIMIC's one-space-indented layout


@dataclass(frozen=True)
class Rules:
    header_names: dict[str, str]
    main_sections: tuple[str, ...]
    findings_like: re.Pattern
    custom_section: dict[str, str]
    custom_span: dict[str, tuple[int, int]]


@cache
def rules() -> Rules:
    data = json.loads(_DATA.read_text())
    return Rules(
        header_names=dict(data["header_names"]),
        main_sections=tuple(data["main_sections"]),
        findings_like=re.compile("|".join(re.escape(p) for p in data["findings_like"])),
        custom_section=dict(data["custom_section"]),
        custom_span={k: (int(a), int(b)) for k, (a, b) in data["custom_span"].items()},
    )


@dataclass
class Section:
    name: str  # normalised
    header: str  # as written ("preamble" / "full report" / "last_paragraph" for the synthetic ones)
    text: str  # raw text, layout kept
    start: int  # character offset of the text in the report


@dataclass
class ParsedReport:
    sections: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(REPORT_SECTIONS))
    has_addendum: bool = False
    addendum: str | None = None
    last_paragraph: str | None = None
    conclusion: str | None = None  # the reference's single "conclusion" text: impression > findings > ...
    rule: str = "sections"  # "sections", "custom-section" or "custom-span"
    unknown_headers: list[str] = field(default_factory=list)


def normalise_header(header: str) -> str:
    name = header.lower().strip()
    r = rules()
    if name in r.header_names:
        return r.header_names[name]
    for main in r.main_sections:
        if main in name:
            return main
    return "findings" if r.findings_like.search(name) else name


def split_sections(text: str) -> list[Section]:
    """The report as (normalised name, raw text) sections, before empty or duplicate sections are resolved."""
    first = _HEADER.search(text)
    if first is None:
        return [Section("full report", "full report", text, 0)]
    out = [Section("preamble", "preamble", text[: first.start(1)], 0)]
    match = first
    while match is not None:
        body = match.end()
        # (the reference resumes its search at the end of the header's line; every header starts with a line
        # break, so resuming at the body finds the same one)
        following = _HEADER.search(text, body)
        end = following.start() if following else len(text)
        out.append(Section(normalise_header(match.group(1)), match.group(1), text[body:end], body))
        match = following
    return out


def resolve_sections(sections: list[Section]) -> list[Section]:
    """Drop empty findings/impression; add the last paragraph when neither is left."""
    kept = [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]
    if not any(s.name in ("findings", "impression") for s in kept):
        tail = kept[-1]
        head, sep, rest = tail.text.partition(_PARAGRAPH)
        if sep:
            kept[-1] = Section(tail.name, tail.header, head, tail.start)
            kept.append(Section("last_paragraph", "last_paragraph", rest, tail.start + len(head)))
    return kept


def last_of(sections: list[Section], name: str) -> Section | None:
    for s in reversed(sections):
        if s.name == name:
            return s
    return None


def clean_text(text: str | None) -> str | None:
    """Unwrap the 79-column lines and collapse whitespace; empty -> None."""
    if text is None:
        return None
    cleaned = _SPACES.sub(" ", text).strip()
    return cleaned or None


def split_addendum(text: str) -> tuple[str | None, str]:
    """Addenda sit above a line of underscores; the original report is below the last such line. A wet read
    sits there too: only text that calls itself an addendum counts as one."""
    found = list(_ADDENDUM_RULE.finditer(text))
    if not found:
        return None, text
    last = found[-1]
    above = text[: last.start()]
    if "ADDENDUM" not in above.upper():
        return None, text
    return clean_text(above), text[last.end() :]


def study_key(study_id: str | None) -> str | None:
    """MIMIC-CXR study ids as the per-study rules name them ("s50913680")."""
    if not study_id:
        return None
    sid = str(study_id)
    return sid if sid.startswith("s") else f"s{sid}"


def in_mimic_layout(text: str) -> bool:
    return all(line.startswith(" ") for line in text.split("\n") if line.strip())


def to_mimic_layout(text: str) -> str:
    """Text whose lines do not all start with a space, re-indented so a header at a line start is found."""
    if in_mimic_layout(text):
        return text
    return "\n" + "\n".join(" " + line for line in text.split("\n"))


def parse_report(text: str, study_id: str | None = None) -> ParsedReport:
    """Sections of one report. `study_id` (MIMIC-CXR only) enables the per-study corrections."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as Python's text mode reads the file
    if study_id is None:  # a MIMIC-CXR file is parsed exactly as written, stray unindented lines included
        text = to_mimic_layout(text)
    addendum, _ = split_addendum(text)
    parsed = ParsedReport(has_addendum=addendum is not None, addendum=addendum)
    r = rules()
    key = study_key(study_id)
    raw = split_sections(text)
    sections = resolve_sections(raw)
    known = set(r.header_names.values()) | set(REPORT_SECTIONS)
    parsed.unknown_headers = [
        s.header.strip() for s in raw if s.name not in known and s.name not in ("full report", "preamble")
    ]
    for name in REPORT_SECTIONS:
        if name in ("findings", "impression"):
            hit = last_of(sections, name)
            parsed.sections[name] = clean_text(hit.text) if hit else None
        else:  # extras: the last section of the name that has text
            texts = [clean_text(s.text) for s in sections if s.name == name]
            parsed.sections[name] = next((t for t in reversed(texts) if t), None)
    tail = last_of(sections, "last_paragraph")
    parsed.last_paragraph = clean_text(tail.text) if tail else None

    if key in r.custom_span:  # a hand-picked span of the file is the conclusion
        start, end = r.custom_span[key]
        parsed.rule = "custom-span"
        parsed.sections["findings"], parsed.last_paragraph = None, None
        parsed.sections["impression"] = parsed.conclusion = clean_text(text[start:end])
        return parsed
    if key in r.custom_section and last_of(sections, r.custom_section[key]) is not None:
        parsed.rule = "custom-section"
        conclusion = clean_text(last_of(sections, r.custom_section[key]).text)
        parsed.sections["findings"], parsed.last_paragraph = None, None
        parsed.sections["impression"] = parsed.conclusion = conclusion
        return parsed
    for name in ("impression", "findings", "last_paragraph", "comparison"):
        hit = last_of(sections, name)
        if hit is not None:
            parsed.conclusion = clean_text(hit.text)
            break
    return parsed
