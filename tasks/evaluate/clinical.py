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


# Per-finding sensitivity, specificity and balanced accuracy (positive = 1, as in label F1). Beside micro/macro F1
# because F1 ignores true negatives: a constant "finding present" gets F1 2p/(1+p) but balanced accuracy 50.
# A rate with no reference of its class (no positive report for sensitivity) is undefined: NaN, which score()
# reports as not computed and leaves out of the bootstrap percentiles.
def _rates(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = ref.sum(axis=0), (~ref).sum(axis=0)
    tp, tn = (ref & pred).sum(axis=0), (~ref & ~pred).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * tp / np.where(pos > 0, pos, np.nan), 100.0 * tn / np.where(neg > 0, neg, np.nan)


def _rate_aggregate(prefix: str, obs: str, kind: str):
    ref_c, pred_c = _col(prefix, "ref", obs), _col(prefix, "pred", obs)

    def aggregate(cols: Columns) -> float:
        sens, spec = _rates(cols[ref_c] == 1, cols[pred_c] == 1)
        return float({"sensitivity": sens, "specificity": spec, "balanced_accuracy": (sens + spec) / 2}[kind])

    return aggregate, (ref_c, pred_c)


def _macro_balanced_accuracy(prefix: str, observations: tuple[str, ...]):
    ref_cols = [_col(prefix, "ref", o) for o in observations]
    pred_cols = [_col(prefix, "pred", o) for o in observations]

    def aggregate(cols: Columns) -> float:
        ref = np.stack([cols[c] for c in ref_cols], axis=1) == 1
        pred = np.stack([cols[c] for c in pred_cols], axis=1) == 1
        sens, spec = _rates(ref, pred)
        ba = (sens + spec) / 2
        return float(np.nanmean(ba)) if np.isfinite(ba).any() else float("nan")

    return aggregate, tuple(ref_cols + pred_cols)


def rate_specs(prefix: str = "rule", description: str = "rule-based CheXpert-style labeler") -> list[MetricSpec]:
    """`{prefix}_{sensitivity|specificity|balanced_accuracy}_{obs}` per observation, and
    `{prefix}_balanced_accuracy_macro_14`: the mean balanced accuracy over the observations whose references
    hold both classes (on a fixture, the findings it draws)."""
    specs = []
    for obs in CHEXPERT_LABELS:
        for kind in ("sensitivity", "specificity", "balanced_accuracy"):
            agg, cols = _rate_aggregate(prefix, obs, kind)
            specs.append(MetricSpec(f"{prefix}_{kind}_{label_column(obs).removeprefix('label_')}", cols, agg,
                                    f"{kind.replace('_', ' ')} for {obs}, labels from the {description}; "
                                    "positive = 1"))
    agg, cols = _macro_balanced_accuracy(prefix, tuple(CHEXPERT_LABELS))
    specs.append(MetricSpec(f"{prefix}_balanced_accuracy_macro_14", cols, agg,
                            f"mean balanced accuracy over the 14 observations whose references hold positives and "
                            f"negatives, labels from the {description}; positive = 1"))
    return specs
