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
# Ours, not scipy.stats.bootstrap: on the same resamples (scheme "reference") both give the same percentile CI and
# median, scipy in 1.9x the time per metric (bench/bench_library_checks.py, BENCHMARKS.md), and it draws per call;
# here one index matrix serves every metric, and paired_test takes the CI and the p-value of a difference from
# the same resamples of report ids, which neither scipy.stats.bootstrap (no p) nor permutation_test (no CI) gives.


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
    if np.isnan(value):  # a rate without a reference of its class (tasks/evaluate/clinical.py rate_specs)
        return MetricResult.missing(f"undefined on these {n} reports (no reference report of the class)",
                                    method=spec.method, n=n, unit=spec.unit)
    ci = median = None
    if indices is not None and len(indices):
        boot = np.array([spec.aggregate(_select(cols, spec.columns, i)) for i in indices], dtype=float)
        boot = boot[~np.isnan(boot)]  # resamples that drew no reference of the class leave no value
        tail = (1 - level) / 2 * 100
        if len(boot):
            ci = (float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail)))
            median = float(np.median(boot))
    return MetricResult(value=value, ci=ci, bootstrap_median=median, n=n, method=spec.method, unit=spec.unit)


def paired_test(
    spec: MetricSpec, a: Columns, b: Columns, n_resamples: int = 1000, seed: int = SEED, level: float = 0.95
) -> MetricComparison:
    """Paired bootstrap of the difference b - a: its 95% CI and its two-sided p-value come from the same
    resamples of report ids, so they cannot contradict (p < 0.05 when the CI excludes 0, up to one resample).

    Rows are aligned (same ids, same order); each resample draws report ids with replacement and recomputes
    both systems' metric on them. p = 2 * min(#{d <= 0} + 1, #{d >= 0} + 1) / (R + 1), capped at 1
    (Koehn 2004's paired bootstrap, two-sided; identical systems give p = 1). Its floor, 2 / (R + 1), is what
    it gives when no resample crosses 0: write that as `p < floor` (p_text), never as an exact p.
    """
    names = spec.columns
    n = len(a[names[0]])
    va = float(spec.aggregate({c: a[c] for c in names}))
    vb = float(spec.aggregate({c: b[c] for c in names}))
    observed = vb - va
    if np.isnan(observed):
        return MetricComparison(
            not_computed=f"not computed: undefined on these {n} reports (no reference report of the class)", n=n)
    idx = bootstrap_indices(n, n_resamples, seed + 1)
    diffs = np.array(
        [spec.aggregate(_select(b, names, i)) - spec.aggregate(_select(a, names, i)) for i in idx],
        dtype=float,
    )
    diffs = diffs[~np.isnan(diffs)]  # resamples without a reference of the class (rate metrics)
    n_resamples = len(diffs)
    tail = (1 - level) / 2 * 100
    diff_ci = (float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail)))
    eps = 1e-12  # float noise in identical systems counts as a zero difference
    below, above = int((diffs <= eps).sum()), int((diffs >= -eps).sum())
    p = min(1.0, 2 * min(below + 1, above + 1) / (n_resamples + 1))
    return MetricComparison(
        a=va,
        b=vb,
        diff=observed,
        diff_ci=diff_ci,
        p_value=p,
        p_floor=p_floor(n_resamples),
        n=n,
        method=f"paired bootstrap, {n_resamples} resamples of report ids: CI and two-sided p of b-a",
    )


def p_floor(n_resamples: int) -> float:
    """The smallest p paired_test can give with R resamples: 2 / (R + 1)."""
    return 2 / (n_resamples + 1)


def p_text(p: float | None, floor: float | None, digits: int = 3) -> str:
    """`p = 0.034`, or `p < 0.002` when p is at the test's floor (no resample crossed 0: the true p is only
    known to be below it; the bound is the floor rounded up to one significant digit, 0.002 for R = 1000)."""
    import math

    if p is None:
        return "p not computed"
    if floor is not None and p <= floor * (1 + 1e-9):
        e = math.floor(math.log10(floor))
        m = math.ceil(round(floor / 10**e, 9))
        bound = m * 10.0**e
        return f"p < {bound:.{max(0, -e)}f}"
    return f"p = {p:.{digits}f}"
