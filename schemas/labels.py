"""The 14 CheXpert observations, in the column order MIMIC-CXR's label files use."""

from __future__ import annotations

import re

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# The five conditions LLaVA-Rad's F1-CheXbert-5 averages over.
FIVE_CONDITIONS: tuple[str, ...] = (
    "Cardiomegaly",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pleural Effusion",
)

# Encoding of a label value: 1 positive, 0 negative, -1 uncertain, None not mentioned.
LABEL_VALUES: frozenset[int] = frozenset({1, 0, -1})


def label_column(name: str) -> str:
    """Manifest column for a CheXpert observation: 'Lung Opacity' -> 'label_lung_opacity'."""
    return "label_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


LABEL_COLUMNS: tuple[str, ...] = tuple(label_column(n) for n in CHEXPERT_LABELS)
