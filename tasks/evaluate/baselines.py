"""Baselines every evaluation is scored against, none of which needs training: what a report generator has to
beat before anyone may say it reads the images.

- `image_blind`: the best constant report. Among every constant label vector the rule-based labeler can read
  back (any set of the 14 CheXpert observations stated present; "No Finding" exactly when no pathology is),
  the one that maximises the target label metric (rule_f1_micro_14 unless told) on the TRAINING split's
  references, written as text through the same labeler's vocabulary (one sentence per observation, read back
  and checked) and given as the prediction for every test study. Micro label F1 rewards naming findings, so
  on data where findings are common this constant is a strong competitor (docs/metrics.md, baselines).
- `majority_report`: the training split's most frequent reference text, given for every test study.
- the shuffle control is a trained variant, not a baseline computed here: `cxrflow demo` and the report put
  it beside these (tasks/evaluate/learning.py).

Both are scored on the test references with the same bootstrap resamples as the model, on the metrics that
need no model weights or LLM (lexical, rule-based label F1, per-finding sensitivity / specificity / balanced
accuracy): `metrics.json` carries them under `baselines`.
"""

from __future__ import annotations

import itertools
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from schemas.evaluation import BaselineResult
from schemas.labels import CHEXPERT_LABELS
from tasks.evaluate.clinical import label_columns
from tasks.evaluate.labeler import POSITIVE, label_report, label_reports
from tasks.evaluate.resampling import MetricSpec, score

TARGET_METRIC = "rule_f1_micro_14"
NO_FINDING = "No Finding"
# One sentence per observation that tasks/evaluate/labeler.py reads as positive for it and nothing else
# (tests/test_baselines.py checks each). "No Finding" is no sentence: the labeler sets it when no pathology is
# stated, so the empty constant is written as the usual normal impression.
POSITIVE_SENTENCES: dict[str, str] = {
    "Atelectasis": "Bibasilar atelectasis.",
    "Cardiomegaly": "Cardiomegaly.",
    "Consolidation": "Focal consolidation.",
    "Edema": "Pulmonary edema.",
    "Enlarged Cardiomediastinum": "Widened mediastinum.",
    "Fracture": "Rib fracture.",
    "Lung Lesion": "Pulmonary nodule.",
    "Lung Opacity": "Lung opacity.",
    "Pleural Effusion": "Pleural effusion.",
    "Pleural Other": "Pleural thickening.",
    "Pneumonia": "Pneumonia.",
    "Pneumothorax": "Pneumothorax.",
    "Support Devices": "Endotracheal tube in place.",
}
NORMAL_TEXT = "No acute cardiopulmonary process."
# Above this many candidate observations the exhaustive search (2^k constants) gives way to a greedy one.
EXHAUSTIVE_MAX = 14


def training_reports(shards: Path | str, split: str = "train") -> list[str]:
    """The reference text (`txt` member) of every sample of a shard split, images left unread."""
    from tasks.evaluate.inference import shard_paths

    texts = []
    for path in shard_paths(Path(shards), split):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".txt"):
                    f = tar.extractfile(member)
                    if f is not None:
                        text = f.read().decode("utf-8", errors="replace")
                        if text.strip():
                            texts.append(text)
    return texts


def constant_text(present: Sequence[str]) -> str:
    """The report stating exactly the `present` observations (in CheXpert order)."""
    said = [POSITIVE_SENTENCES[o] for o in CHEXPERT_LABELS if o in present and o in POSITIVE_SENTENCES]
    return " ".join(said) if said else NORMAL_TEXT


def _pred_columns(text: str, n: int) -> dict[str, np.ndarray]:
    """The rule-based label columns of `text` given as the prediction for n reports."""
    return {k: np.repeat(v, n) for k, v in label_columns("rule", "pred", [label_report(text)]).items()}


def best_constant(train_refs: Sequence[str], target: MetricSpec) -> tuple[str, float]:
    """(text, target value on the training references) of the constant report that maximises `target`.
    Candidates: observations positive in at least one training reference (naming one that never is only adds
    false positives). Every candidate is scored as the labeler reads its text back, so what is optimised is
    what the evaluation will score."""
    n = len(train_refs)
    ref_cols = label_columns("rule", "ref", label_reports(list(train_refs)))
    seen = [o for o in POSITIVE_SENTENCES if (ref_cols[_ref_col(o)] == POSITIVE).any()]

    def value(present: Sequence[str]) -> float:
        return float(target.aggregate({**ref_cols, **_pred_columns(constant_text(present), n)}))

    if len(seen) <= EXHAUSTIVE_MAX:
        subsets = (c for k in range(len(seen) + 1) for c in itertools.combinations(seen, k))
        best = max(subsets, key=value)  # first maximum in a fixed order: deterministic
    else:  # greedy forward selection: add the observation that helps most until none does
        best, current = (), value(())
        while True:
            gains = [(value((*best, o)), o) for o in seen if o not in best]
            if not gains or max(gains)[0] <= current:
                break
            current, pick = max(gains)
            best = (*best, pick)
    return constant_text(best), value(best)


def _ref_col(obs: str) -> str:
    from schemas.labels import label_column

    return f"rule_ref_{label_column(obs)}"


def majority_report(train_refs: Sequence[str]) -> tuple[str, int]:
    """(the most frequent training reference, how many times it occurs); whitespace is normalised, ties go to
    the first seen."""
    counts = Counter(" ".join(t.split()) for t in train_refs)
    text, count = counts.most_common(1)[0]
    return text, count


def score_constant(
    text: str, refs: Sequence[str], ref_cols: dict[str, np.ndarray], specs: Sequence[MetricSpec],
    idx: np.ndarray | None,
) -> dict:
    """Every metric of `specs` for `text` given as the prediction for every reference (same resamples)."""
    from tasks.evaluate.lexical import lexical_columns

    n = len(refs)
    cols = {**ref_cols, **lexical_columns(list(refs), [text] * n), **_pred_columns(text, n)}
    return {s.name: score(s, cols, idx) for s in specs if all(c in cols for c in s.columns)}


def compute_baselines(
    train_refs: Sequence[str], refs: Sequence[str], ref_cols: dict[str, np.ndarray],
    specs: Sequence[MetricSpec], idx: np.ndarray | None, target: str = TARGET_METRIC,
) -> dict[str, BaselineResult]:
    """The image-blind and majority-report baselines scored on the test references `refs` (whose rule-based
    label columns are `ref_cols`), or {} without training references."""
    if not train_refs:
        return {}
    by_name = {s.name: s for s in specs}
    text, train_value = best_constant(train_refs, by_name[target])
    present = [o for o, v in label_report(text).items() if v == POSITIVE]
    major, count = majority_report(train_refs)
    return {
        "image_blind": BaselineResult(
            description=f"the constant report maximising {target} on the {len(train_refs)} training references "
            f"({train_value:.2f} there), stating {', '.join(present) or 'nothing'}; the same text for every test "
            "study",
            prediction=text,
            metrics=score_constant(text, refs, ref_cols, specs, idx),
        ),
        "majority_report": BaselineResult(
            description=f"the most frequent training reference ({count} of {len(train_refs)}); the same text "
            "for every test study",
            prediction=major,
            metrics=score_constant(major, refs, ref_cols, specs, idx),
        ),
    }
