"""The rule-based labeler on positive, negated and uncertain sentences for each of the 14 observations."""

from __future__ import annotations

import pytest

from schemas.labels import CHEXPERT_LABELS
from tasks.evaluate.labeler import label_report

# observation -> (positive sentence, negated sentence, uncertain sentence)
CASES: dict[str, tuple[str, str, str]] = {
    "Atelectasis": (
        "Bibasilar atelectasis.",
        "No atelectasis.",
        "Left basilar opacity may reflect atelectasis.",
    ),
    "Cardiomegaly": (
        "The heart is moderately enlarged.",
        "Heart size is normal.",
        "Possible mild cardiomegaly.",
    ),
    "Consolidation": (
        "Right lower lobe consolidation is present.",
        "There is no focal consolidation.",
        "Consolidation cannot be excluded.",
    ),
    "Edema": (
        "Moderate pulmonary edema.",
        "No pulmonary edema.",
        "Findings may represent mild pulmonary edema.",
    ),
    "Enlarged Cardiomediastinum": (
        "The mediastinum is widened.",
        "The cardiomediastinal silhouette is normal.",
        "The mediastinum may be widened.",
    ),
    "Fracture": (
        "Acute fracture of the left seventh rib.",
        "No acute displaced fracture.",
        "Possible rib fracture.",
    ),
    "Lung Lesion": (
        "A 2 cm nodule is seen in the right upper lobe.",
        "No suspicious pulmonary nodules.",
        "Questionable nodule in the left lung.",
    ),
    "Lung Opacity": (
        "Patchy opacity in the left lower lobe.",
        "The lungs are clear.",
        "Possible subtle opacity at the right base.",
    ),
    "Pleural Effusion": (
        "Small left pleural effusion.",
        "There is no pleural effusion or pneumothorax.",
        "A small right effusion is not excluded.",
    ),
    "Pleural Other": (
        "Left apical pleural thickening.",
        "No pleural thickening.",
        "Possible pleural plaques on the right.",
    ),
    "Pneumonia": (
        "Right lower lobe pneumonia.",
        "No evidence of pneumonia.",
        "Opacity concerning for pneumonia.",
    ),
    "Pneumothorax": (
        "Large right pneumothorax.",
        "Pneumothorax is no longer seen.",
        "Questionable small apical pneumothorax.",
    ),
    "Support Devices": (
        "The endotracheal tube terminates 4 cm above the carina.",
        "The nasogastric tube has been removed.",
        "There may be a PICC line in the right arm.",
    ),
}


@pytest.mark.parametrize("observation", [o for o in CHEXPERT_LABELS if o != "No Finding"])
@pytest.mark.parametrize("kind,expected", [("positive", 1), ("negated", 0), ("uncertain", -1)])
def test_observation_status(observation, kind, expected):
    sentence = CASES[observation][("positive", "negated", "uncertain").index(kind)]
    assert label_report(sentence)[observation] == expected, sentence


@pytest.mark.parametrize(
    "text,expected",
    [
        ("No acute cardiopulmonary process. Heart size is normal. No pleural effusion.", 1),  # positive
        ("There is a large right pleural effusion.", None),  # a positive finding: not "No Finding"
        ("Possible left lower lobe pneumonia.", None),  # an uncertain finding also rules it out
        ("Support devices in standard position. Lungs are clear.", 1),  # devices are not pathology
    ],
)
def test_no_finding(text, expected):
    assert label_report(text)["No Finding"] == expected


def test_negation_scope_covers_lists_and_stops_at_terminators():
    labels = label_report(
        "No focal consolidation, pleural effusion, or pneumothorax, but there is mild edema."
    )
    assert labels["Consolidation"] == 0
    assert labels["Pleural Effusion"] == 0
    assert labels["Pneumothorax"] == 0
    assert labels["Edema"] == 1


def test_pseudo_negation_and_aggregation():
    labels = label_report(
        "No change in the small left pleural effusion. No pneumothorax. Pneumothorax on the right."
    )
    assert labels["Pleural Effusion"] == 1  # "no change in" is not a negation
    assert labels["Pneumothorax"] == 1  # a positive mention wins over a negated one
    assert labels["Fracture"] is None  # not mentioned
    assert label_report("Pericardial effusion.")["Pleural Effusion"] is None


def test_every_report_gets_all_fourteen_keys():
    assert list(label_report("")) == list(CHEXPERT_LABELS)
