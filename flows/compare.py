"""Flow `compare`: the variants of an ablation side by side.

Publishes, under keys stable per ablation (the UI keeps their version history):
- `ablation-<name>-leaderboard`: one row per variant, every charted metric as value [95% CI], and the paired
  difference vs the baseline variant with its p-value (tasks/evaluate/significance.py);
- `ablation-<name>-chart`: markdown with a PNG of each metric with CIs across variants.
Also writes OUT/ablations/<name>/{leaderboard.json, chart.png, significance.json}."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from schemas.pipeline import slug
from tasks.io import atomic_write_bytes, atomic_write_json


def load_metrics(eval_dir: Path):
    from schemas.evaluation import EvaluationMetrics

    return EvaluationMetrics.model_validate_json((Path(eval_dir) / "metrics.json").read_text())


@task(cache_policy=NO_CACHE)
def significance_task(baseline_dir: str, variant_dir: str, n_resamples: int) -> dict:
    """Paired tests of one variant against the baseline; a mismatch of test ids is reported, not raised."""
    from tasks.evaluate.significance import compare_evals

    try:
        return compare_evals(Path(baseline_dir), Path(variant_dir), n_resamples=n_resamples).model_dump(mode="json")
    except ValueError as exc:
        return {"not_computed": f"not computed: {exc}", "metrics": {}}


def leaderboard_rows(evals: dict[str, str], baseline: str, metrics: list[str], sig: dict[str, dict]) -> list[dict]:
    rows = []
    for variant, d in evals.items():
        m = load_metrics(Path(d))
        row: dict = {"variant": variant, "baseline": variant == baseline, "n_reports": m.n_reports}
        for name in metrics:
            r = m.metrics.get(name)
            row[name] = r.display() if r is not None else "not computed: metric absent"
            if variant == baseline:  # same columns in every row: the UI takes the header from the first
                row[f"{name} vs baseline"] = "baseline"
                continue
            c = sig[variant].get("metrics", {}).get(name)
            if c is None or c.get("not_computed") or c.get("diff") is None:
                reason = (c or {}).get("not_computed") or sig[variant].get("not_computed") or "not computed"
                row[f"{name} vs baseline"] = reason
            else:
                lo, hi = c["diff_ci"] or (None, None)
                ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
                row[f"{name} vs baseline"] = f"{c['diff']:+.2f}{ci} p={c['p_value']:.3f}"
        rows.append(row)
    return rows


def chart_png(evals: dict[str, str], metrics: list[str]) -> bytes:
    """One panel per metric: each variant's value with its 95% CI as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = {v: load_metrics(Path(d)) for v, d in evals.items()}
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


@flow(name="compare", log_prints=True)
def compare(name: str, evals: dict[str, str], baseline: str, metrics: list[str], out: str,
            n_resamples: int = 1000) -> dict:
    """`evals`: variant -> EVAL dir (metrics.json + per_report.parquet)."""
    if baseline not in evals:
        raise ValueError(f"baseline {baseline!r} is not among the variants {sorted(evals)}")
    sig = {v: significance_task(evals[baseline], d, n_resamples) for v, d in evals.items() if v != baseline}
    rows = leaderboard_rows(evals, baseline, metrics, sig)
    key = f"ablation-{slug(name)}-leaderboard"
    create_table_artifact(key=key, table=rows,
                          description=f"Ablation {name}: metrics with 95% CIs; vs baseline {baseline}: paired "
                          "difference [95% CI] and approximate-randomization p-value")
    png = chart_png(evals, metrics)
    out_dir = Path(out) / "ablations" / slug(name)
    atomic_write_bytes(out_dir / "chart.png", png)
    atomic_write_json(out_dir / "leaderboard.json", rows)
    atomic_write_json(out_dir / "significance.json", sig)
    chart_key = f"ablation-{slug(name)}-chart"
    create_markdown_artifact(
        key=chart_key,
        markdown=f"# Ablation `{name}`\n\nBaseline: `{baseline}`\n\n"
        f"![metrics with 95% CIs](data:image/png;base64,{base64.b64encode(png).decode()})\n",
        description=f"Ablation {name}: each metric with 95% CIs across variants",
    )
    for r in rows:
        print(" | ".join(f"{k}={v}" for k, v in r.items()))
    return {"leaderboard_key": key, "chart_key": chart_key, "rows": rows, "dir": str(out_dir)}
