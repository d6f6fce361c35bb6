"""Checks of what a command was asked to do, run before any server starts or any work begins.

The CLI calls them first (one-line errors, exit 2); each flow calls the same ones at its top, so a
deployment run fails with the same message. Each raises schemas.errors.UserError.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import UserError, did_you_mean


def check_source(name: str) -> None:
    from tasks.sources import get_adapter

    get_adapter(name)  # raises SourceLayoutError (a UserError) with a suggestion


def check_root(source: str, root: Path | None, options: dict | None = None) -> None:
    """The source's adapter recognises `root` (with its `options`) as its released layout (the engine's own
    pre-flight)."""
    from tasks.sources import get_adapter

    if root is None:
        raise UserError("no dataset root given", "pass --root DIR (or --mixture FILE)")
    if Path(root).exists() and not Path(root).is_dir():  # adapters would say "does not exist"
        raise UserError(f"--root {root} is a file, not a folder", "pass the dataset's top folder")
    get_adapter(source).check(Path(root), options or None)


def check_out_dir(out: Path, flag: str = "--out") -> None:
    """An output folder: absent (it will be made) or a folder, never a file; its parent must not be a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder", f"give a folder path for {flag}")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {out}: {parent} is a file, not a folder")
            break


def check_file(path: Path, flag: str, what: str, hint: str | None = None) -> None:
    if not Path(path).is_file():
        state = "is a folder" if Path(path).is_dir() else "does not exist"
        raise UserError(f"{flag} {path} {state}: expected {what}", hint)


def check_data_dir(data: Path, flag: str = "--data") -> None:
    """A folder holding manifest.parquet (the output of `cxrflow ingest`)."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"{flag} {data} is not a folder", "pass the --out folder of `cxrflow ingest`")
    if not (data / "manifest.parquet").is_file():
        raise UserError(
            f"{flag} {data} holds no manifest.parquet", "pass the --out folder of `cxrflow ingest`"
        )
    check_manifest(data / "manifest.parquet", flag)


# Columns every manifest has had (schemas/manifest.py, non-nullable), so a stray Parquet file is told apart.
MANIFEST_KEY_COLUMNS = ("image_key", "source", "subject_id", "study_id", "split", "image_path")


def check_manifest(path: Path, flag: str = "--manifest") -> None:
    """A manifest.parquet that opens as Parquet and has the manifest's key columns (its footer only is read;
    a stray file here was a traceback from inside the flow, after the server started)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        raise UserError(
            f"{flag}: {path} is not a readable Parquet file ({exc})", "pass what `cxrflow ingest` wrote"
        ) from None
    missing = [c for c in MANIFEST_KEY_COLUMNS if c not in names]
    if missing:
        raise UserError(
            f"{flag}: {path} is not a manifest (no {', '.join(missing)} column)",
            "pass what `cxrflow ingest` wrote",
        )


def check_shards(shards: Path, split: str = "train", flag: str = "--shards") -> None:
    """A shard folder with the split's wids index (the output of `cxrflow shard` / `cxrflow data`)."""
    from schemas.shards import SHARD_SPLITS, SPLITS, index_name, shard_split

    shards = Path(shards)
    hint = "pass the --out folder of `cxrflow shard` (or OUT/shards of `cxrflow data`)"
    if not shards.is_dir():
        raise UserError(f"{flag} {shards} is not a folder", hint)
    names = [*SHARD_SPLITS.values(), *(s for s in SPLITS if s not in SHARD_SPLITS.values())]
    if split not in names:  # the shard name (validation) or the manifest's (validate)
        raise UserError(
            f"unknown split {split!r}", did_you_mean(split, names) or f"one of {', '.join(names)}"
        )
    if not (shards / index_name(split)).is_file():
        if _split_is_empty(shards, shard_split(split)):
            return  # the shard stage wrote no index for an empty split; readers handle that themselves
        present = sorted(p.name for p in shards.glob("*.index.json"))
        more = f" (it has {', '.join(present)})" if present else ""
        raise UserError(f"{flag} {shards} is not a shard folder: no {index_name(split)}{more}", hint)
    _check_index(shards / index_name(split), flag)


def _check_index(index: Path, flag: str) -> None:
    """The wids index reads as one and every shard it names is there (urls relative to the index, as wids
    resolves them): a broken or half-copied shard folder was a traceback from inside the flow."""
    import json

    try:
        urls = [str(s["url"]) for s in json.loads(index.read_text(encoding="utf-8"))["shardlist"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{flag}: {index} is not a wids index ({type(exc).__name__}: {exc})", "re-run `cxrflow shard`"
        ) from None
    missing = [u for u in urls if "://" not in u and not (index.parent / u).is_file()]
    if missing:
        raise UserError(
            f"{flag}: {len(missing)} of the {len(urls)} shard(s) {index.name} names are missing (e.g. {missing[0]})",
            "copy the whole shard folder, or re-run `cxrflow shard`",
        )


def _split_is_empty(shards: Path, split: str) -> bool:
    import json

    summary = shards / "summary.json"
    try:
        return json.loads(summary.read_text())["splits"][split]["samples"] == 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def check_run_dir(run: Path, flag: str = "--run") -> None:
    """A training run folder (config.json + final/ written by `cxrflow train`)."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise UserError(
            f"{flag} {run} is not a training run (no config.json)", "pass the --out of `cxrflow train`"
        )
    if not (run / "final").is_dir():
        raise UserError(f"{flag} {run} has no finished stage (no final/)", "train it to the end first")


def check_train_config(cfg) -> None:
    """What a training config needs on disk: shards of its split, an output folder, local model folders."""
    check_shards(cfg.shards, cfg.split)
    check_out_dir(cfg.out)
    for flag, path in (("--vision-path", cfg.vision_path), ("--lm-path", cfg.lm_path)):
        if path is not None and not Path(path).is_dir():
            raise UserError(f"{flag} {path} is not a folder", "models load from local folders only")
    if cfg.preset == "llava-rad" and cfg.lm_path is not None:
        from training.text import lm_dir_problem

        problem = lm_dir_problem(Path(cfg.lm_path))  # config, weights, tokenizer and its packages
        if problem:
            raise UserError(f"--lm-path {problem}", "pass a local Vicuna-7B v1.5 directory")
    if cfg.vision_path is not None:
        v = Path(cfg.vision_path)
        if not ((v / "open_clip_config.json").is_file() or (v / "config.json").is_file()):
            raise UserError(
                f"--vision-path {v}: neither an open_clip dir (open_clip_config.json) nor a transformers "
                "CLIP dir (config.json)",
                "pass `cxrflow encoder`'s open_clip folder or a local CLIP vision model",
            )
    config = Path(cfg.out) / "config.json"
    if config.is_file():
        from schemas.train import TrainConfig

        try:
            old = TrainConfig.model_validate_json(config.read_text())
        except ValueError:
            return  # unreadable: the run itself reports it
        if old.fingerprint() != cfg.fingerprint():
            raise UserError(
                f"--out {cfg.out} holds a run with a different training config",
                "use a new --out, or the same settings to resume",
            )
