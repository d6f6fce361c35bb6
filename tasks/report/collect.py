"""Read everything the report shows from a run's files, each number with the file it came from, the config
hash of the stage that wrote it and that stage's code version.

A run is a pipeline OUT (`runs/<name>.json`, `stages/`, `ablations/`) or a demo OUT (the same under
`pipeline/`, and `learning.json`)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from schemas.errors import UserError
from schemas.evaluation import EvaluationMetrics, MetricResult
from tasks.plan import MARKER

NOT_RECORDED = "not recorded (the stage was written before markers carried it)"
SEED_SUFFIX = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def _json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def pipeline_out(run: Path) -> Path:
    """The folder holding `runs/`: `run` itself or a demo's `run/pipeline`."""
    for cand in (run, run / "pipeline"):
        if (cand / "runs").is_dir() and any((cand / "runs").glob("*.json")):
            return cand
    raise UserError(f"{run} holds no pipeline run (no runs/*.json there or under pipeline/)",
                    "pass the OUT of `cxrflow pipeline`, `cxrflow ablate` or `cxrflow demo`")


class Lineage:
    """Rows (section, number, value, file, stage, stage config hash, code version), one per number shown."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, section: str, name: str, value: str, file: Path, stage: dict | None) -> None:
        self.rows.append({
            "section": section, "number": name, "value": value, "file": str(file),
            "stage": (stage or {}).get("stage", ""), "config_hash": (stage or {}).get("key", ""),
            "code_version": (stage or {}).get("code_version") or NOT_RECORDED,
        })


def _marker(stage_dir: Path) -> dict:
    path = Path(stage_dir) / MARKER
    return _json(path) if path.exists() else {}


def _short(m: MetricResult | None) -> str:
    return "absent" if m is None else m.display() if m.value is not None else str(m.not_computed)


def collect(run: Path, ablations: list[Path] | None = None) -> dict[str, Any]:
    """Everything the six sections show (render.py), plus `lineage` rows."""
    from tasks.lineage import code_version

    run = Path(run)
    out = pipeline_out(run)
    lineage = Lineage()
    runs = [_collect_run(p, lineage) for p in sorted((out / "runs").glob("*.json"))]
    learning = run / "learning.json"
    abl_dirs = ablations if ablations else sorted(p for p in (out / "ablations").glob("*") if p.is_dir())
    data = {
        "run": str(run),
        "code_version": code_version(),
        "runs": runs,
        "data": _dedupe([r["data"] for r in runs if r.get("data")], "dir"),
        "learning": _json(learning) if learning.exists() else None,
        "learning_file": str(learning),
        "ablations": [_collect_ablation(Path(d), runs, lineage) for d in abl_dirs],
        "lineage": lineage.rows,
    }
    if data["learning"]:
        for name, rec in (("", data["learning"]), ("balanced_accuracy.", data["learning"].get("balanced_accuracy"))):
            if rec:
                lineage.add("Report generation", f"learning.{name}trained {rec['metric']}",
                            str(rec["trained"]["value"]), learning, None)
    return data


def _dedupe(items: list[dict], key: str) -> list[dict]:
    seen, out = set(), []
    for it in items:
        if it[key] not in seen:
            seen.add(it[key])
            out.append(it)
    return out


def _collect_run(path: Path, lineage: Lineage) -> dict[str, Any]:
    rec = _json(path)
    stages = {}
    for name, st in rec.get("stages", {}).items():
        marker = _marker(Path(st["dir"]))
        stages[name] = {"stage": name, "dir": st["dir"], "key": st.get("key", marker.get("key", "")),
                        "code_version": marker.get("code_version"), "marker": marker}
    run: dict[str, Any] = {"name": rec.get("name", path.stem), "file": str(path), "stages": stages}
    if "ingest" in stages:
        run["data"] = _collect_data(stages, lineage)
    if "encoder" in stages:
        run["encoder"] = _collect_encoder(run["name"], stages["encoder"], lineage)
    if "evaluate" in stages:
        run.update(_collect_evaluation(run["name"], stages["evaluate"], lineage))
    if "train" in stages:
        run["train"] = _describe_training(Path(stages["train"]["dir"]))
    return run


def _describe_training(run_dir: Path) -> str:
    from tasks.evaluate.learning import describe_training

    try:
        return describe_training(run_dir)
    except (FileNotFoundError, KeyError, ValueError) as exc:  # a dispatched or unfinished run
        return f"not described: {exc}"


def _collect_data(stages: dict, lineage: Lineage) -> dict[str, Any]:
    ingest = stages["ingest"]
    summary = ingest["marker"].get("summary", {})
    file = Path(ingest["dir"]) / MARKER
    out: dict[str, Any] = {"dir": ingest["dir"], "ingest": summary, "ingest_file": str(file)}
    for k in ("found", "kept", "filtered", "quarantined"):
        if k in summary:
            lineage.add("Data", f"ingest {k}", str(summary[k]), file, ingest)
    shard = stages.get("shard")
    if shard:
        path = Path(shard["dir"]) / "summary.json"
        if path.exists():
            s = _json(path)
            out.update(shard_splits=s.get("splits", {}), paper_counts=s.get("paper_counts"), shard_file=str(path))
            for split, v in (s.get("paper_counts") or {}).get("this_run", {}).items():
                for k in ("images", "studies", "pairs"):
                    if k in v:
                        lineage.add("Data", f"{split} {k}", str(v[k]), path, shard)
    return out


def _collect_encoder(name: str, stage: dict, lineage: Lineage) -> dict[str, Any]:
    d = Path(stage["dir"]) / "retrieval"
    if not (d / "metrics.json").exists():
        return {"not_computed": f"not computed: no retrieval evaluation under {d}"}
    metrics = EvaluationMetrics.model_validate_json((d / "metrics.json").read_text())
    notes = _json(d / "retrieval.json") if (d / "retrieval.json").exists() else {}
    for k, m in metrics.metrics.items():
        lineage.add("Image encoder", f"{name} {k}", _short(m), d / "metrics.json", stage)
    return {"metrics": metrics, "notes": notes.get("retrieval", {}), "samples": notes.get("samples"),
            "file": str(d / "metrics.json")}


def _collect_evaluation(name: str, stage: dict, lineage: Lineage) -> dict[str, Any]:
    d = Path(stage["dir"])
    if not (d / "metrics.json").exists():
        return {"evaluation": None}
    metrics = EvaluationMetrics.model_validate_json((d / "metrics.json").read_text())
    for k, m in metrics.metrics.items():
        lineage.add("Report generation", f"{name} {k}", _short(m), d / "metrics.json", stage)
    for b, res in metrics.baselines.items():
        for k in ("rule_f1_micro_14", "rule_balanced_accuracy_macro_14"):
            if k in res.metrics:
                lineage.add("Report generation", f"{name} baseline {b} {k}", _short(res.metrics[k]),
                            d / "metrics.json", stage)
    notes = _json(d / "notes.json") if (d / "notes.json").exists() else {}
    return {"evaluation": metrics, "eval_file": str(d / "metrics.json"),
            "chexprompt": _collect_chexprompt(d, notes.get("chexprompt"))}


def _collect_chexprompt(d: Path, notes: dict | None) -> dict[str, Any]:
    """Error counts by type and significance, from per_report.parquet (only when a judge ran)."""
    from tasks.evaluate.chexprompt import ERROR_NAMES, ERROR_TYPES

    out: dict[str, Any] = {"summary": notes or {}, "counts": None}
    path = d / "per_report.parquet"
    if not path.exists():
        return out
    import polars as pl

    frame = pl.read_parquet(path)
    cols = [f"chexprompt_{s}_{t}" for s in ("significant", "insignificant") for t in ERROR_TYPES]
    if all(c in frame.columns for c in cols):
        out["counts"] = [
            {"type": t, "name": ERROR_NAMES[t],
             "significant": int(frame[f"chexprompt_significant_{t}"].fill_nan(None).sum() or 0),
             "insignificant": int(frame[f"chexprompt_insignificant_{t}"].fill_nan(None).sum() or 0)}
            for t in ERROR_TYPES
        ]
        out["file"] = str(path)
    return out


def _collect_ablation(d: Path, runs: list[dict], lineage: Lineage) -> dict[str, Any]:
    board = d / "leaderboard.json"
    if not board.exists():
        raise UserError(f"{d} holds no leaderboard.json", "pass OUT/ablations/<name> of `cxrflow ablate`")
    rows = _json(board)
    _pair_retrieval(d.name, rows, runs)
    for r in rows:
        lineage.add("Ablations", f"{d.name} {r['variant']} {r['metric']} (vs baseline)",
                    "" if r.get("diff") is None else f"{r['diff']:+.2f}", board, None)
    baseline = next((r["variant"] for r in rows if r.get("status") == "baseline"), None)
    return {"name": d.name, "dir": str(d), "file": str(board), "rows": rows, "baseline": baseline,
            "seeds": seed_spread(rows)}


def _pair_retrieval(name: str, rows: list[dict], runs: list[dict]) -> None:
    """Fill the paired difference of each retrieval row from the encoders' per-query hits (the compare flow
    pairs per_report.parquet, which holds no retrieval columns): tasks/evaluate/retrieval.compare_retrieval
    against the baseline variant's encoder."""
    from schemas.pipeline import slug
    from tasks.evaluate.retrieval import compare_retrieval

    enc = {r["name"]: Path(r["stages"]["encoder"]["dir"]) / "retrieval" for r in runs if "encoder" in r["stages"]}
    by_variant = {v: enc.get(f"{name}-{slug(v)}") or enc.get(f"{name}-{v}") for v in {r["variant"] for r in rows}}
    baseline = next((r["variant"] for r in rows if r.get("status") == "baseline"), None)
    base_dir = by_variant.get(baseline)
    if base_dir is None or not (base_dir / "per_query.parquet").exists():
        return
    paired: dict[str, dict] = {}
    for r in rows:
        v_dir = by_variant.get(r["variant"])
        if (not r["metric"].startswith("retrieval_") or r["variant"] == baseline or r.get("diff") is not None
                or r.get("value") is None or v_dir is None or not (v_dir / "per_query.parquet").exists()):
            continue
        if r["variant"] not in paired:
            paired[r["variant"]] = compare_retrieval(base_dir, v_dir)
        c = paired[r["variant"]].get(r["metric"])
        if c and c.get("diff") is not None:
            lo, hi = c["diff_ci"]
            r.update(diff=c["diff"], diff_ci_low=lo, diff_ci_high=hi, p_value=c["p_value"], p_floor=c.get("p_floor"), n=c["n"],
                     status="compared (paired by query, the encoders' per_query.parquet)")


def seed_spread(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(variant without its `-seed<S>` suffix, metric) -> mean, sd and count of the values over training
    seeds (`train.seeds` in an ablation spec), for variants run with more than one seed."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        m = SEED_SUFFIX.match(r["variant"])
        if m and r.get("value") is not None:
            groups.setdefault((m["variant"], r["metric"]), []).append(float(r["value"]))
    return {k: {"mean": statistics.fmean(v), "sd": statistics.stdev(v), "n": len(v)}
            for k, v in groups.items() if len(v) > 1}
