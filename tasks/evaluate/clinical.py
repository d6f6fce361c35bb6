"""Label F1 between reference and predicted report labels, the way F1-CheXbert is computed.

Positive = 1; everything else (0, -1, not mentioned) is negative. The uncertain-as-positive variant maps -1
to positive on both sides. Micro and macro F1 over the 14 observations and over the 5 conditions. A label
with no positives in either reference or prediction has F1 = 0 (sklearn's default `zero_division`).
The same code scores any labeler; metric names carry the labeler ("rule" here, "chexbert" when CheXbert
weights are configured) so rule-based label F1 is never mistaken for F1-CheXbert.
"""

from __future__ import annotations

import numpy as np

from schemas.labels import CHEXPERT_LABELS, FIVE_CONDITIONS, label_column
from tasks.evaluate.labeler import Labels
from tasks.evaluate.resampling import Columns, MetricSpec

# Label value stored per report: 1, 0, -1, or this for "not mentioned" (parquet-friendly int8).
NOT_MENTIONED = -9


def label_columns(prefix: str, side: str, labels: list[Labels]) -> dict[str, np.ndarray]:
    """Per-report int8 columns `{prefix}_{side}_{label_xxx}` (side: ref|pred)."""
    return {
        _col(prefix, side, obs): np.array(
            [NOT_MENTIONED if lab[obs] is None else lab[obs] for lab in labels], dtype=np.int8
        )
        for obs in CHEXPERT_LABELS
    }


def _col(prefix: str, side: str, obs: str) -> str:
    return f"{prefix}_{side}_{label_column(obs)}"


def _f1_aggregate(prefix: str, observations: tuple[str, ...], average: str, uncertain_positive: bool):
    positive = (1, -1) if uncertain_positive else (1,)
    ref_cols = [_col(prefix, "ref", o) for o in observations]
    pred_cols = [_col(prefix, "pred", o) for o in observations]

    def aggregate(cols: Columns) -> float:
        ref = np.isin(np.stack([cols[c] for c in ref_cols], axis=1), positive)
        pred = np.isin(np.stack([cols[c] for c in pred_cols], axis=1), positive)
        # Hand-written instead of sklearn.f1_score: this runs 500x per metric in the bootstrap.
        tp = (ref & pred).sum(axis=0)
        fp = (~ref & pred).sum(axis=0)
        fn = (ref & ~pred).sum(axis=0)
        if average == "micro":
            denom = 2 * tp.sum() + fp.sum() + fn.sum()
            return float(200.0 * tp.sum() / denom) if denom else 0.0
        denom = 2 * tp + fp + fn
        per_label = np.divide(200.0 * tp, denom, out=np.zeros(len(observations)), where=denom > 0)
        return float(per_label.mean())

    return aggregate, tuple(ref_cols + pred_cols)


def f1_specs(
    prefix: str = "rule", description: str = "rule-based CheXpert-style labeler"
) -> list[MetricSpec]:
    specs = []
    for uncertain_positive in (False, True):
        for group, observations in (("14", CHEXPERT_LABELS), ("5", FIVE_CONDITIONS)):
            for average in ("micro", "macro"):
                agg, cols = _f1_aggregate(prefix, tuple(observations), average, uncertain_positive)
                suffix = "_uncertain_positive" if uncertain_positive else ""
                specs.append(
                    MetricSpec(
                        f"{prefix}_f1_{average}_{group}{suffix}",
                        cols,
                        agg,
                        f"{average}-F1 over {group} observations, labels from the {description}; positive = 1"
                        + (" or -1 (uncertain counted positive)" if uncertain_positive else ""),
                    )
                )
    return specs
