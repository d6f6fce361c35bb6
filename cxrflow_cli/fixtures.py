"""`cxrflow fixtures <source>`: synthetic datasets in each source's real released layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

fixtures_app = typer.Typer(help="Write synthetic datasets in their real released layouts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(fixtures_app, name="fixtures")


@fixtures_app.command("mimic-cxr")
def mimic_cxr(
    out: Annotated[Path, typer.Option(help="dataset root to write")] = ...,
    studies: Annotated[int, typer.Option(help="number of good studies")] = 8,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    jpg: Annotated[bool, typer.Option("--jpg", help="MIMIC-CXR-JPG layout instead of DICOM")] = False,
    size: Annotated[str, typer.Option(help="small (~256 px, tests) or full (~2500x3000, benchmarks)")] = "small",
    defects: Annotated[bool, typer.Option("--defects/--no-defects", help="add one input per defect kind")] = True,
    learnable: Annotated[bool, typer.Option("--learnable", help="findings drawn into the pixels and stated in "
                                            "the reports (fixtures/learnable.py): a task a model can learn")] = False,
) -> None:
    """MIMIC-CXR (DICOM) or MIMIC-CXR-JPG: files/pNN/pNNNNNNNN/sNNNNNNNN/..., reports, gzipped CSVs."""
    from fixtures.mimic_cxr import write_mimic_cxr

    if size not in ("small", "full"):
        raise typer.BadParameter("size must be small or full")
    truth = write_mimic_cxr(out, studies=studies, seed=seed, jpg=jpg, size=size, defects=defects,
                            learnable=learnable)
    typer.echo(f"wrote {len(truth.expected)} images ({truth.count('kept')} frontal, {truth.count('filtered')} "
               f"lateral, {truth.count('quarantined')} defective) under {out}")
