"""Does the model learn from the images? The trained model against the shuffle control and the image-blind
baselines (tasks/evaluate/baselines.py), as the demo prints it and writes learning.json; a one-line account of
what was trained; and the metrics that could not be computed collapsed into one line that says why."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schemas.evaluation import MetricResult

LEARNING_METRIC = "rule_f1_micro_14"


BALANCED_METRIC = "rule_balanced_accuracy_macro_14"
BASELINES = ("image_blind", "majority_report")


def _ci(pair) -> list[float] | None:
    return [round(pair[0], 4), round(pair[1], 4)] if pair else None


def _val(x) -> float | None:
    return None if x is None else round(x, 4)


def _value_ci(m: MetricResult | None) -> dict:
    if m is None:
        return {"value": None, "ci": None, "not_computed": "not computed: no such baseline in metrics.json"}
    if m.value is None:
        return {"value": None, "ci": None, "not_computed": m.not_computed}
    return {"value": _val(m.value), "ci": _ci(m.ci)}


def learning_record(
    metric: str,
    trained: MetricResult,
    shuffled: MetricResult,
    comparison: dict,
    baselines: dict | None = None,
) -> dict:
    """learning.json: both values with 95% CIs, the image-blind baselines of tasks/evaluate/baselines.py with
    theirs (`baselines`: name -> BaselineResult from the trained model's metrics.json; an evaluation without
    training references has none, and each then says not computed), and the paired difference trained -
    shuffled with its 95% CI and two-sided p-value (one paired bootstrap over the test reports, so CI and p
    agree)."""
    if comparison.get("not_computed") or comparison.get("diff") is None:
        difference = {
            "value": None,
            "ci": None,
            "not_computed": comparison.get("not_computed") or "not computed",
        }
        p = None
    else:
        difference = {"value": _val(comparison["diff"]), "ci": _ci(comparison.get("diff_ci"))}
        p = comparison.get("p_value")
    record = {
        "metric": metric,
        "trained": {"value": _val(trained.value), "ci": _ci(trained.ci)},
        "shuffled": {"value": _val(shuffled.value), "ci": _ci(shuffled.ci)},
        "difference": difference,
        "p_value": None if p is None else round(p, 6),
        # rounded as p is, so p at the floor (no resample crossed 0: `p < floor`) still reads as at it
        "p_floor": None if comparison.get("p_floor") is None else round(comparison["p_floor"], 6),
        "n": comparison.get("n") or trained.n,
    }
    if baselines is not None:
        record["baselines"] = {
            b: _value_ci(getattr(baselines.get(b), "metrics", {}).get(metric)) for b in BASELINES
        }
    return record


def _above(t: list | None, other: dict) -> bool:
    return bool(t and other.get("ci") and t[0] > other["ci"][1])


def learned(record: dict) -> bool:
    """Trained beats the shuffle control and every image-blind baseline in the record with non-overlapping
    95% CIs (a baseline that could not be computed is not beaten: no verdict without it)."""
    t = record["trained"]["ci"]
    return _above(t, record["shuffled"]) and all(_above(t, b) for b in record.get("baselines", {}).values())


def best_baseline(record: dict) -> str | None:
    """The image-blind baseline with the highest value (the one to beat), or None."""
    valued = {k: b["value"] for k, b in record.get("baselines", {}).items() if b.get("value") is not None}
    return max(valued, key=valued.get) if valued else None


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
        rate = re.match(r"(.+_(?:sensitivity|specificity|balanced_accuracy))_", name)
        family = rate.group(1) if rate else re.sub(r"_(f1|mean|share).*$", "", name)
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
    on 100 training examples, 32 px model input`."""
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
    size = _model_image_size(cfg)
    init = "random init" if cfg.get("preset") == "tiny" else "pretrained weights"
    shuffled = " with images shuffled across samples" if cfg.get("shuffle_images") else ""
    return (
        f"{cfg.get('preset')} LLaVA-style model, {init}, {_m(total)} parameters ({_m(trained)} trained): "
        f"{steps} on {summary['data']['examples']} training examples{shuffled}, {size} px model input"
    )


def _model_image_size(cfg: dict) -> int:
    """The size the model was built for and its images resized to (training/model.image_size_for): the
    config's `image_size`, or the preset's native size when that is 0."""
    from types import SimpleNamespace

    from training.model import image_size_for

    return image_size_for(SimpleNamespace(preset=cfg.get("preset"), image_size=cfg.get("image_size") or 0))


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
