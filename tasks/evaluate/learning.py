"""Does the model learn from the images? The trained-vs-shuffled comparison the demo prints and writes as
learning.json, a one-line account of what was trained, and the metrics that could not be computed collapsed
into one line that says why."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schemas.evaluation import MetricResult

LEARNING_METRIC = "rule_f1_micro_14"


def learning_record(metric: str, trained: MetricResult, shuffled: MetricResult, comparison: dict) -> dict:
    """learning.json: both values with 95% CIs, and the paired difference trained - shuffled with its 95% CI
    and two-sided p-value (one paired bootstrap over the test reports, so CI and p agree)."""

    def ci(pair) -> list[float] | None:
        return [round(pair[0], 4), round(pair[1], 4)] if pair else None

    def val(x) -> float | None:
        return None if x is None else round(x, 4)

    if comparison.get("not_computed") or comparison.get("diff") is None:
        difference = {
            "value": None,
            "ci": None,
            "not_computed": comparison.get("not_computed") or "not computed",
        }
        p = None
    else:
        difference = {"value": val(comparison["diff"]), "ci": ci(comparison.get("diff_ci"))}
        p = comparison.get("p_value")
    return {
        "metric": metric,
        "trained": {"value": val(trained.value), "ci": ci(trained.ci)},
        "shuffled": {"value": val(shuffled.value), "ci": ci(shuffled.ci)},
        "difference": difference,
        "p_value": None if p is None else round(p, 6),
        # rounded as p is, so p at the floor (no resample crossed 0: `p < floor`) still reads as at it
        "p_floor": None if comparison.get("p_floor") is None else round(comparison["p_floor"], 6),
        "n": comparison.get("n") or trained.n,
    }


def learned(record: dict) -> bool:
    """Trained beats shuffled with non-overlapping 95% CIs."""
    t, s = record["trained"]["ci"], record["shuffled"]["ci"]
    return bool(t and s and t[0] > s[1])


def _reason(text: str) -> str:
    """A short cause for a not-computed reason."""
    if re.search(r"weights|model not configured", text, re.IGNORECASE):
        return "no local model weights configured"
    if re.search(r"LLM|judge", text):
        return "no LLM judge configured"
    return text.removeprefix("not computed: ")


def collapse_not_computed(metrics: dict[str, MetricResult | str | None]) -> str | None:
    """`not computed (13): chexbert_* x8, radgraph_f1_partial, bertscore_f1: no local model weights
    configured; chexprompt_* x3: no LLM judge configured`, or None when every metric has a value.
    `metrics`: name -> MetricResult, or name -> its not-computed reason (None when computed)."""
    groups: dict[str, dict[str, list[str]]] = {}  # reason -> family -> the not-computed names
    for name, m in metrics.items():
        reason = (m.not_computed if m.value is None else None) if isinstance(m, MetricResult) else m
        if reason is None:
            continue
        family = re.sub(r"_(f1|mean|share).*$", "", name)
        groups.setdefault(_reason(reason), {}).setdefault(family, []).append(name)
    if not groups:
        return None
    total = sum(len(n) for f in groups.values() for n in f.values())
    parts = []
    for reason, fams in groups.items():
        names = [f"{f}_* x{len(n)}" if len(n) > 1 else n[0] for f, n in fams.items()]
        parts.append(f"{', '.join(names)}: {reason}")
    return f"not computed ({total}): " + "; ".join(parts)


def describe_training(run_dir: Path) -> str:
    """`tiny LLaVA-style model, random init, 1.2M parameters (0.3M trained): stage 1 12 steps, stage 2 96 steps
    on 100 training samples, 32 px images, CPU`."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    total = _count_params(run_dir / "base" / "model.safetensors")
    trained = _count_params(run_dir / "final" / "stage2-trainable.safetensors") or _count_params(
        run_dir / "final" / "stage1-trainable.safetensors"
    )
    done: dict[int, int] = {}  # steps per stage from the run's log (a resumed run's summary skips stages)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            done[row["stage"]] = max(done.get(row["stage"], 0), row["step"])
    steps = ", ".join(f"stage {k} {n} steps" for k, n in sorted(done.items()))
    size = cfg.get("image_size") or 32
    init = "random init" if cfg.get("preset") == "tiny" else "pretrained weights"
    shuffled = " with images shuffled across samples" if cfg.get("shuffle_images") else ""
    return (
        f"{cfg.get('preset')} LLaVA-style model, {init}, {_m(total)} parameters ({_m(trained)} trained): "
        f"{steps} on {summary['data']['examples']} training examples{shuffled}, {size} px images"
    )


def _count_params(path: Path) -> int:
    if not path.exists():
        return 0
    from safetensors import safe_open

    n = 0
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            size = 1
            for d in shape:
                size *= d
            n += size
    return n


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"
