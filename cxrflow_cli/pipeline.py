"""`cxrflow pipeline`, `cxrflow ablate`, `cxrflow compare`: the whole system from one YAML."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cxrflow_cli._common import run_flow


def parse_sets(sets: list[str] | None) -> dict:
    """`--set train.max_steps=5` -> {"train.max_steps": 5} (values parsed as YAML scalars)."""
    import yaml

    from schemas.safe_load import load_yaml_text

    out = {}
    for item in sets or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = load_yaml_text(v)
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"--set {k.strip()}: {' '.join(str(e).split())}") from None
    return out


def load_config(path: Path, overrides: dict):
    """The pipeline YAML + --set overrides, as a PipelineConfig or a one-line UserError ("did you mean")."""
    from pydantic import ValidationError

    from cxrflow_cli._common import load_yaml_mapping
    from schemas.errors import UserError, validation_message
    from schemas.pipeline import PipelineConfig, apply_overrides

    try:
        return PipelineConfig.model_validate(apply_overrides(load_yaml_mapping(path, "--config"), overrides))
    except ValidationError as exc:
        raise validation_message(exc, PipelineConfig) from None
    except ValueError as exc:  # an override through a non-section
        raise UserError(str(exc)) from None


def check_variants(ablation, spec: Path) -> None:
    """Every variant's config and data root, before the first run starts; a missing fixture is named with the
    command in the spec's (or its base file's) header."""
    from cxrflow_cli._common import load_yaml_mapping
    from cxrflow_cli._headers import with_fixture_hint
    from tasks.plan import checked_stage_configs

    base = load_yaml_mapping(spec, "--spec").get("base")
    headers = [spec] + ([spec.parent / base, Path(base)] if isinstance(base, str) else [])
    for variant in ablation.variants:
        try:
            checked_stage_configs(ablation.variant_config(variant))
        except Exception as exc:
            raise with_fixture_hint(exc, headers) from None


def register(app: typer.Typer) -> None:
    @app.command("pipeline")
    def pipeline_cmd(
        config: Path = typer.Option(..., "--config", help="pipeline YAML (configs/demo.yaml)"),
        set_: list[str] = typer.Option(None, "--set", help="override, e.g. --set train.max_steps=5"),
        dask: str | None = typer.Option(
            None, "--dask", help="Dask scheduler address for ingest (tcp://host:8786)"
        ),
    ) -> None:
        """ingest -> structure -> validate/shard -> train -> evaluate; unchanged stages are reused."""
        from flows.pipeline import pipeline
        from tasks.plan import checked_stage_configs, render_text

        overrides = parse_sets(set_)
        if dask:
            overrides["dask_address"] = dask
        cfg = load_config(config, overrides)
        try:
            checked_stage_configs(cfg)  # before the flow (and its server) starts
        except Exception as exc:  # a missing fixture: the header's command that writes it
            from cxrflow_cli._headers import with_fixture_hint

            raise with_fixture_hint(exc, [config]) from None
        result = run_flow(pipeline, cfg)  # a user error found inside (an unreadable annotations file...): one line, main.py
        typer.echo(render_text(result))

    @app.command("ablate")
    def ablate_cmd(
        spec: Path = typer.Option(
            ..., "--spec", exists=True, help="ablation YAML (configs/ablations/X.yaml)"
        ),
        set_: list[str] = typer.Option(None, "--set", help="override on the base config of every variant"),
        deployment: str | None = typer.Option(
            None, "--deployment", help="run each variant via run_deployment, e.g. pipeline/pipeline"
        ),
        n_resamples: int = typer.Option(1000, "--n-resamples", min=1, help="paired-test resamples vs the baseline"),
        as_json: bool = typer.Option(False, "--json", help="print the leaderboard rows as JSON instead"),
        parallel: int | None = typer.Option(
            None, "--parallel", min=1, help="variants run at once, each training in its own process (default: one "
            "per CPU core; 1: one after the other)"),
    ) -> None:
        """One flow run per variant (tags ablation:<name>, variant:<name>), then the compare flow. Prints the
        comparison (value [CI], difference vs the baseline [CI], p, n), the Runs page and the folders."""
        from cxrflow_cli._ablation_text import render
        from flows.ablate import run_ablation
        from schemas.pipeline import load_ablation_spec

        ablation = load_ablation_spec(spec, parse_sets(set_))
        check_variants(ablation, spec)
        result = run_flow(run_ablation, ablation, deployment=deployment, n_resamples=n_resamples, parallel=parallel)
        if not as_json:
            typer.echo(render(result, ablation.baseline))
            return
        typer.echo(
            json.dumps(
                {
                    "leaderboard": result["compare"]["rows"],
                    "artifacts": [result["compare"]["leaderboard_key"], result["compare"]["chart_key"]],
                    "dir": result["compare"]["dir"],
                },
                indent=2,
            )
        )

    @app.command("compare")
    def compare_cmd(
        evals: list[str] = typer.Argument(..., help="variant=EVAL_DIR ... (EVAL_DIR holds metrics.json)"),
        name: str = typer.Option("adhoc", "--name", help="ablation name (artifact keys)"),
        baseline: str | None = typer.Option(None, "--baseline", help="default: the first variant"),
        metrics: str = typer.Option(
            "rouge_l,bleu_4,rule_f1_micro_14,rule_f1_micro_5",
            "--metrics",
            help="comma-separated metrics to chart and test",
        ),
        out: Path = typer.Option(Path("artifacts"), "--out", help="where the comparison is written"),
        n_resamples: int = typer.Option(1000, "--n-resamples", min=1, help="paired-test resamples"),
    ) -> None:
        """Leaderboard + CI chart + paired significance of existing evaluations."""
        from flows.compare import compare
        from schemas.errors import UserError

        pairs = dict(e.split("=", 1) for e in evals if "=" in e)
        if len(pairs) != len(evals):
            raise typer.BadParameter("each argument is variant=EVAL_DIR")
        for variant, folder in pairs.items():
            path = Path(folder) / "metrics.json"
            if not path.is_file():
                raise UserError(
                    f"{variant}={folder}: no metrics.json there", "pass EVAL folders of `cxrflow evaluate`"
                )
        if baseline is not None and baseline not in pairs:
            raise UserError(f"--baseline {baseline!r} is not one of the variants: {', '.join(pairs)}")
        from pydantic import ValidationError

        from schemas.evaluation import EvaluationMetrics

        for variant, folder in pairs.items():
            path = Path(folder) / "metrics.json"
            try:  # read here, before the flow: a broken file was found inside it, without its name
                EvaluationMetrics.model_validate_json(path.read_bytes())
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                raise UserError(
                    f"{variant}={folder}: {path.name} is not an evaluation's metrics "
                    f"({where + ': ' if where else ''}{first['msg']})",
                    "pass EVAL folders of `cxrflow evaluate`",
                ) from None
        from tasks.variants import producing_run

        res = run_flow(
            compare, name, pairs, baseline or next(iter(pairs)), metrics.split(","), str(out), n_resamples=n_resamples,
            runs={v: producing_run(folder) for v, folder in pairs.items()},  # the pipeline runs that wrote them
        )
        typer.echo(json.dumps(res["rows"], indent=2))
