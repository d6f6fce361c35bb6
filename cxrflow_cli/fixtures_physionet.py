"""`cxrflow fixtures brax|vindr-cxr|candid-ptx`: fixtures of the credentialed label-only and CANDID-PTX
sources, added to the `fixtures` command group that cxrflow_cli/fixtures.py defines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrflow_cli.fixtures_public import Images, Out, Patients, Quirks, Seed, Size, _echo


def register(app: typer.Typer) -> None:
    from cxrflow_cli.fixtures import fixtures_app

    @fixtures_app.command("brax")
    def brax(out: Out = ..., patients: Patients = 5, seed: Seed = 0, size: Size = 64, defects: Quirks = True,
             jpeg2000: bool = typer.Option(False, "--jpeg2000", help="JPEG 2000 compressed DICOMs")) -> None:
        """BRAX: master_spreadsheet_update.csv, Anonymized_DICOMs/ tree and its PNG twin."""
        from fixtures.brax import write_brax

        _echo(write_brax(Path(out), patients=patients, seed=seed, defects=defects, jpeg2000=jpeg2000, size=size), out)

    @fixtures_app.command("vindr-cxr")
    def vindr_cxr(out: Out = ..., train: Annotated[int, typer.Option(help="training images", min=1)] = 6,
                  test: Annotated[int, typer.Option(help="test images", min=0)] = 3, seed: Seed = 0, size: Size = 72,
                  defects: Quirks = True,
                  jpeg2000: bool = typer.Option(False, "--jpeg2000", help="JPEG 2000 compressed DICOMs")) -> None:
        """VinDr-CXR: train/ and test/ .dicom files, three readers per training image."""
        from fixtures.vindr_cxr import write_vindr_cxr

        _echo(write_vindr_cxr(Path(out), train=train, test=test, seed=seed, defects=defects, jpeg2000=jpeg2000,
                              size=size), out)

    @fixtures_app.command("candid-ptx")
    def candid_ptx(out: Out = ..., images: Images = 6, seed: Seed = 0, size: Size = 64, defects: Quirks = True) -> None:
        """CANDID-PTX: Pneumothorax_reports.csv (duplicate UID rows) and DICOMs named by SOPInstanceUID."""
        from fixtures.candid_ptx import write_candid_ptx

        _echo(write_candid_ptx(Path(out), images=images, seed=seed, defects=defects, size=size), out)
