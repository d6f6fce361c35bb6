"""The section parser against the MIT-LCP mimic-cxr parser's behaviour (tests/mimic_reference.py re-states it).

Parity is measured on whitespace-collapsed text: cxrflow stores sections unwrapped (one line, single spaces),
the reference keeps the file's line layout; the words and their order must be identical.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from mimic_reference import reference_outputs

from fixtures.mimic_cxr import write_mimic_cxr
from fixtures.reports import FINDINGS_AND_IMPRESSION, VARIANTS, VIEW_HEADERS, make_report
from schemas.labels import CHEXPERT_LABELS
from tasks.reports.sections import in_mimic_layout, normalise_header, parse_report, rules


def _c(text: str | None) -> str | None:
    return " ".join(text.split()) or None if text is not None else None


def _agrees(text: str, study: str) -> bool:
    mine = parse_report(text, study)
    ref = reference_outputs(text, f"s{study}")
    if _c(ref["conclusion"]) != mine.conclusion:
        return False
    row = ref["sectioned"]
    if row is None:  # per-study rule: the reference writes no findings for the study
        return mine.sections["findings"] is None and mine.sections["impression"] == _c(ref["conclusion"])
    return (_c(row["findings"]), _c(row["impression"]), _c(row["last_paragraph"])) == (
        mine.sections["findings"],
        mine.sections["impression"],
        mine.last_paragraph,
    )


def _corpus() -> list[tuple[str, str, str]]:
    """(variant, study id, text): every shape, with and without an addendum, several seeds."""
    out = []
    for variant in VARIANTS:
        for addendum in (False, True):
            for seed in range(8):
                labels = {n: random.Random(seed).choice([1, 0, -1, None]) for n in CHEXPERT_LABELS}
                r = make_report(
                    labels, random.Random(seed * 31 + addendum), variant=variant, addendum=addendum
                )
                out.append((variant, f"5{seed:07d}", r.text))
    return out


def test_parity_with_the_reference_on_every_generated_report_shape():
    corpus = _corpus()
    equal = sum(_agrees(text, study) for _, study, text in corpus)
    assert {v for v, _, _ in corpus} == set(VARIANTS)
    assert equal == len(corpus), f"{equal} of {len(corpus)} reports equal"


def test_parity_on_a_fixture_archive_that_holds_every_shape(tmp_path):
    truth = write_mimic_cxr(tmp_path, studies=len(VARIANTS), seed=3, defects=False)
    assert {r.variant for r in truth.reports.values()} == set(VARIANTS)
    for study, report in truth.reports.items():
        assert _agrees(report.text, study), report.text
        assert parse_report(report.text, study).sections == report.expected, report.text


def _report(*lines: str) -> str:
    return "\n".join([" " * 33 + "FINAL REPORT", *lines]) + "\n"


@pytest.mark.parametrize("header", VIEW_HEADERS + ["CHEST, PA LATERAL", "FRONTAL UPRIGHT PORTABLE"])
def test_view_like_headers_hold_findings(header):
    text = _report(" INDICATION:  Cough.", " ", f" {header}:  The lungs are clear.", " ")
    parsed = parse_report(text)
    assert parsed.sections["findings"] == "The lungs are clear."
    assert _agrees(text, "50000001")


@pytest.mark.parametrize("header", FINDINGS_AND_IMPRESSION)
def test_findings_and_impression_headers_are_impression(header):
    text = _report(f" {header}:  No acute process.", " ")
    parsed = parse_report(text)
    assert (parsed.sections["findings"], parsed.sections["impression"]) == (None, "No acute process.")


def test_the_last_findings_wins_and_empty_ones_are_dropped():
    text = _report(
        " FINDINGS:  First read.",
        " ",
        " FINDINGS:  Final read.",
        " ",
        " FINDINGS: ",
        " ",
        " IMPRESSION:  Normal.",
        " ",
        " IMPRESSION: ",
        " ",
    )
    parsed = parse_report(text)
    assert (parsed.sections["findings"], parsed.sections["impression"]) == ("Final read.", "Normal.")


def test_a_header_on_the_line_after_a_bare_header_stays_in_its_text():
    kept = parse_report(_report(" FINDINGS:", " PA AND LATERAL VIEWS OF THE CHEST:", " Clear lungs.", " "))
    assert kept.sections["findings"] == "PA AND LATERAL VIEWS OF THE CHEST: Clear lungs."
    dropped = parse_report(
        _report(" FINDINGS: ", " PA AND LATERAL VIEWS OF THE CHEST: ", " Clear lungs.", " ")
    )
    assert dropped.sections["findings"] == "Clear lungs."


@pytest.mark.parametrize(
    ("header", "section"),
    [
        ("FINDNGS", "findings"),
        ("FINIDNGS", "findings"),
        ("IMPRESSON", "impression"),
        ("IMPESSION", "impression"),
        ("COMPARISION", "comparison"),
        ("NDICATION", "impression"),
        ("WETREAD", "wet read"),
        ("CLINICAL INFORMATION", "history"),
        ("FINAL IMPRESSION", "impression"),
        ("RIGHT RIBS", "findings"),
    ],
)
def test_header_normalisation(header, section):
    assert normalise_header(header) == section


def test_wet_read_preamble_and_addendum_leave_findings_alone():
    text = (
        " WET READ: ___ ___ 9:41 PM\n   Possible effusion.\n "
        + "_" * 78
        + "\n"
        + _report(" FINDINGS:  Small left effusion.", " ", " IMPRESSION:  Effusion.", " ")
    )
    parsed = parse_report(text)
    assert (parsed.sections["findings"], parsed.has_addendum) == ("Small left effusion.", False)
    report = make_report({}, random.Random(0), variant="standard", addendum=True)
    parsed = parse_report(report.text)
    assert parsed.has_addendum and "discussed with Dr." in parsed.addendum
    assert parsed.sections["findings"] == report.expected["findings"]


def test_reports_without_headers_get_a_last_paragraph_and_no_findings():
    text = _report(" Portable chest radiograph.", " ", " Lungs are clear.", " No effusion.")
    parsed = parse_report(text)
    assert parsed.sections["findings"] is None and parsed.last_paragraph == "Lungs are clear. No effusion."
    assert parsed.conclusion == parsed.last_paragraph and _agrees(text, "50000002")


def test_per_study_rules_come_from_the_data_file():
    data = json.loads((Path(__file__).parents[1] / "tasks/reports/mimic_cxr_sections.json").read_text())
    # the reference's table sizes: 58 header spellings, 18 view words, 23 + 31 per-study rules
    assert (len(data["header_names"]), len(data["findings_like"])) == (58, 18)
    assert (len(data["custom_section"]), len(data["custom_span"])) == (23, 31)
    r = rules()
    span_study = next(s for s, (a, b) in r.custom_span.items() if b > a)
    a, b = r.custom_span[span_study]
    text = _report(" FINDINGS:  " + "x" * 10, " ") + " The conclusion is here." * 40
    parsed = parse_report(text, span_study[1:])
    assert (parsed.rule, parsed.sections["findings"]) == ("custom-span", None)
    assert parsed.sections["impression"] == " ".join(text[a:b].split())
    assert _agrees(text, span_study[1:])

    section_study, name = next((s, n) for s, n in r.custom_section.items() if n == "recommendations")
    text = _report(" FINDINGS:  Clear lungs.", " ", " RECOMMENDATION(S):  Follow-up CT.", " ")
    parsed = parse_report(text, section_study[1:])
    assert (parsed.rule, parsed.sections["impression"], parsed.sections["findings"]) == (
        "custom-section",
        "Follow-up CT.",
        None,
    )
    assert _agrees(text, section_study[1:])
    # the same report under another study id is parsed as usual
    assert parse_report(text, "50000003").sections["findings"] == "Clear lungs."


def test_parity_on_random_header_soup():
    """Random mixtures of headers, colons, line breaks and blank lines: the edge cases of the header rule."""
    pieces = (
        "\n |  |\n  |FINDINGS|IMPRESSION|:|: |:\n |CHEST, TWO VIEWS|text.|\n \n |FINDINGS AND IMPRESSION|"
    )
    pieces += "WET READ|\t|A|(PA)|COMPARISON|Lungs clear"
    parts = pieces.split("|")
    rng = random.Random(7)
    texts = [" " + "".join(rng.choice(parts) for _ in range(rng.randint(1, 40))) for _ in range(2000)]
    assert all(in_mimic_layout(t) for t in texts)  # the reference's domain: every line starts with a space
    assert sum(_agrees(t, "50000004") for t in texts) == len(texts)


def test_reports_outside_the_mimic_layout_are_parsed_too():
    text = "EXAMINATION: CHEST\nINDICATION: Cough.\nFINDINGS:\nSmall effusion.\n\nIMPRESSION:\nEffusion."
    parsed = parse_report(text)
    assert (parsed.sections["indication"], parsed.sections["findings"], parsed.sections["impression"]) == (
        "Cough.",
        "Small effusion.",
        "Effusion.",
    )


def test_a_mimic_cxr_report_is_parsed_as_written_even_with_an_unindented_line():
    """The reference parses a MIMIC-CXR file as it is: a stray line without the one-space indent must not
    make cxrflow re-indent the report (that would turn "IMPRESSION:" at a line start into a header, hide the
    blank-line paragraph break from last_paragraph, and shift the per-study character spans). Expected values
    derived by hand from the reference's procedure."""
    text = _report(
        " INDICATION:  Cough.", "IMPRESSION: not a header here", " ", " FINDINGS:  Clear lungs.", " "
    )
    parsed = parse_report(text, "51234567")
    assert (parsed.sections["findings"], parsed.sections["impression"]) == ("Clear lungs.", None)
    assert parsed.sections["indication"] == "Cough. IMPRESSION: not a header here"

    text = _report(" EXAMINATION:  Chest.", "wrapped", " ", " Lungs clear.", " ", " Normal heart.")
    parsed = parse_report(text, "51234567")
    assert parsed.last_paragraph == "Lungs clear. Normal heart." == parsed.conclusion
    assert parsed.sections["examination"] == "Chest. wrapped"

    span_study, (a, b) = next((s, ab) for s, ab in rules().custom_span.items() if ab[1] > ab[0])
    text = _report(" FINDINGS:  " + "x" * 10, "unindented", " ") + " The conclusion is here." * 40
    assert parse_report(text, span_study[1:]).sections["impression"] == " ".join(text[a:b].split())
