"""The LLaVA-Rad paper's published figures the report sets beside cxrflow's numbers (docs/paper-figures.md
says where each comes from). They are the paper's, on the real MIMIC-CXR test split with its 7B model and
CheXbert / RadGraph: a fixture run is not expected to come near them, and rule-based label F1 is not F1-CheXbert,
so only metrics computed the paper's way get a figure."""

from __future__ import annotations

CITATION = ("Chaves et al., \"Towards a clinically accessible radiology foundation model: open-access and "
            "lightweight, with automated evaluation\" (LLaVA-Rad), Nature Communications 16:3108 (2025)")
SOURCE = "LLaVA-Rad 7B, MIMIC-CXR test split, Findings (the paper's results table; docs/paper-figures.md)"

# metric name in metrics.json -> the paper's figure as printed (a range where the paper's tables differ)
REPORT_GENERATION: dict[str, str] = {
    "chexbert_f1_micro_14": "57.3",
    "chexbert_f1_macro_14": "39.5",
    "radgraph_f1_partial": "29.4",
    "bleu_4": "15.4–16.1",
    "rouge_l": "30.6–30.8",
}


def paper_figure(metric: str) -> str | None:
    return REPORT_GENERATION.get(metric)
