"""`cxrflow fixtures <source>`: synthetic datasets in each source's real released layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli._common import FixtureSize, out_folder, value

fixtures_app = typer.Typer(
    help="Write synthetic datasets in their real released layouts.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(fixtures_app, name="fixtures")


@fixtures_app.command("mimic-cxr")
def mimic_cxr(
    out: Annotated[Path, typer.Option(help="dataset root to write", callback=out_folder)] = ...,
    studies: Annotated[int, typer.Option(help="number of good studies", min=1)] = 8,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    jpg: Annotated[bool, typer.Option("--jpg", help="MIMIC-CXR-JPG layout instead of DICOM")] = False,
    size: Annotated[
        FixtureSize, typer.Option(help="small (~256 px, tests) or full (~2500x3000, benchmarks)")
    ] = FixtureSize.small,
    defects: Annotated[
        bool, typer.Option("--defects/--no-defects", help="add one input per defect kind")
    ] = True,
    annotations: Annotated[
        bool,
        typer.Option(
            "--annotations",
            help="also write LLaVA-Rad MIMIC-CXR Annotations files (OUT/llava-rad-mimic-cxr-annotation)",
        ),
    ] = False,
    learnable: Annotated[
        bool,
        typer.Option(
            "--learnable",
            help="findings drawn into the pixels and stated in "
            "the reports (fixtures/learnable.py): a task a model can learn",
        ),
    ] = False,
) -> None:
    """MIMIC-CXR (DICOM) or MIMIC-CXR-JPG: files/pNN/pNNNNNNNN/sNNNNNNNN/..., reports, gzipped CSVs."""
    from fixtures.mimic_cxr import write_mimic_cxr

    truth = write_mimic_cxr(
        out,
        studies=studies,
        seed=seed,
        jpg=jpg,
        size=value(size),
        defects=defects,
        annotations=annotations,
        learnable=learnable,
    )
    typer.echo(
        f"wrote {len(truth.expected)} images ({truth.count('kept')} frontal, {truth.count('filtered')} "
        f"lateral, {truth.count('quarantined')} defective) under {out}"
    )
    if annotations:
        typer.echo(
            f"annotations: {truth.annotation_files[0].parent} ({len(truth.no_record)} image(s) without a "
            f"record, {truth.records_without_image} record(s) without an image)"
        )
