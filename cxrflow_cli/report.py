"""`cxrflow report`: the reproduction report of a run as one self-contained HTML page (tasks/report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    run: Annotated[Path, typer.Option("--run", help="OUT of `cxrflow pipeline`, `ablate` or `demo`")],
    html: Annotated[Path, typer.Option("--html", help="the HTML file to write (opens offline)")],
    ablations: Annotated[list[Path] | None, typer.Option(
        "--ablations", help="OUT/ablations/<name> folders to include (default: every one under the run)")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="also write the markdown twin here")] = None,
) -> None:
    """Write the report: Data, Image encoder, Report generation, Ablations, CheXprompt, Lineage."""
    from cxrio import atomic_write_bytes
    from schemas.errors import UserError
    from tasks.preflight import check_out_dir
    from tasks.report.render import render_markdown, write_report

    if not run.is_dir():
        raise UserError(f"--run {run} is not a folder", "pass the OUT of `cxrflow pipeline`, `ablate` or `demo`")
    for a in ablations or []:
        if not (a / "leaderboard.json").is_file():
            raise UserError(f"--ablations {a} holds no leaderboard.json", "pass OUT/ablations/<name>")
    check_out_dir(html.parent, "--html")
    data = write_report(run, html, ablations)
    if markdown is not None:
        atomic_write_bytes(markdown, render_markdown(data).encode())
    typer.echo(f"report: {html}")
