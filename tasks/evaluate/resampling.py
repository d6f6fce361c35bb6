"""Metrics as functions of per-report statistics, so one bootstrap / permutation machinery serves them all.

A corpus-level metric (BLEU, label F1) cannot be averaged over reports, but it can be recomputed from the
per-report sufficient statistics of any resample of reports. Each metric therefore names the per-report
columns it needs and an aggregate over a row selection; bootstrap CIs and paired tests just re-select rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from schemas.evaluation import REFERENCE_SEED as REFERENCE_SEED  # noqa: F401 (re-exported; one definition)
from schemas.evaluation import MetricComparison, MetricResult

Columns = Mapping[str, np.ndarray]
N_BOOTSTRAP = 500
SEED = 12345
# The LLaVA-Rad evaluation code draws its resamples with scipy.stats.bootstrap(random_state=3, n_resamples=500,
# method="percentile"): a legacy numpy RandomState(3).randint(0, n, (500, n)) index matrix (checked equal in
# tests). scheme="reference" reproduces those resamples exactly; see docs/metrics.md.
SCHEMES = ("cxrflow", "reference")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    columns: tuple[str, ...]
    aggregate: Callable[[Columns], float]
    method: str
    unit: str = "percent"


def _select(cols: Columns, names: tuple[str, ...], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {c: cols[c][idx] for c in names}


def bootstrap_indices(
    n: int, n_resamples: int = N_BOOTSTRAP, seed: int = SEED, scheme: str = "cxrflow"
) -> np.ndarray:
    """One (n_resamples, n) index matrix, shared by every metric so their CIs come from the same resamples.
    `reference`: the reference evaluation's draw (every metric there resamples with the same seed, so sharing
    one matrix is what it does too)."""
    if scheme == "reference":
        return np.random.RandomState(seed).randint(0, n, size=(n_resamples, n))
    if scheme != "cxrflow":
        raise ValueError(f"unknown bootstrap scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def score(
    spec: MetricSpec, cols: Columns, indices: np.ndarray | None = None, level: float = 0.95
) -> MetricResult:
    """Value on all reports (the point estimate) plus, over the given resample indices, the percentile CI and
    the median of the resampled values (what the LLaVA-Rad paper's tables report)."""
    n = len(cols[spec.columns[0]])
    if n == 0:
        return MetricResult.missing("no reports to score", method=spec.method, unit=spec.unit)
    value = float(spec.aggregate({c: cols[c] for c in spec.columns}))
    ci = median = None
    if indices is not None and len(indices):
        boot = np.array([spec.aggregate(_select(cols, spec.columns, i)) for i in indices], dtype=float)
        tail = (1 - level) / 2 * 100
        ci = (float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail)))
        median = float(np.median(boot))
    return MetricResult(value=value, ci=ci, bootstrap_median=median, n=n, method=spec.method, unit=spec.unit)


def paired_test(
    spec: MetricSpec, a: Columns, b: Columns, n_resamples: int = 1000, seed: int = SEED, level: float = 0.95
) -> MetricComparison:
    """Approximate randomization (two-sided) on the difference b - a, plus a paired-bootstrap CI of it.

    Rows are aligned (same ids, same order). Under the null hypothesis the system labels of each report are
    exchangeable, so each permutation swaps A and B rows with probability 1/2.
    p = (1 + #{|permuted diff| >= |observed diff|}) / (1 + R).
    """
    names = spec.columns
    n = len(a[names[0]])
    va = float(spec.aggregate({c: a[c] for c in names}))
    vb = float(spec.aggregate({c: b[c] for c in names}))
    observed = vb - va
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_resamples):
        swap = rng.random(n) < 0.5
        pa = {c: np.where(_rowmask(swap, a[c]), b[c], a[c]) for c in names}
        pb = {c: np.where(_rowmask(swap, a[c]), a[c], b[c]) for c in names}
        d = spec.aggregate(pb) - spec.aggregate(pa)
        # Tolerance so that float noise in identical systems still counts as "at least as extreme".
        if abs(d) >= abs(observed) - 1e-12:
            hits += 1
    p = (hits + 1) / (n_resamples + 1)
    idx = bootstrap_indices(n, n_resamples, seed + 1)
    diffs = np.array(
        [spec.aggregate(_select(b, names, i)) - spec.aggregate(_select(a, names, i)) for i in idx],
        dtype=float,
    )
    tail = (1 - level) / 2 * 100
    diff_ci = (float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail)))
    return MetricComparison(
        a=va,
        b=vb,
        diff=observed,
        diff_ci=diff_ci,
        p_value=p,
        n=n,
        method=f"approximate randomization, {n_resamples} permutations; paired bootstrap CI of b-a",
    )


def _rowmask(swap: np.ndarray, arr: np.ndarray) -> np.ndarray:
    return swap.reshape((-1,) + (1,) * (arr.ndim - 1))
