"""Outputs byte-identical across a reshape: `python -m bench.bench_identity --rev f4387b3 [--no-pipeline]`.

Runs the same work with the code of a git revision (extracted with `git archive`) and with the working tree,
each in its own Python process, into the same absolute output folder (so paths written into outputs match),
then compares the outputs byte for byte:

- every source's fixture (bench/bench_sources.py's writers, no planted defects; written once and read by
  both sides, as some writers stamp DICOM UIDs and dates per run) through the plain task
  functions: ingest (one worker) -> structure (rules) -> validate (GX) -> shard -> indexes. Compared:
  manifest.parquet, reports.parquet, the stored images, the shard tars, `*.index.json`, shards.parquet.
- the demo's data path with a tiny training: the demo fixture (cxrflow demo's writer, fewer studies) through
  `cxrflow pipeline --config configs/demo.yaml` (every stage as Prefect flows, 3 optimizer steps per stage).
  Compared: the ingest manifest and images, the shards, the trained weights (`final/*.safetensors`).

Stage folder names carry config hashes, which a reshape may change (issue 24 changed the ingest and train
keys), so stage folders are matched by stage name, and in text files (JSON, markdown) a path into a stage
folder is compared without its key (a run's config.json, the LoRA adapter's base path, the LLaVA export's
image paths name them); binary files (tars, parquet, images, weights) byte for byte. Not compared (they hold timings, run ids or absolute
hashes of their own): summary.json, _complete.json, ledgers, GX stores, metrics.jsonl, loss.png.
Prints one row per compared file group and exits 1 on any difference."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run inside each tree (its own code): the fixtures of every source through the task functions.
SOURCES_DRIVER = r'''
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
out, src, images, only = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
from bench.bench_sources import writers
from schemas.config import ImageConfig, IngestConfig
from schemas.llm import LLMConfig, StructureConfig
from schemas.shards import ShardConfig, ValidateConfig
from tasks.ingest import run_ingest
from tasks.reports.structure import run_structure
from tasks.shard import write_shards
from tasks.shard_index import write_indexes
from tasks.validate import run_validation

for label, (adapter, writer, _) in writers().items():
    if only and label not in only:
        continue
    root, data, shards = src / label, out / "data" / label, out / "shards" / label
    if not root.exists():  # written once, by the first side: some writers stamp DICOM UIDs/dates per run
        writer(root, images, 0, 256)
    frontal = adapter != "openi"  # Open-I's XML form states no view (docs/datasets.md)
    run_ingest(IngestConfig(source=adapter, root=root, out=data, workers=1, image=ImageConfig(size=64),
                            frontal_only=frontal))
    run_structure(StructureConfig(manifest=data / "manifest.parquet", out=data,
                                  llm=LLMConfig(cache_dir=out / "llm-cache")))
    res = run_validation(data, shards, out / "artifacts", ValidateConfig(frontal_only=frontal,
                                                                        min_rows_fraction_of_found=0.0))
    infos = write_shards(res.accepted, data, shards, ShardConfig(max_samples=16))
    write_indexes(shards, data, infos, res.accepted, res.counts)
    print(f"{label}: {res.accepted.height} samples", flush=True)
'''

DEMO_DRIVER = r'''
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
out, src = Path(sys.argv[1]), Path(sys.argv[2])
from fixtures.mimic_cxr import write_mimic_cxr
if not (src / "mimic-cxr").exists():
    write_mimic_cxr(src / "mimic-cxr", studies=int(sys.argv[3]), seed=0, jpg=True, learnable=True,
                    annotations=True)
from cxrflow_cli.main import run
sys.exit(run(["pipeline", "--config", "configs/demo.yaml", "--set", f"out={out / 'pipeline'}",
              "--set", f"data.root={src / 'mimic-cxr'}"]))
'''

# Run records: timings, pids, wall-clock stamps.
STAGE_KEY = re.compile(rb"\b(ingest|structure|shard|encoder|train|evaluate)-[0-9a-f]{16}\b")
TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".txt"}
SKIP_NAMES = {"summary.json", "_complete.json", "ledger.jsonl", "metrics.jsonl", "loss.png", "lineage.json",
              ".cxrflow.lock", "source-hashes.parquet", "structure-summary.json"}


def extract(rev: str, dest: Path) -> Path:
    """The tree of `rev` (committed files only), as `git archive` gives it."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_driver(tree: Path, driver: str, args: list[str], env_extra: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), **env_extra}
    proc = subprocess.run([sys.executable, "-c", driver, *args], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"driver failed in {tree}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def digests(root: Path) -> dict[str, str]:
    """relative path (stage folders by stage name: `stages/train-<hash>` -> `stages/train`) -> sha256."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink() or p.name in SKIP_NAMES or any(
            part in {"gx", "validation", "llm-cache", "artifacts", "runs", "src", "checkpoints", ".wids", "base"}
            for part in p.relative_to(root).parts
        ):
            continue
        rel = list(p.relative_to(root).parts)
        if "stages" in rel[:-1]:  # stages/<stage>-<key> -> stages/<stage>
            i = rel.index("stages") + 1
            rel[i] = rel[i].rsplit("-", 1)[0]
        data = p.read_bytes()
        if p.suffix in TEXT_SUFFIXES:  # paths into stage folders name their keys: compare without them
            data = STAGE_KEY.sub(rb"\1", data)
        out["/".join(rel)] = hashlib.sha256(data).hexdigest()
    return out


def group(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if "/images/" in f"/{path}":
        return "images"
    if name.endswith(".tar"):
        return "shard tars"
    if name.endswith(".safetensors"):
        return "trained weights"
    return name


def compare(a: dict[str, str], b: dict[str, str], scope: str) -> bool:
    rows: dict[str, list[int]] = {}
    for path in sorted(set(a) | set(b)):
        r = rows.setdefault(group(path), [0, 0, 0])  # same, differ, only on one side
        if path not in a or path not in b:
            r[2] += 1
            print(f"  only {'rev' if path in a else 'tree'}: {path}")
        elif a[path] == b[path]:
            r[0] += 1
        else:
            r[1] += 1
            print(f"  differs: {path}")
    print(f"\n{scope}\n| files | identical | different | missing on one side |\n|---|---|---|---|")
    for g, (same, diff, missing) in sorted(rows.items()):
        print(f"| {g} | {same} | {diff} | {missing} |")
    return all(d == 0 and m == 0 for _, d, m in rows.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="f4387b3", help="git revision to compare against")
    ap.add_argument("--against", help="a second git revision instead of the working tree (e.g. HEAD)")
    ap.add_argument("--images", type=int, default=12, help="about this many fixture images per source")
    ap.add_argument("--studies", type=int, default=24, help="demo fixture studies")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the demo pipeline (Prefect) run")
    ap.add_argument("--no-sources", action="store_true", help="skip the per-source fixtures")
    ap.add_argument("--only", nargs="*", default=[], help="source labels (bench_sources.py; default: all)")
    ap.add_argument("--keep", type=Path, help="copy each side's outputs here (KEEP/rev, KEEP/tree)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as tmp:
        tmp = Path(tmp)
        trees = {"rev": extract(args.rev, tmp / "rev-tree"),
                 "tree": extract(args.against, tmp / "against-tree") if args.against else REPO}
        work, src = tmp / "work", tmp / "src"  # the same absolute paths for both sides; inputs written once
        sources = [str(work), str(src), str(args.images), *args.only]
        jobs = [] if args.no_sources else [("sources", SOURCES_DRIVER, sources)]
        if not args.no_pipeline:
            jobs.append(("demo pipeline", DEMO_DRIVER, [str(work), str(src), str(args.studies)]))
        for scope, driver, dargs in jobs:
            results = {}
            for side, tree in trees.items():
                shutil.rmtree(work, ignore_errors=True)
                env = {"PREFECT_HOME": str(tmp / f"prefect-{side}")}
                run_driver(tree, driver, dargs, env)
                results[side] = digests(work)
                if args.keep:
                    shutil.copytree(work, args.keep / scope.replace(" ", "-") / side, symlinks=True)
            same = compare(results["rev"], results["tree"],
                           f"{scope}: {args.rev} vs {args.against or 'the working tree'}")
            ok = ok and same
    print("\nidentical" if ok else "\nDIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
