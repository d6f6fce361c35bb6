"""`cxrflow ablate`'s terminal summary: what the demo prints, for any ablation. Per metric and variant the value
with its 95% CI, the paired difference vs the baseline with its CI, p and n (the leaderboard rows of
flows/compare.py); the Runs page filtered to the variants; each variant's evaluation folder and run."""

from __future__ import annotations

from tasks.evaluate.leaderboard import SMALL_N
from tasks.evaluate.resampling import p_text


def _ci(lo: float | None, hi: float | None) -> str:
    return f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""


def table(rows: list[dict]) -> list[str]:
    """Aligned text columns: metric, variant, value [95% CI], vs baseline [95% CI], p, n."""
    out = [("metric", "variant", "value [95% CI]", "vs baseline [95% CI]", "p", "n")]
    for r in rows:
        value = f"{r['value']:.2f}{_ci(r['ci_low'], r['ci_high'])}" if r["value"] is not None else r["status"]
        if r["diff"] is not None:
            vs = f"{r['diff']:+.2f}{_ci(r['diff_ci_low'], r['diff_ci_high'])}"
            p = p_text(r["p_value"], r.get("p_floor")).removeprefix("p = ").removeprefix("p ")
        else:  # the baseline itself, or why no comparison was made
            vs, p = ("baseline" if r["status"] == "baseline" else r["status"] if r["value"] is not None else ""), ""
        n = f"{r['n']}*" if r["small_n"] else str(r["n"])
        out.append((r["metric"], r["variant"], value, vs, p, n))
    widths = [max(len(row[i]) for row in out) for i in range(len(out[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in out]


def render(result: dict, baseline: str) -> str:
    from cxrflow_cli._links import ui_link

    name = result["name"]
    rows = result["compare"]["rows"]
    lines = [f"== ablation {name}: baseline {baseline} (95% bootstrap CIs; vs baseline: paired difference "
             "variant - baseline, its CI and p from one paired bootstrap over the test reports)"]
    lines += table(rows)
    if any(r["small_n"] for r in rows):
        lines.append(f"  * fewer than {SMALL_N} test reports: the CIs are wide and p-values unreliable")
    lines += ["", f"== runs (one row per variant, each tagged with its headline metric)\n  "
              f"{ui_link(f'/runs?tag=ablation:{name}')}", "", "== each variant"]
    width = max(len(v) for v in result["variants"])
    for variant, v in result["variants"].items():
        how = "reused: no new run" if v.get("reused") else "ran"
        lines.append(f"  {variant:<{width}}  evaluation {v['eval_dir']}  ({how}; {v.get('headline', '')})")
    lines += ["", f"== leaderboard\n  {result['compare']['dir']} (artifacts `{result['compare']['leaderboard_key']}`"
              f", `{result['compare']['leaderboard_key']}-md`, `{result['compare']['chart_key']}`)"]
    return "\n".join(lines)
