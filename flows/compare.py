"""Flow `compare`: the variants of an ablation side by side.

Publishes, under keys stable per ablation (the UI keeps their version history):
- `ablation-<name>-leaderboard`: one row per variant and metric with numeric columns (value, ci_low, ci_high,
  diff, diff_ci_low, diff_ci_high, p_value, n, small_n) so the UI sorts them; the difference vs the baseline and
  its p-value come from one paired bootstrap (tasks/evaluate/significance.py);
- `ablation-<name>-leaderboard-md`: the same as a compact markdown table, variants linked to their runs;
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


SMALL_N = 30  # below this many paired test reports, CIs and p-values are flagged as unreliable


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def leaderboard_rows(evals: dict[str, str], baseline: str, metrics: list[str], sig: dict[str, dict],
                     runs: dict[str, str] | None = None) -> list[dict]:
    """One row per (variant, metric), every statistic in its own numeric column so the UI sorts them:
    value with its 95% bootstrap CI, and vs the baseline the paired difference with its CI and p-value (one
    paired bootstrap, tasks/evaluate/resampling.py). `status` says why a number is missing."""
    rows = []
    for variant, d in evals.items():
        m = load_metrics(Path(d))
        for name in metrics:
            r = m.metrics.get(name)
            row: dict = {"variant": variant, "metric": name, "value": None, "ci_low": None, "ci_high": None,
                         "diff": None, "diff_ci_low": None, "diff_ci_high": None, "p_value": None,
                         "n": m.n_reports, "small_n": m.n_reports < SMALL_N, "status": "",
                         "run": (runs or {}).get(variant, "")}
            if r is None or r.value is None:
                row["status"] = r.not_computed if r is not None else "not computed: metric absent"
                rows.append(row)
                continue
            row.update(value=_r(r.value), ci_low=_r(r.ci[0]) if r.ci else None,
                       ci_high=_r(r.ci[1]) if r.ci else None, n=r.n, small_n=r.n < SMALL_N)
            if variant == baseline:
                row["status"] = "baseline"
            else:
                c = sig[variant].get("metrics", {}).get(name)
                if c is None or c.get("not_computed") or c.get("diff") is None:
                    row["status"] = (c or {}).get("not_computed") or sig[variant].get("not_computed") \
                        or "not computed: no paired comparison"
                else:
                    lo, hi = c["diff_ci"] or (None, None)
                    row.update(diff=_r(c["diff"]), diff_ci_low=_r(lo), diff_ci_high=_r(hi),
                               p_value=_r(c["p_value"]), n=c["n"], small_n=c["n"] < SMALL_N, status="compared")
            rows.append(row)
    return rows


def leaderboard_markdown(name: str, baseline: str, rows: list[dict], run_ids: dict[str, str]) -> str:
    """The compact reading copy of the leaderboard: variants link to their runs; small n is flagged."""
    from flows.ui import run_link

    def ci(lo, hi) -> str:
        return f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""

    lines = [f"# Ablation `{name}`", "",
             f"Baseline `{baseline}`. Values: 95% bootstrap CI. vs baseline: paired difference (variant - "
             "baseline) with its 95% CI and two-sided p-value, both from one paired bootstrap over the test "
             "reports.", "", "| metric | variant | value [95% CI] | vs baseline [95% CI] | p | n |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        variant = run_link(run_ids.get(r["variant"]), r["variant"]) if run_ids.get(r["variant"]) else r["variant"]
        value = f"{r['value']:.2f}{ci(r['ci_low'], r['ci_high'])}" if r["value"] is not None else r["status"]
        if r["diff"] is not None:
            vs, p = f"{r['diff']:+.2f}{ci(r['diff_ci_low'], r['diff_ci_high'])}", f"{r['p_value']:.3f}"
        else:
            vs, p = ("baseline" if r["status"] == "baseline" else r["status"] if r["value"] is not None else ""), ""
        n = f"{r['n']} ⚠" if r["small_n"] else str(r["n"])
        lines.append(f"| {r['metric']} | {variant} | {value} | {vs} | {p} | {n} |")
    if any(r["small_n"] for r in rows):
        lines += ["", f"⚠ fewer than {SMALL_N} test reports: CIs are wide and p-values unreliable; evaluate on "
                  "more reports before drawing conclusions."]
    return "\n".join(lines) + "\n"


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
            n_resamples: int = 1000, runs: dict[str, str] | None = None) -> dict:
    """`evals`: variant -> EVAL dir (metrics.json + per_report.parquet); `runs`: variant -> the flow run id
    that produced it (links in the leaderboard)."""
    from flows.ui import run_path

    if baseline not in evals:
        raise ValueError(f"baseline {baseline!r} is not among the variants {sorted(evals)}")
    sig = {v: significance_task(evals[baseline], d, n_resamples) for v, d in evals.items() if v != baseline}
    run_ids = {v: r for v, r in (runs or {}).items() if r}
    rows = leaderboard_rows(evals, baseline, metrics, sig, {v: run_path(r) for v, r in run_ids.items()})
    key = f"ablation-{slug(name)}-leaderboard"
    create_table_artifact(key=key, table=rows,
                          description=f"Ablation {name}: value with 95% CI per variant and metric; vs baseline "
                          f"{baseline}: paired difference, its 95% CI and p-value from one paired bootstrap")
    create_markdown_artifact(key=f"{key}-md", markdown=leaderboard_markdown(name, baseline, rows, run_ids),
                             description=f"Ablation {name}: the leaderboard to read, variants linked to their runs")
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
    print(leaderboard_markdown(name, baseline, rows, {}))
    return {"leaderboard_key": key, "chart_key": chart_key, "rows": rows, "dir": str(out_dir),
            "significance": sig}
