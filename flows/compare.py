"""Flow `compare`: the variants of an ablation side by side (the work: tasks/evaluate/leaderboard.py).

Publishes, under keys stable per ablation (the UI keeps their version history):
- `ablation-<name>-leaderboard`: one row per variant and metric with numeric columns (value, ci_low, ci_high,
  diff, diff_ci_low, diff_ci_high, p_value, n, small_n) so the UI sorts them; the difference vs the baseline and
  its p-value come from one paired bootstrap (tasks/evaluate/significance.py);
- `ablation-<name>-leaderboard-md`: the same as a compact markdown table, variants linked to their runs;
- `ablation-<name>-chart`: markdown with a PNG of each metric with CIs across variants.
Also writes OUT/ablations/<name>/{leaderboard.json, chart.png, significance.json}."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from cxrio import atomic_write_bytes, atomic_write_json
from schemas.pipeline import slug
from tasks.evaluate import leaderboard as lb

significance_task = task(lb.significance, cache_policy=NO_CACHE)


@flow(name="compare", log_prints=True)
def compare(name: str, evals: dict[str, str], baseline: str, metrics: list[str], out: str,
            n_resamples: int = 1000, runs: dict[str, str] | None = None) -> dict:
    """`evals`: variant -> EVAL dir (metrics.json + per_report.parquet); `runs`: variant -> the flow run id
    that produced it (links in the leaderboard)."""
    from flows.ui import run_path

    if baseline not in evals:
        raise ValueError(f"baseline {baseline!r} is not among the variants {sorted(evals)}")
    sig = {v: significance_task(evals[baseline], d, n_resamples) for v, d in evals.items() if v != baseline}
    links = {v: run_path(r) for v, r in (runs or {}).items() if r}
    rows = lb.leaderboard_rows(evals, baseline, metrics, sig, links)
    key = f"ablation-{slug(name)}-leaderboard"
    create_table_artifact(key=key, table=rows,
                          description=f"Ablation {name}: value with 95% CI per variant and metric; vs baseline "
                          f"{baseline}: paired difference, its 95% CI and p-value from one paired bootstrap")
    create_markdown_artifact(key=f"{key}-md", markdown=lb.leaderboard_markdown(name, baseline, rows),
                             description=f"Ablation {name}: the leaderboard to read, variants linked to their runs")
    png = lb.chart_png(evals, metrics)
    out_dir = Path(out) / "ablations" / slug(name)
    atomic_write_bytes(out_dir / "chart.png", png)
    atomic_write_json(out_dir / "leaderboard.json", rows)
    atomic_write_json(out_dir / "significance.json", sig)
    chart_key = f"ablation-{slug(name)}-chart"
    create_markdown_artifact(key=chart_key, markdown=lb.chart_markdown(name, baseline, png),
                             description=f"Ablation {name}: each metric with 95% CIs across variants")
    print(lb.leaderboard_markdown(name, baseline, rows, links=False))
    return {"leaderboard_key": key, "chart_key": chart_key, "rows": rows, "dir": str(out_dir),
            "significance": sig}
