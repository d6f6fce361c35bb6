"""Score prediction records: every metric with value, 95% bootstrap CI and n, or a not-computed reason,
plus the per-report table (texts, per-report statistics, labels) that paired comparisons re-use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from schemas.evaluation import EvaluateParams, EvaluationMetrics, MetricResult, OptionalModelPaths
from tasks.evaluate.baselines import compute_baselines
from tasks.evaluate.chexprompt import (
    INSIG_COLUMNS,
    SIG_COLUMNS,
    chexprompt_specs,
    judge,
    not_computed_metrics,
)
from tasks.evaluate.clinical import f1_specs, label_columns, rate_specs
from tasks.evaluate.labeler import label_reports
from tasks.evaluate.lexical import lexical_columns, lexical_spec, lexical_specs, reference_bleu
from tasks.evaluate.optional_models import bertscore_spec, chexbert_specs, optional_metrics, radgraph_spec
from tasks.evaluate.resampling import N_BOOTSTRAP, SEED, MetricSpec, bootstrap_indices, score


def all_specs() -> list[MetricSpec]:
    """Every metric that can be recomputed from per_report.parquet (for bootstrap and paired tests)."""
    return [
        *lexical_specs(),
        *f1_specs(),
        *rate_specs(),
        *chexbert_specs(),
        radgraph_spec(),
        bertscore_spec(),
        *chexprompt_specs(),
    ]


def score_records(
    records: Sequence[dict[str, Any]],
    *,
    experiment: str = "default",
    paths: OptionalModelPaths | None = None,
    llm: Any = None,
    source: str = "mimic-cxr",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = SEED,
    ledger_path: Any = None,
    bootstrap_scheme: str = "cxrflow",
    chexprompt_protocol: str = "json",
    chexprompt_src: Any = None,
    train_refs: Sequence[str] | None = None,
) -> tuple[EvaluationMetrics, pl.DataFrame, dict[str, Any]]:
    """(metrics.json model, per-report frame, notes). `llm`: an LLMConfig for CheXprompt, or None to skip.
    `train_refs`: the training split's references, for the baselines that need no training
    (tasks/evaluate/baselines.py); without them metrics.json has no `baselines`."""
    refs = [str(r["reference"]) for r in records]
    preds = [str(r["prediction"]) for r in records]
    n = len(records)
    cols: dict[str, np.ndarray] = lexical_columns(refs, preds)
    cols.update(label_columns("rule", "ref", label_reports(refs)))
    cols.update(label_columns("rule", "pred", label_reports(preds)))
    idx = bootstrap_indices(n, n_bootstrap, seed, bootstrap_scheme) if n and n_bootstrap else None
    metrics: dict[str, MetricResult] = {}
    local_specs = [*lexical_specs(), *f1_specs(), *rate_specs()]  # no model weights or LLM needed
    for spec in local_specs:
        metrics[spec.name] = score(spec, cols, idx)
    if bootstrap_scheme == "reference":  # the reference takes BLEU's interval from sacrebleu's own bootstrap
        for order, spec in ((1, lexical_spec("bleu_1")), (4, lexical_spec("bleu_4"))):
            metrics[spec.name] = reference_bleu(refs, preds, order, n_bootstrap, spec)
    ref_cols = {k: v for k, v in cols.items() if k.startswith("rule_ref_")}
    baselines = compute_baselines(train_refs or [], refs, ref_cols, local_specs, idx) if n else {}
    optional, opt_cols = optional_metrics(
        paths or OptionalModelPaths.from_env(), refs, preds, n_bootstrap, seed, bootstrap_scheme
    )
    metrics.update(optional)
    cols.update(opt_cols)
    notes: dict[str, Any] = {}
    text_cols: dict[str, list[str]] = {}
    if llm is None:
        metrics.update(not_computed_metrics("no LLM backend configured for the CheXprompt judge"))
    else:
        outcome = judge(
            [
                {
                    "id": r["id"],
                    "reference": r["reference"],
                    "candidate": r["prediction"],
                    "source": r.get("source"),
                }
                for r in records
            ],
            llm,
            source=source,
            ledger_path=ledger_path,
            n_bootstrap=n_bootstrap,
            seed=seed,
            bootstrap_scheme=bootstrap_scheme,
            protocol=chexprompt_protocol,
            chexprompt_src=chexprompt_src,
        )
        metrics.update(outcome.metrics)
        if llm.backend != "rules":
            cols.update(outcome.columns)
            # every judgment carries the protocol and prompt version it was made under
            text_cols["chexprompt_protocol"] = [outcome.protocol] * n
            text_cols["chexprompt_prompt_version"] = [outcome.prompt_version] * n
            if "chexprompt_src_sha256" in outcome.provenance:  # the published evaluator.py it came from
                text_cols["chexprompt_src_sha256"] = [outcome.provenance["chexprompt_src_sha256"]] * n
        notes["chexprompt"] = {**outcome.summary, "not_judged": outcome.reasons}
    frame = pl.DataFrame(
        {
            "id": [str(r["id"]) for r in records],
            # `<subject>_<study>` when known: compare-evals --pair-by study pairs on it
            "study": pl.Series([r.get("study") for r in records], dtype=pl.String),
            "reference": refs,
            "prediction": preds,
            **{k: v for k, v in cols.items()},
            **text_cols,
        }
    )
    result = EvaluationMetrics(
        experiment=experiment,
        n_reports=n,
        n_bootstrap=n_bootstrap,
        seed=seed,
        bootstrap_scheme=bootstrap_scheme,
        metrics=metrics,
        baselines=baselines,
    )
    return result, frame, notes


TEXT_COLUMNS = (
    "id",
    "study",
    "reference",
    "prediction",
    "chexprompt_protocol",
    "chexprompt_prompt_version",
    "chexprompt_src_sha256",
)


def frame_columns(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for c in frame.columns:
        if c in TEXT_COLUMNS:
            continue
        arr = frame[c].to_numpy()
        if c in SIG_COLUMNS + INSIG_COLUMNS:
            arr = arr.astype(float)
        out[c] = arr
    return out


def metric_rows(metrics: EvaluationMetrics) -> list[dict[str, Any]]:
    rows = []
    for name, m in metrics.metrics.items():
        rows.append(
            {
                "metric": name,
                "value": None if m.value is None else round(m.value, 4),
                "ci_low": None if m.ci is None else round(m.ci[0], 4),
                "ci_high": None if m.ci is None else round(m.ci[1], 4),
                "bootstrap_median": None if m.bootstrap_median is None else round(m.bootstrap_median, 4),
                "n": m.n,
                "unit": m.unit,
                "status": "computed" if m.value is not None else m.not_computed,
            }
        )
    return rows


def _short(m: MetricResult | None) -> str:
    if m is None:
        return ""
    if m.value is None:
        return "not computed"
    return f"{m.value:.2f}" + (f" [{m.ci[0]:.2f}, {m.ci[1]:.2f}]" if m.ci else "")


def markdown_summary(metrics: EvaluationMetrics, notes: dict[str, Any] | None = None) -> str:
    base = metrics.baselines
    lines = [
        f"# Evaluation `{metrics.experiment}`",
        "",
        f"{metrics.n_reports} reports; {int(metrics.ci_level * 100)}% bootstrap CIs over {metrics.n_bootstrap} "
        f"resamples (seed {metrics.seed}, {metrics.bootstrap_scheme} draw). Value = point estimate on all "
        "reports; bootstrap median = median over the resamples (what the LLaVA-Rad paper reports). "
        "Rule-based label F1 uses cxrflow's rule-based CheXpert-style labeler, not CheXbert.",
        "",
        "| metric | value | 95% CI | bootstrap median | n |" + "".join(f" {b} [95% CI] |" for b in base),
        "|---|---|---|---|---|" + "---|" * len(base),
    ]
    for name, m in metrics.metrics.items():
        beside = "".join(f" {_short(b.metrics.get(name))} |" for b in base.values())
        if m.value is None:
            lines.append(f"| {name} | {m.not_computed} | | | |{beside}")
        else:
            ci = f"{m.ci[0]:.2f} – {m.ci[1]:.2f}" if m.ci else ""
            med = f"{m.bootstrap_median:.2f}" if m.bootstrap_median is not None else ""
            lines.append(f"| {name} | {m.value:.2f} | {ci} | {med} | {m.n} |{beside}")
    for b_name, b in base.items():
        lines += ["", f"Baseline `{b_name}` (no training): {b.description}: \"{b.prediction}\""]
    if notes and "inference" in notes:
        inf = notes["inference"]
        lines += [
            "",
            f"Inference: found {inf['found']}, generated {inf['generated']}, skipped {len(inf['skipped'])}.",
        ]
    return "\n".join(lines) + "\n"


def write_evaluation(
    out: Any, metrics: EvaluationMetrics, frame: pl.DataFrame, notes: dict[str, Any]
) -> None:
    """EVAL/metrics.json, EVAL/per_report.parquet, EVAL/notes.json, EVAL/summary.md."""
    from pathlib import Path

    from cxrio import atomic_write_bytes, atomic_write_json, atomic_write_parquet, clean_stale_temps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # what a killed run's writes left (unique temporary names do not overwrite)
    atomic_write_bytes(out / "metrics.json", (metrics.model_dump_json(indent=2) + "\n").encode())
    atomic_write_parquet(out / "per_report.parquet", frame)
    atomic_write_json(out / "notes.json", notes)
    atomic_write_bytes(out / "summary.md", markdown_summary(metrics, notes).encode())


def score_predictions(
    params: EvaluateParams, predictions: Any, inference: dict[str, Any] | None = None
) -> EvaluationMetrics:
    """Score a predictions file into params.out (metrics.json, per_report.parquet, notes.json, summary.md): the
    `evaluate` flow's scoring and `cxrflow score`. `inference`: the generation summary when the flow wrote the
    file. Returns the EvaluationMetrics."""
    from pathlib import Path

    from cxrio import sha256_file
    from schemas.llm import LLMConfig
    from tasks.evaluate.inference import read_predictions

    predictions = Path(predictions)
    records = read_predictions(predictions)
    if params.limit is not None:
        records = records[: params.limit]
    train_refs = None
    if params.shards is not None:  # the baselines are fitted on the training split's references
        from tasks.evaluate.baselines import training_reports

        train_refs = training_reports(Path(params.shards))
    metrics, frame, notes = score_records(
        records,
        experiment=params.experiment,
        paths=params.model_paths,
        llm=LLMConfig(**params.llm) if params.llm is not None else None,
        source=params.source,
        n_bootstrap=params.n_bootstrap,
        seed=params.seed,
        bootstrap_scheme=params.bootstrap_scheme,
        chexprompt_protocol=params.chexprompt_protocol,
        chexprompt_src=params.chexprompt_src,
        ledger_path=Path(params.out) / "llm-ledger.jsonl",
        train_refs=train_refs,
    )
    metrics.predictions_sha256 = sha256_file(predictions)
    if params.encoder_metrics is not None:  # the encoder's retrieval metrics sit beside the report metrics
        enc = EvaluationMetrics.model_validate_json(Path(params.encoder_metrics).read_text())
        metrics.metrics.update(enc.metrics)
        notes["encoder_metrics"] = {"path": params.encoder_metrics, "n_queries": enc.n_reports}
    if inference is not None:
        notes["inference"] = inference
    write_evaluation(Path(params.out), metrics, frame, notes)
    return metrics
