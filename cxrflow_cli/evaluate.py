"""Evaluation commands: evaluate, score, chexprompt, compare-evals, generate."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _llm_fields(
    backend: str | None, base_url: str | None, model: str | None, cache_dir: Path | None
) -> dict | None:
    if backend is None:
        return None
    fields: dict = {"backend": "openai" if backend == "openai-compatible" else backend}
    if base_url:
        fields["base_url"] = base_url
    if model:
        fields["model"] = model
    if cache_dir:
        fields["cache_dir"] = str(cache_dir)
    return fields


_BACKEND_HELP = (
    "CheXprompt judge backend: rules|openai|azure|openai-compatible (with --base-url); omit to skip"
)


def _print_metrics(metrics) -> None:
    for name, m in metrics.metrics.items():
        typer.echo(f"{name:42s} {m.display()}")


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        run: Path = typer.Option(..., "--run", help="training run dir (config.json + final/)"),
        shards: Path = typer.Option(..., "--shards", help="SHARDS dir"),
        out: Path = typer.Option(..., "--out", help="EVAL dir"),
        split: str = typer.Option("test", "--split"),
        experiment: str | None = typer.Option(None, "--experiment", help="name (default: run dir name)"),
        batch_size: int = typer.Option(8, "--batch-size"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        limit: int | None = typer.Option(None, "--limit", help="first N samples only"),
        device: str = typer.Option("cpu", "--device"),
        backend: str | None = typer.Option(None, "--chexprompt-backend", help=_BACKEND_HELP),
        base_url: str | None = typer.Option(None, "--base-url"),
        model: str | None = typer.Option(None, "--model"),
    ) -> None:
        """Generate reports for a shard split with a trained run, then score them (flow `evaluate`)."""
        from flows.evaluate import evaluate
        from schemas.evaluation import EvaluateParams

        params = EvaluateParams(
            out=str(out),
            experiment=experiment or run.name,
            run=str(run),
            shards=str(shards),
            split=split,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            limit=limit,
            device=device,
            llm=_llm_fields(backend, base_url, model, out / "llm-cache"),
        )
        result = evaluate(params)
        typer.echo(json.dumps(result, indent=2))

    @app.command("score")
    def score_cmd(
        predictions: Path = typer.Option(
            ..., "--predictions", help="predictions.jsonl {id, reference, prediction}"
        ),
        out: Path | None = typer.Option(None, "--out", help="EVAL dir (default: next to the predictions)"),
        experiment: str | None = typer.Option(None, "--experiment"),
        n_bootstrap: int = typer.Option(500, "--n-bootstrap"),
        seed: int = typer.Option(12345, "--seed"),
        backend: str | None = typer.Option(None, "--chexprompt-backend", help=_BACKEND_HELP),
        base_url: str | None = typer.Option(None, "--base-url"),
        model: str | None = typer.Option(None, "--model"),
        source: str = typer.Option("mimic-cxr", "--source", help="dataset of the reports (data-use guard)"),
    ) -> None:
        """Score an existing predictions file (no Prefect server needed)."""
        from schemas.llm import LLMConfig
        from tasks.evaluate.inference import read_predictions
        from tasks.evaluate.scoring import score_records, write_evaluation
        from tasks.io import sha256_file

        out = out or predictions.parent
        fields = _llm_fields(backend, base_url, model, out / "llm-cache")
        records = read_predictions(predictions)
        metrics, frame, notes = score_records(
            records,
            experiment=experiment or predictions.parent.name,
            llm=LLMConfig(**fields) if fields else None,
            source=source,
            n_bootstrap=n_bootstrap,
            seed=seed,
            ledger_path=out / "llm-ledger.jsonl",
        )
        metrics.predictions_sha256 = sha256_file(predictions)
        write_evaluation(out, metrics, frame, notes)
        _print_metrics(metrics)
        typer.echo(f"wrote {out}/metrics.json and per_report.parquet")

    @app.command("chexprompt")
    def chexprompt_cmd(
        input: Path = typer.Option(..., "--input", help="JSONL of {id, reference, candidate}"),
        backend: str = typer.Option("openai", "--backend", help="rules|openai|azure|openai-compatible"),
        base_url: str | None = typer.Option(None, "--base-url"),
        model: str | None = typer.Option(None, "--model"),
        out: Path | None = typer.Option(None, "--out", help="write judgments.jsonl + chexprompt.json here"),
        source: str = typer.Option("mimic-cxr", "--source", help="dataset of the reports (data-use guard)"),
        cache_dir: Path | None = typer.Option(None, "--cache-dir"),
    ) -> None:
        """Judge candidate findings against references with the CheXprompt-style LLM judge."""
        from schemas.llm import LLMConfig
        from tasks.evaluate.chexprompt import INSIG_COLUMNS, SIG_COLUMNS, judge
        from tasks.evaluate.inference import read_predictions

        records = read_predictions(input)
        cfg = LLMConfig(**_llm_fields(backend, base_url, model, cache_dir))
        outcome = judge(records, cfg, source=source, ledger_path=(out / "llm-ledger.jsonl") if out else None)
        for name, m in outcome.metrics.items():
            typer.echo(f"{name:42s} {m.display()}")
        if outcome.reasons:
            typer.echo(f"not judged: {len(outcome.reasons)} (first: {next(iter(outcome.reasons.values()))})")
        if out:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "judgments.jsonl", "w") as f:
                for i, r in enumerate(records):
                    row = {"id": r["id"], **{c: outcome.columns[c][i] for c in SIG_COLUMNS + INSIG_COLUMNS}}
                    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                    row["not_judged"] = outcome.reasons.get(r["id"])
                    f.write(json.dumps(row) + "\n")
            (out / "chexprompt.json").write_text(
                json.dumps(
                    {
                        "metrics": {k: v.model_dump() for k, v in outcome.metrics.items()},
                        "summary": outcome.summary,
                    },
                    indent=2,
                    default=str,
                )
            )

    @app.command("compare-evals")
    def compare_cmd(
        a: Path = typer.Argument(..., help="EVAL dir (or per_report.parquet) of system A"),
        b: Path = typer.Argument(..., help="EVAL dir (or per_report.parquet) of system B"),
        n_resamples: int = typer.Option(1000, "--n-resamples"),
        out: Path | None = typer.Option(None, "--out", help="write the comparison JSON here"),
    ) -> None:
        """Paired significance (paired bootstrap: CI and p of B-A) for every metric on the same ids."""
        from tasks.evaluate.significance import compare_evals

        cmp = compare_evals(a, b, n_resamples=n_resamples)
        for name, m in cmp.metrics.items():
            if m.p_value is None:
                typer.echo(f"{name:42s} {m.not_computed}")
            else:
                typer.echo(
                    f"{name:42s} A {m.a:8.3f}  B {m.b:8.3f}  B-A {m.diff:+8.3f} "
                    f"[{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}]  p={m.p_value:.4f}"
                )
        if out:
            out.write_text(cmp.model_dump_json(indent=2))

    @app.command("generate")
    def generate_cmd(
        run: Path = typer.Option(..., "--run", help="training run dir"),
        image: Path = typer.Option(..., "--image", help="a DICOM, JPEG or PNG chest X-ray"),
        indication: str | None = typer.Option(None, "--indication"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        device: str = typer.Option("cpu", "--device"),
    ) -> None:
        """Write the findings for one image (decoded and resized like ingest does)."""
        from tasks.evaluate.single import load_image_like_ingest
        from training.inference import ReportGenerator

        img = load_image_like_ingest(image)
        gen = ReportGenerator.from_run(run, device=device)
        typer.echo(gen.generate([img], [indication], max_new_tokens=max_new_tokens)[0])
