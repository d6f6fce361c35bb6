"""`cxrflow import-llava-rad`: the released LLaVA-Rad checkpoint as a cxrflow run (a baseline to evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("import-llava-rad")
    def import_llava_rad(
        src: Path = typer.Option(..., "--from", help="the microsoft/llava-rad release directory"),
        lm_path: Path = typer.Option(..., "--lm-path", help="local Vicuna-7B v1.5 directory (the base LM)"),
        out: Path = typer.Option(..., "--out", help="new run dir (must not exist)"),
        text_model_dir: Path | None = typer.Option(
            None,
            "--text-model-dir",
            help="local dir with the config of BiomedCLIP-CXR's BERT text tower (else the HF cache must hold it)",
        ),
        allow_pickle: bool = typer.Option(
            False, "--allow-pickle", help="unpickle the vision checkpoint fully (a trusted source only)"
        ),
    ) -> None:
        """Convert the released LLaVA-Rad model into a run dir for `generate` and `evaluate`.

        Reads the LoRA adapter, non_lora_trainables.bin and the BiomedCLIP-CXR vision tower."""
        from training.llava_rad_release import ReleaseFormatError, convert_release

        try:
            receipt = convert_release(
                src, lm_path, out, text_model_dir=text_model_dir, allow_pickle=allow_pickle
            )
        except ReleaseFormatError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            json.dumps({k: receipt[k] for k in ("lora", "lora_tensors", "projector_tensors", "vision")})
        )
        typer.echo(f"wrote {out} (config.json, vision/, tokenizer/, final/, import.json)")
