"""Loss curve PNG from metrics.jsonl (matplotlib, headless), and the run summary the train flow publishes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cxrio import atomic_path


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def write_loss_curve(metrics_path: Path, png: Path) -> Path | None:
    # a Figure of its own, not pyplot's: pyplot's figure registry is global and not thread-safe, and an
    # ablation's variants publish their curves from threads at once (flows/ablate.py)
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_path)
    if not rows:
        return None
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    for stage in sorted({r["stage"] for r in rows}):
        pts = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
        ax.plot(*zip(*pts, strict=True), marker=".", label=f"stage {stage}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("cxrflow training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return png


def metrics_rows(run_dir: Path, max_rows: int = 200) -> tuple[list[dict], int]:
    """Every `stride`-th logged step (at most about `max_rows` rows, floats rounded), and the stride."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    stride = max(1, len(rows) // max_rows)
    return [
        {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[::stride]
    ], stride


def run_markdown(run_dir: Path, summary: dict) -> str:
    """The loss curve (PNG inlined), each stage's steps and stop reason, the data, the shard index hashes."""
    png = run_dir / "loss.png"
    lineage = json.loads((run_dir / "lineage.json").read_text())
    img = (
        f"![loss](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
        if png.exists()
        else "loss curve: not drawn (no steps logged)"
    )
    lines = [
        f"# Training run `{run_dir}`",
        "",
        img,
        "",
        "| stage | steps | finished | stopped | resumed from |",
        "|---|---|---|---|---|",
    ]
    for st, s in summary["stages"].items():
        lines.append(
            f"| {st} | {s.get('steps', '-')} | {s.get('finished', s.get('skipped'))} | "
            f"{s.get('stopped', '-')} | {s.get('resumed_from')} |"
        )
    lines += ["", f"Data: {summary['data']}", "", "Shard index hashes:"]
    lines += [f"- `{name}` {h}" for name, h in lineage["index_sha256"].items()]
    return "\n".join(lines)
