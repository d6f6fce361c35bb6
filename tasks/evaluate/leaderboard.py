"""An ablation's variants side by side: the leaderboard rows (numeric columns the Prefect UI sorts), its
compact markdown twin, and the chart of each metric with CIs. Plain functions over EVAL dirs; flows/compare.py
publishes them as artifacts."""

from __future__ import annotations

import io
from pathlib import Path

from schemas.evaluation import EvaluationMetrics
from tasks.evaluate.resampling import p_text

SMALL_N = 30  # below this many paired test reports, CIs and p-values are flagged as unreliable


def load_metrics(eval_dir: Path | str) -> EvaluationMetrics:
    return EvaluationMetrics.model_validate_json((Path(eval_dir) / "metrics.json").read_text())


def significance(baseline_dir: Path | str, variant_dir: Path | str, n_resamples: int) -> dict:
    """Paired tests of one variant against the baseline; a mismatch of test ids is reported, not raised."""
    from tasks.evaluate.significance import compare_evals

    try:
        return compare_evals(Path(baseline_dir), Path(variant_dir), n_resamples=n_resamples).model_dump(
            mode="json"
        )
    except ValueError as exc:
        return {"not_computed": f"not computed: {exc}", "metrics": {}}


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def leaderboard_rows(
    evals: dict[str, str],
    baseline: str,
    metrics: list[str],
    sig: dict[str, dict],
    runs: dict[str, str] | None = None,
) -> list[dict]:
    """One row per (variant, metric), every statistic in its own numeric column so the UI sorts them:
    value with its 95% bootstrap CI, and vs the baseline the paired difference with its CI and p-value (one
    paired bootstrap, tasks/evaluate/resampling.py). `runs`: variant -> link to its run. `status` says why a
    number is missing."""
    rows = []
    for variant, d in evals.items():
        m = load_metrics(d)
        for name in metrics:
            r = m.metrics.get(name)
            row: dict = {
                "variant": variant,
                "metric": name,
                "value": None,
                "ci_low": None,
                "ci_high": None,
                "diff": None,
                "diff_ci_low": None,
                "diff_ci_high": None,
                "p_value": None,
                "p_floor": None,  # the test's smallest p: p_value at it reads `p < floor`
                "n": m.n_reports,
                "small_n": m.n_reports < SMALL_N,
                "status": "",
                # markdown: the UI renders a table artifact's text cells as markdown, so this is a link
                "run": f"[{variant}]({runs[variant]})" if (runs or {}).get(variant) else "",
            }
            if r is None or r.value is None:
                row["status"] = r.not_computed if r is not None else "not computed: metric absent"
                rows.append(row)
                continue
            row.update(
                value=_r(r.value),
                ci_low=_r(r.ci[0]) if r.ci else None,
                ci_high=_r(r.ci[1]) if r.ci else None,
                n=r.n,
                small_n=r.n < SMALL_N,
            )
            if variant == baseline:
                row["status"] = "baseline"
            else:
                c = sig[variant].get("metrics", {}).get(name)
                if c is None or c.get("not_computed") or c.get("diff") is None:
                    row["status"] = (
                        (c or {}).get("not_computed")
                        or sig[variant].get("not_computed")
                        or "not computed: no paired comparison"
                    )
                else:
                    lo, hi = c["diff_ci"] or (None, None)
                    row.update(
                        diff=_r(c["diff"]),
                        diff_ci_low=_r(lo),
                        diff_ci_high=_r(hi),
                        p_value=_r(c["p_value"]),
                        p_floor=_r(c.get("p_floor")),  # rounded as p is: equal at the floor
                        n=c["n"],
                        small_n=c["n"] < SMALL_N,
                        status="compared",
                    )
            rows.append(row)
    return rows + baseline_rows(load_metrics(evals[baseline]), metrics)


def baseline_rows(m: EvaluationMetrics, metrics: list[str]) -> list[dict]:
    """The image-blind baselines of the baseline variant's evaluation (tasks/evaluate/baselines.py; every
    variant is scored on the same test references, so they are the same for all), one row per metric, named
    `baseline:<name>`: value and CI, no paired difference."""
    rows = []
    for name, b in m.baselines.items():
        for metric in metrics:
            r = b.metrics.get(metric)
            if r is None:
                continue
            rows.append({"variant": f"baseline:{name}", "metric": metric, "value": _r(r.value),
                         "ci_low": _r(r.ci[0]) if r.ci else None, "ci_high": _r(r.ci[1]) if r.ci else None,
                         "diff": None, "diff_ci_low": None, "diff_ci_high": None, "p_value": None, "p_floor": None, "n": r.n,
                         "small_n": r.n < SMALL_N,
                         "status": r.not_computed or "image-blind baseline, no training", "run": ""})
    return rows


def leaderboard_markdown(name: str, baseline: str, rows: list[dict], links: bool = True) -> str:
    """The compact reading copy of the leaderboard: with `links`, variants link to their runs (the rows'
    `run` column); small n is flagged."""

    def ci(lo, hi) -> str:
        return f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""

    lines = [
        f"# Ablation `{name}`",
        "",
        f"Baseline `{baseline}`. Values: 95% bootstrap CI. vs baseline: paired difference (variant - "
        "baseline) with its 95% CI and two-sided p-value, both from one paired bootstrap over the test "
        "reports.",
        "",
        "| metric | variant | value [95% CI] | vs baseline [95% CI] | p | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        variant = r["run"] if links and r.get("run") else r["variant"]
        value = f"{r['value']:.2f}{ci(r['ci_low'], r['ci_high'])}" if r["value"] is not None else r["status"]
        if r["diff"] is not None:
            vs = f"{r['diff']:+.2f}{ci(r['diff_ci_low'], r['diff_ci_high'])}"
            p = p_text(r["p_value"], r.get("p_floor")).removeprefix("p = ").removeprefix("p ")
        else:
            vs, p = (
                ("baseline" if r["status"] == "baseline" else r["status"] if r["value"] is not None else ""),
                "",
            )
        n = f"{r['n']} ⚠" if r["small_n"] else str(r["n"])
        lines.append(f"| {r['metric']} | {variant} | {value} | {vs} | {p} | {n} |")
    if any(r["small_n"] for r in rows):
        lines += [
            "",
            f"⚠ fewer than {SMALL_N} test reports: CIs are wide and p-values unreliable; evaluate on "
            "more reports before drawing conclusions.",
        ]
    return "\n".join(lines) + "\n"


def chart_png(evals: dict[str, str], metrics: list[str]) -> bytes:
    """One panel per metric: each variant's value with its 95% CI as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = {v: load_metrics(d) for v, d in evals.items()}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    names = list(loaded)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, v in enumerate(names):
            r = loaded[v].metrics.get(metric)
            if r is None or r.value is None:
                ax.text(i, 0, "n/c", ha="center", fontsize=8)
                continue
            lo, hi = r.ci or (r.value, r.value)
            ax.errorbar([i], [r.value], yerr=[[r.value - lo], [hi - r.value]], fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def chart_markdown(name: str, baseline: str, png: bytes) -> str:
    """The chart inlined as a data URL (an artifact cannot reference a local file)."""
    import base64

    return (
        f"# Ablation `{name}`\n\nBaseline: `{baseline}`\n\n"
        f"![metrics with 95% CIs](data:image/png;base64,{base64.b64encode(png).decode()})\n"
    )
