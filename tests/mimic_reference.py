"""Test-only re-statement of the MIT-LCP mimic-cxr section parser's procedure (txt/section_parser.py and
txt/create_section_files.py at commit 31901464793d0bb23835092f05bd1aba6af7baff, MIT licence), written for the
parity test as a step-by-step transcription of that procedure, independent of tasks/reports/sections.py
(which is organised differently). It shares only the data file (header table, view words, per-study rules).

Why a re-statement and not the reference itself: the suite runs without network, and the project vendors no
third-party code; the reference's behaviour is small enough to state here and review line by line against it.

`reference_outputs(text, study)` returns what the reference writes for one report file:
- `sectioned`: the row of mimic_cxr_sectioned.csv (impression, findings, last_paragraph, comparison; each
  `.strip()`-ed, None where the section is absent), or None for studies handled by a per-study rule (the
  reference skips those before it writes that row);
- `conclusion`: the study's text in the mimic_cxr_NN.csv files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_DATA = json.loads((Path(__file__).parents[1] / "tasks" / "reports" / "mimic_cxr_sections.json").read_text())
_PATTERN = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)


def _normalise(names: list[str]) -> list[str]:
    table = _DATA["header_names"]
    view_words = re.compile("({})".format("|".join(_DATA["findings_like"])))
    out = [n.lower().strip() for n in names]
    for i, name in enumerate(out):
        if name in table:
            out[i] = table[name]
            continue
        matched = False
        for main in _DATA["main_sections"]:
            if main in name:
                out[i] = main
                matched = True
                break
        if matched:
            continue
        if view_words.search(name) is not None:
            out[i] = "findings"
    return out


def section_text(text: str) -> tuple[list[str], list[str], list[int]]:
    texts: list[str] = []
    names: list[str] = []
    starts: list[int] = []
    hit = _PATTERN.search(text, 0)
    if hit:
        texts.append(text[0 : hit.start(1)])
        names.append("preamble")
        starts.append(0)
        while hit:
            current = hit.group(1).lower()
            begin = hit.end()
            skip = text[begin:].find("\n")
            if skip == -1:
                skip = 0
            hit = _PATTERN.search(text, begin + skip)
            finish = len(text) if hit is None else hit.start()
            texts.append(text[begin:finish])
            names.append(current)
            starts.append(begin)
    else:
        texts.append(text)
        names.append("full report")
        starts.append(0)
    names = _normalise(names)
    for i in reversed(range(len(names))):
        if names[i] in ("impression", "findings") and texts[i].strip() == "":
            texts.pop(i)
            names.pop(i)
            starts.pop(i)
    if "impression" not in names and "findings" not in names:
        if "\n \n" in texts[-1]:
            texts.append("\n \n".join(texts[-1].split("\n \n")[1:]))
            texts[-2] = texts[-2].split("\n \n")[0]
            names.append("last_paragraph")
            starts.append(starts[-1] + len(texts[-2]))
    return texts, names, starts


def _rindex(items: list[str], value: str) -> int:
    return len(items) - items[::-1].index(value) - 1


def reference_outputs(text: str, study: str) -> dict:
    """`study` as the reference names it: the file stem, e.g. "s50913680"."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # the reference reads in text mode
    if study in _DATA["custom_span"]:
        a, b = _DATA["custom_span"][study]
        return {"sectioned": None, "conclusion": text[a:b]}
    texts, names, _ = section_text(text)
    if study in _DATA["custom_section"]:
        return {
            "sectioned": None,
            "conclusion": texts[_rindex(names, _DATA["custom_section"][study])].strip(),
        }
    conclusion = ""
    for name in ("impression", "findings", "last_paragraph", "comparison"):
        if name in names:
            conclusion = texts[_rindex(names, name)].strip()
            break
    row = {}
    for name in ("impression", "findings", "last_paragraph", "comparison"):
        row[name] = texts[_rindex(names, name)].strip() if name in names else None
    return {"sectioned": row, "conclusion": conclusion}
