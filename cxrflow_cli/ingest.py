"""`cxrflow ingest`: one source into a manifest, through the Prefect flow (or locally with --no-prefect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli._common import (
    IMAGE_SIZE,
    SOURCE_HELP,
    ImageFormat,
    Resize,
    default,
    load_yaml_mapping,
    run_flow,
    value,
)
from schemas.config import ImageConfig, IngestConfig


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    source: Annotated[str, typer.Option(help=SOURCE_HELP)] = "mimic-cxr",
    root: Annotated[Path | None, typer.Option(help="the dataset as released")] = None,
    out: Annotated[Path, typer.Option(help="output folder (manifest, images, summary)")] = ...,
    size: Annotated[int, typer.Option(help="output image side in pixels", min=16, max=4096)] = IMAGE_SIZE,
    resize: Annotated[
        Resize, typer.Option(help="crop: shortest side, center crop (LLaVA-Rad); pad: square")
    ] = Resize(default(ImageConfig, "resize")),
    image_format: Annotated[
        ImageFormat, typer.Option("--format", help="stored image format")
    ] = ImageFormat(default(ImageConfig, "format")),
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality", min=1, max=100)] = default(
        ImageConfig, "jpeg_quality"),
    all_views: Annotated[bool, typer.Option("--all-views", help="keep lateral views too")] = False,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)", min=1)] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            help="images between progress updates, and the smallest chunk (one task run per chunk)", min=1
        ),
    ] = default(IngestConfig, "batch_size"),
    limit: Annotated[int | None, typer.Option(help="cap on candidate images", min=1)] = None,
    prefect: Annotated[bool, typer.Option("--prefect/--no-prefect", help="run as a Prefect flow")] = True,
    verify_checksums: Annotated[
        bool,
        typer.Option(
            "--verify-checksums",
            help="hash every file the root's SHA256SUMS.txt lists and compare (default: a fixed 1-in-64 sample)",
        ),
    ] = False,
    mixture: Annotated[
        Path | None, typer.Option(help="YAML MixtureConfig: several sources, one manifest")
    ] = None,
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            help="LLaVA-Rad MIMIC-CXR Annotations JSON (file or folder; repeatable): the released texts"
        ),
    ] = None,
) -> None:
    """Ingest a source in its released layout: decode, preprocess, parse reports, write the manifest."""
    from tasks import preflight

    preflight.check_out_dir(out)
    if mixture is not None:
        if annotations:
            raise typer.BadParameter("--annotations applies to one MIMIC-CXR source, not to a --mixture")
        _ingest_mixture(mixture, out, prefect)
        return
    preflight.check_source(source)
    preflight.check_root(source, root)

    from pydantic import ValidationError

    from tasks.reports.annotations import AnnotationsError, annotation_files

    try:
        cfg = IngestConfig(
            source=source,
            root=root,
            out=out,
            frontal_only=not all_views,
            workers=workers,
            batch_size=batch_size,
            limit=limit,
            image=ImageConfig(
                size=size, resize=value(resize), format=value(image_format), jpeg_quality=jpeg_quality
            ),
            annotations=annotations or [],
            verify_checksums=verify_checksums,
        )
        annotation_files(cfg.annotations)  # a missing file is a user error, before any work
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"].removeprefix("Value error, ")) from exc
    except AnnotationsError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _start_workers()  # the arguments are valid: from here on there is work for the pool
    from cxrflow_cli.progress import counter

    # The board hears the flow through flows/progress.py's listeners, the local run through `update`.
    with counter(f"ingest {source}") as update:
        try:  # an annotations file that exists but is not the release's JSON is found only when read
            if prefect:
                from flows.ingest import run_ingest_flow

                summary = run_flow(run_ingest_flow, cfg)
            else:
                from tasks.ingest import run_ingest

                summary = run_ingest(cfg, progress=update)
        except AnnotationsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    from tasks.mixture import SUMMARY_FIELDS

    typer.echo(json.dumps({k: summary[k] for k in SUMMARY_FIELDS}, indent=2))
    _echo_hint(summary)


def _echo_hint(summary: dict, name: str | None = None) -> None:
    """A source's hint (e.g. every film filtered for want of a view: what to pass instead), on stderr."""
    hint = summary.get("hint") or (summary.get("notes") or {}).get("hint")
    if hint:
        typer.echo(f"note: {name or summary.get('source', 'source')}: {hint}", err=True)


def _start_workers() -> None:
    """Start the pool's fork server now: its imports (the engine) overlap this process's own, before the
    first chunk needs a worker. Both modes use the same pool and workers (no Prefect in them: flows/runners.py
    LocalPoolTaskRunner)."""
    from tasks.ingest import start_worker_server

    start_worker_server(("cxrflow_cli._fork_server_exit",))


def _ingest_mixture(path: Path, out: Path, prefect: bool) -> None:
    from schemas.config import MixtureConfig
    from tasks.mixture import check_sources

    mix = MixtureConfig.model_validate({**load_yaml_mapping(path, "--mixture"), "out": out})
    check_sources(mix)
    _start_workers()
    if prefect:
        from flows.ingest import ingest_mixture_flow

        summary = run_flow(ingest_mixture_flow, mix)
    else:
        from tasks.mixture import run_mixture

        summary = run_mixture(mix)
    typer.echo(
        json.dumps(
            {k: summary[k] for k in ("found", "kept", "filtered", "quarantined", "per_source")}, indent=2
        )
    )
    for name, source_summary in summary["per_source"].items():
        _echo_hint(source_summary, name)
