"""Lexical metrics exactly as the reference libraries compute them.

ROUGE-L: rouge-score's rougeL F-measure per report (no stemming), averaged over reports.
BLEU-1 / BLEU-4: sacrebleu corpus BLEU (default 13a tokenizer, exp smoothing), one reference per report.
Per-report sacrebleu sufficient statistics are kept so that bootstrap resamples and paired tests recompute
the true corpus score (sacrebleu's own bootstrap does the same) instead of averaging sentence BLEU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.evaluation import MetricResult
from tasks.evaluate.resampling import Columns, MetricSpec

BLEU_ORDER = 4
BLEU_STAT_COLUMNS: tuple[str, ...] = (
    "bleu_sys_len",
    "bleu_ref_len",
    *(f"bleu_correct_{k}" for k in range(1, BLEU_ORDER + 1)),
    *(f"bleu_total_{k}" for k in range(1, BLEU_ORDER + 1)),
)


def rouge_l_per_report(references: Sequence[str], predictions: Sequence[str]) -> np.ndarray:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [
            scorer.score(ref, pred)["rougeL"].fmeasure
            for ref, pred in zip(references, predictions, strict=True)
        ],
        dtype=float,
    )


def _bleu(order: int):
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=order)


def bleu_stats_per_report(references: Sequence[str], predictions: Sequence[str]) -> dict[str, np.ndarray]:
    """sacrebleu's segment statistics [sys_len, ref_len, correct_1..4, total_1..4] per report.

    Uses sacrebleu's `_extract_corpus_statistics` (the hook its own significance tests use) because the
    public API only returns the aggregated score.
    """
    if len(references) != len(predictions):
        raise ValueError("references and predictions differ in length")
    if not references:
        return {c: np.zeros(0, dtype=np.int64) for c in BLEU_STAT_COLUMNS}
    stats = np.asarray(_bleu(BLEU_ORDER)._extract_corpus_statistics(list(predictions), [list(references)]))
    return {c: stats[:, i].astype(np.int64) for i, c in enumerate(BLEU_STAT_COLUMNS)}


def _bleu_aggregate(order: int):
    metric = _bleu(order)
    keep = [0, 1, *range(2, 2 + order), *range(2 + BLEU_ORDER, 2 + BLEU_ORDER + order)]
    names = [BLEU_STAT_COLUMNS[i] for i in keep]

    def aggregate(cols: Columns) -> float:
        summed = [int(cols[c].sum()) for c in names]
        return float(metric._compute_score_from_stats(summed).score)

    return aggregate


def _mean_times_100(column: str):
    def aggregate(cols: Columns) -> float:
        return float(np.mean(cols[column]) * 100.0)

    return aggregate


def lexical_specs() -> list[MetricSpec]:
    return [
        MetricSpec(
            "rouge_l",
            ("rouge_l",),
            _mean_times_100("rouge_l"),
            "rouge-score rougeL F1, no stemming, mean over reports, x100",
        ),
        MetricSpec(
            "bleu_1",
            BLEU_STAT_COLUMNS,
            _bleu_aggregate(1),
            "sacrebleu corpus BLEU, max_ngram_order=1, 13a tokenizer",
        ),
        MetricSpec(
            "bleu_4",
            BLEU_STAT_COLUMNS,
            _bleu_aggregate(4),
            "sacrebleu corpus BLEU, max_ngram_order=4, 13a tokenizer",
        ),
    ]


def lexical_spec(name: str) -> MetricSpec:
    return next(s for s in lexical_specs() if s.name == name)


def reference_bleu(
    references: Sequence[str], predictions: Sequence[str], order: int, n_bootstrap: int, spec: MetricSpec
) -> MetricResult:
    """BLEU as LLaVA-Rad's evaluation reports it under bootstrap (llava/eval/rrg_eval/run.py, bleu1/bleu4):
    `BLEU(max_ngram_order=order).corpus_score(..., n_bootstrap=N)`, i.e. sacrebleu's own bootstrap (its draw:
    numpy default_rng(SACREBLEU_SEED, default 12345), not the scheme's seed) and its interval: the mean of the
    resampled scores +/- half the span between the 2.5th and 97.5th sorted resample. The reference's "median"
    for BLEU is the corpus score itself, so that is what bootstrap_median holds here."""
    if not references:
        return MetricResult.missing("no reports to score", method=spec.method, unit=spec.unit)
    bleu = _bleu(order)
    res = bleu.corpus_score(list(predictions), [list(references)], n_bootstrap=max(n_bootstrap, 1))
    ci = None
    method = spec.method
    if n_bootstrap > 1:
        ci = (float(res._mean - res._ci), float(res._mean + res._ci))
        method += (
            f"; interval: sacrebleu's bootstrap ({n_bootstrap} resamples, SACREBLEU_SEED {bleu.seed}), mean +/- "
            "half the 2.5-97.5 span; bootstrap_median = the corpus score (the reference's 'median')"
        )
    score = float(res.score)
    return MetricResult(
        value=score, ci=ci, bootstrap_median=score if ci else None, n=len(references), method=method, unit=spec.unit
    )


def lexical_columns(references: Sequence[str], predictions: Sequence[str]) -> dict[str, np.ndarray]:
    cols = {"rouge_l": rouge_l_per_report(references, predictions)}
    cols.update(bleu_stats_per_report(references, predictions))
    return cols
