"""`cxrflow fixtures chexpert|padchest|chestxray14|openi`: the public-dataset fixtures, added to the
`fixtures` command group that cxrflow_cli/fixtures.py defines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli._common import out_folder

Out = Annotated[Path, typer.Option(help="dataset root to write", callback=out_folder)]
Seed = Annotated[int, typer.Option(help="same seed, same bytes")]
Size = Annotated[int, typer.Option(help="image side in px")]
Quirks = Annotated[bool, typer.Option("--defects/--no-defects", help="plant one input per defect kind")]
Patients = Annotated[int, typer.Option(help="patients to write", min=1)]
Images = Annotated[int, typer.Option(help="images to write", min=1)]
Reports = Annotated[int, typer.Option(help="reports to write", min=1)]


def _echo(facts: dict, out: Path) -> None:
    typer.echo(json.dumps({k: v for k, v in facts.items() if k != "labels"}, default=str))
    typer.echo(f"wrote under {out}")


def register(app: typer.Typer) -> None:
    from cxrflow_cli.fixtures import fixtures_app

    @fixtures_app.command("chexpert")
    def chexpert(out: Out = ..., patients: Patients = 6, seed: Seed = 0, size: Size = 64,
                 small: bool = typer.Option(False, "--small", help="CheXpert-v1.0-small prefix"),
                 defects: Quirks = True,
                 learnable: bool = typer.Option(False, "--learnable", help="findings drawn into the pixels, "
                                                "labels and reports stating exactly them")) -> None:
        """CheXpert-v1.0/{train,valid}.csv + images, and the CheXpert-Plus report CSV (sources chexpert, chexpert-plus)."""
        from fixtures.chexpert import write_chexpert

        _echo(write_chexpert(out, patients=patients, seed=seed, size=size, small=small, quirks=defects,
                             learnable=learnable), out)

    @fixtures_app.command("padchest")
    def padchest(out: Out = ..., images: Images = 16, seed: Seed = 0, size: Size = 64, defects: Quirks = True) -> None:
        """PadChest: 36-column CSV, 16-bit PNGs in numbered folders."""
        from fixtures.padchest import write_padchest

        _echo(write_padchest(out, images=images, seed=seed, size=size, quirks=defects), out)

    @fixtures_app.command("chestxray14")
    def chestxray14(out: Out = ..., images: Images = 16, seed: Seed = 0, size: Size = 64,
                    old: bool = typer.Option(False, "--old", help="Data_Entry_2017.csv with trailing commas"),
                    defects: Quirks = True) -> None:
        """NIH ChestX-ray14: Data_Entry CSV, images_NNN/images/, split lists."""
        from fixtures.chestxray14 import write_chestxray14

        facts = write_chestxray14(out, images=images, seed=seed, size=size, variant="2017" if old else "v2020",
                                  quirks=defects)
        _echo(facts, out)

    @fixtures_app.command("openi")
    def openi(out: Out = ..., reports: Reports = 8, seed: Seed = 0, size: Size = 64,
              kaggle: bool = typer.Option(False, "--kaggle", help="indiana_reports/projections CSV variant"),
              defects: Quirks = True) -> None:
        """Open-I: ecgen-radiology/*.xml + NLMCXR_png/, or the Kaggle CSV variant."""
        from fixtures.openi import write_openi

        _echo(write_openi(out, reports=reports, seed=seed, size=size, variant="kaggle" if kaggle else "xml",
                          quirks=defects), out)
