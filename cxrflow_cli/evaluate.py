"""Evaluation commands: evaluate, score, chexprompt, compare-evals, generate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import BootstrapScheme, JudgeBackend, PairBy, Protocol, run_flow, value


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


_PROTOCOL_HELP = (
    "CheXprompt protocol: json (cxrflow's structured judge) | original (the published prompt, read from "
    "--chexprompt-src) | fewshot-own (cxrflow's paraphrase of the published request; not comparable)"
)
_SRC_HELP = "local checkout of microsoft/chexprompt (--protocol original reads its prompt there)"


def _chexprompt_src(protocol, src: Path | None) -> dict:
    """Checks the protocol/checkout pair before any work (one-line errors); the params' field."""
    from tasks.evaluate.chexprompt_published import check_protocol_source

    check_protocol_source(value(protocol), src)
    return {} if src is None else {"chexprompt_src": str(src)}
_SCHEME_HELP = "bootstrap resamples: cxrflow | reference (the LLaVA-Rad evaluation's draw)"
_SEED_HELP = "bootstrap seed (default 12345; 3 with --bootstrap-scheme reference)"


def _seed(seed: int | None) -> dict:
    """Only an explicit seed: EvaluateParams picks the scheme's default otherwise."""
    return {} if seed is None else {"seed": seed}


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
        split: str = typer.Option("test", "--split", help="shard split: train, validation or test"),
        experiment: str | None = typer.Option(None, "--experiment", help="name (default: run dir name)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="images per generation batch"),
        max_new_tokens: int = typer.Option(
            256, "--max-new-tokens", min=1, help="generation cap (LLaVA-Rad: 256)"
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="first N samples only"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
        backend: JudgeBackend | None = typer.Option(None, "--chexprompt-backend", help=_BACKEND_HELP),
        base_url: str | None = typer.Option(
            None, "--base-url", help="OpenAI-compatible endpoint of the judge"
        ),
        model: str | None = typer.Option(None, "--model", help="judge model / deployment name"),
        protocol: Protocol = typer.Option(Protocol.json, "--chexprompt-protocol", help=_PROTOCOL_HELP),
        bootstrap_scheme: BootstrapScheme = typer.Option(
            BootstrapScheme.cxrflow, "--bootstrap-scheme", help=_SCHEME_HELP
        ),
        seed: int | None = typer.Option(None, "--seed", help=_SEED_HELP),
        chexprompt_src: Path | None = typer.Option(None, "--chexprompt-src", help=_SRC_HELP),
    ) -> None:
        """Generate reports for a shard split with a trained run, then score them (flow `evaluate`)."""
        from flows.evaluate import evaluate
        from schemas.evaluation import EvaluateParams
        from tasks import preflight

        preflight.check_run_dir(run)
        preflight.check_shards(shards, split)
        preflight.check_out_dir(out)
        src = _chexprompt_src(protocol, chexprompt_src)
        backend = value(backend)

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
            chexprompt_protocol=value(protocol),
            bootstrap_scheme=value(bootstrap_scheme),
            **_seed(seed),
            **src,
        )
        from cxrflow_cli.progress import counter

        with counter("reports generated"):
            result = run_flow(evaluate, params)
        typer.echo(json.dumps(result, indent=2))

    @app.command("score")
    def score_cmd(
        predictions: Path = typer.Option(
            ..., "--predictions", help="predictions.jsonl {id, reference, prediction}"
        ),
        out: Path | None = typer.Option(None, "--out", help="EVAL dir (default: next to the predictions)"),
        experiment: str | None = typer.Option(None, "--experiment", help="name (default: the folder's name)"),
        n_bootstrap: int = typer.Option(
            500, "--n-bootstrap", min=0, help="bootstrap resamples for the 95% CIs"
        ),
        backend: JudgeBackend | None = typer.Option(None, "--chexprompt-backend", help=_BACKEND_HELP),
        base_url: str | None = typer.Option(
            None, "--base-url", help="OpenAI-compatible endpoint of the judge"
        ),
        model: str | None = typer.Option(None, "--model", help="judge model / deployment name"),
        seed: int | None = typer.Option(None, "--seed", help=_SEED_HELP),
        bootstrap_scheme: BootstrapScheme = typer.Option(
            BootstrapScheme.cxrflow, "--bootstrap-scheme", help=_SCHEME_HELP
        ),
        protocol: Protocol = typer.Option(Protocol.json, "--chexprompt-protocol", help=_PROTOCOL_HELP),
        source: str = typer.Option("mimic-cxr", "--source", help="dataset of the reports (data-use guard)"),
        chexprompt_src: Path | None = typer.Option(None, "--chexprompt-src", help=_SRC_HELP),
    ) -> None:
        """Score an existing predictions file (no Prefect server needed).

        A LLaVA-Rad predictions file is read as written (repeated `<subject>_<study>` ids, one line per image)."""
        from schemas.evaluation import EvaluateParams
        from tasks.evaluate.scoring import score_predictions
        from tasks.preflight import check_file, check_out_dir

        check_file(predictions, "--predictions", "a predictions.jsonl file")
        out = out or predictions.parent
        check_out_dir(out)
        src = _chexprompt_src(protocol, chexprompt_src)
        params = EvaluateParams(
            out=str(out),
            experiment=experiment or predictions.parent.name,
            predictions=str(predictions),
            n_bootstrap=n_bootstrap,
            bootstrap_scheme=value(bootstrap_scheme),
            chexprompt_protocol=value(protocol),
            source=source,
            llm=_llm_fields(value(backend), base_url, model, out / "llm-cache"),
            **_seed(seed),
            **src,
        )
        _print_metrics(score_predictions(params, predictions))
        typer.echo(f"wrote {out}/metrics.json and per_report.parquet")

    @app.command("chexprompt")
    def chexprompt_cmd(
        input: Path = typer.Option(..., "--input", help="JSONL of {id, reference, candidate}"),
        backend: JudgeBackend = typer.Option(JudgeBackend.openai, "--backend", help="judge backend"),
        base_url: str | None = typer.Option(
            None, "--base-url", help="OpenAI-compatible endpoint of the judge"
        ),
        model: str | None = typer.Option(None, "--model", help="judge model / deployment name"),
        out: Path | None = typer.Option(None, "--out", help="write judgments.jsonl + chexprompt.json here"),
        source: str = typer.Option("mimic-cxr", "--source", help="dataset of the reports (data-use guard)"),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="answer cache (reruns send nothing)"),
        protocol: Protocol = typer.Option(Protocol.json, "--protocol", help=_PROTOCOL_HELP),
        chexprompt_src: Path | None = typer.Option(None, "--chexprompt-src", help=_SRC_HELP),
    ) -> None:
        """Judge candidate findings against references with the CheXprompt-style LLM judge."""
        from tasks.preflight import check_file

        check_file(input, "--input", "a JSONL file of {id, reference, candidate}")
        _chexprompt_src(protocol, chexprompt_src)
        from schemas.llm import LLMConfig
        from tasks.evaluate.chexprompt import judge, write_judgments
        from tasks.evaluate.inference import read_predictions

        records = read_predictions(input)
        cfg = LLMConfig(**_llm_fields(value(backend), base_url, model, cache_dir))
        ledger = (out / "llm-ledger.jsonl") if out else None
        outcome = judge(
            records,
            cfg,
            source=source,
            ledger_path=ledger,
            protocol=value(protocol),
            chexprompt_src=chexprompt_src,
        )
        typer.echo(f"protocol {outcome.protocol}, prompt version {outcome.prompt_version}")
        for name, m in outcome.metrics.items():
            typer.echo(f"{name:42s} {m.display()}")
        if outcome.reasons:
            typer.echo(f"not judged: {len(outcome.reasons)} (first: {next(iter(outcome.reasons.values()))})")
        if out:
            write_judgments(out, records, outcome)

    @app.command("compare-evals")
    def compare_cmd(
        a: Path = typer.Argument(..., help="EVAL dir, per_report.parquet or predictions .jsonl of system A"),
        b: Path = typer.Argument(..., help="EVAL dir, per_report.parquet or predictions .jsonl of system B"),
        n_resamples: int = typer.Option(
            1000, "--n-resamples", min=1, help="paired-bootstrap resamples of report ids"
        ),
        pair_by: PairBy = typer.Option(
            PairBy.id,
            "--pair-by",
            help="id, or study (`<subject>_<study>`: pairs with a LLaVA-Rad predictions file)",
        ),
        out: Path | None = typer.Option(None, "--out", help="write the comparison JSON here"),
    ) -> None:
        """Paired significance (paired bootstrap: CI and p of B-A) for every metric on the same ids."""
        from tasks.evaluate.resampling import p_text
        from tasks.evaluate.significance import compare_evals

        for p in (a, b):
            if not p.exists():
                raise typer.BadParameter(f"{p} does not exist")
        try:
            cmp = compare_evals(a, b, n_resamples=n_resamples, pair_by=value(pair_by))
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        if cmp.note:
            typer.echo(cmp.note)
        for name, m in cmp.metrics.items():
            if m.p_value is None:
                typer.echo(f"{name:42s} {m.not_computed}")
            else:
                typer.echo(
                    f"{name:42s} A {m.a:8.3f}  B {m.b:8.3f}  B-A {m.diff:+8.3f} "
                    f"[{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}]  {p_text(m.p_value, m.p_floor, 4)}"
                )
        if out:
            out.write_text(cmp.model_dump_json(indent=2))

    @app.command("generate")
    def generate_cmd(
        run: Path = typer.Option(..., "--run", help="training run dir"),
        image: Path = typer.Option(..., "--image", help="a DICOM, JPEG or PNG chest X-ray"),
        indication: str | None = typer.Option(
            None, "--indication", help="clinical indication for the prompt"
        ),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="generation cap"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
    ) -> None:
        """Write the findings for one image (decoded and resized like ingest does)."""
        from tasks.preflight import check_file, check_run_dir

        check_run_dir(run)
        check_file(image, "--image", "a DICOM, JPEG or PNG file")
        from tasks.evaluate.single import load_image_like_ingest
        from training.inference import ReportGenerator

        img = load_image_like_ingest(image)
        gen = ReportGenerator.from_run(run, device=device)
        typer.echo(gen.generate([img], [indication], max_new_tokens=max_new_tokens)[0])
