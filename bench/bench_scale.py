"""Time and peak memory of each data stage at two archive sizes, for extrapolation:
`python -m bench.bench_scale --images 2000 10000`.

A MIMIC-CXR-JPG fixture (208x256 JPGs, all views kept, output 64 px so pixel work stays small) goes through
the stages as plain task functions, each stage in a fresh process (`python -c`) so its peak RSS (the
process's own ru_maxrss, plus its pool workers for ingest) is its own: discover, ingest (bare, 2 workers),
structure (rules backend), validate (Great Expectations), shard (+ wids indexes), LLaVA export. Shard and
export need validation's accepted rows: they take validation/accepted.parquet itself and read it in batches
(code before issue 28 read it back as a frame).
The ratio of the two sizes says whether a stage grows linearly (x1 per x1 images).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

STAGES = {
    "discover": """
try:  # the plan's own discovery (candidates spilled in batches); older code: the listed discovery
    from tasks.ingest import discover_spilled as discover
except ImportError:
    from tasks.ingest import discover
discover(CFG)
""",
    "ingest": """
from tasks.ingest import run_ingest
run_ingest(CFG)
""",
    "structure": """
from schemas.llm import LLMConfig, StructureConfig
from tasks.reports.structure import run_structure
run_structure(StructureConfig(manifest=DATA / "manifest.parquet", out=DATA, llm=LLMConfig(backend="rules",
              cache_dir=OUT / "llm-cache")))
""",
    "validate": """
import os
from schemas.shards import ValidateConfig
import tasks.validate
from tasks.validate import run_validation
if os.environ.get("BENCH_VALIDATE_BATCH_ROWS"):  # --validate-batch-rows (code without batches ignores it)
    tasks.validate.BATCH_ROWS = int(os.environ["BENCH_VALIDATE_BATCH_ROWS"])
run_validation(DATA, OUT / "shards", OUT / "artifacts", ValidateConfig(frontal_only=False))
""",
    "shard": """
import polars as pl
from schemas.shards import SPLITS, ShardConfig
from tasks.shard import write_shards
from tasks.shard_index import write_shard_map, write_wids_index
accepted = OUT / "shards" / "validation" / "accepted.parquet"
try:  # the accepted file itself, read in batches; older code took the rows as a frame
    from tasks.accepted_rows import Accepted  # noqa: F401
except ImportError:
    accepted = pl.read_parquet(accepted)
T0 = time.perf_counter()
infos = write_shards(accepted, DATA, OUT / "shards", ShardConfig())
for split in SPLITS:
    write_wids_index(OUT / "shards", split, infos)
write_shard_map(OUT / "shards", infos, accepted)
""",
    "export": """
import polars as pl
from tasks.export_llava import export_llava
accepted = OUT / "shards" / "validation" / "accepted.parquet"
try:  # the accepted file itself, read in batches; older code took the rows as a frame
    from tasks.accepted_rows import Accepted  # noqa: F401
except ImportError:
    accepted = pl.read_parquet(accepted)
T0 = time.perf_counter()
export_llava(accepted, OUT / "shards")
""",
}

PRELUDE = """
import json, sys, time
from pathlib import Path
from schemas.config import ImageConfig, IngestConfig
OUT = Path(sys.argv[1]); DATA = Path(sys.argv[3]) if len(sys.argv) > 3 else OUT / "data"
CFG = IngestConfig(source="mimic-cxr", root=Path(sys.argv[2]), out=DATA, frontal_only=False, workers=2,
                   image=ImageConfig(size=64))
T0 = time.perf_counter()
"""
EPILOGUE = """
print(json.dumps({"s": time.perf_counter() - T0}))
"""


def _rollup(p: psutil.Process) -> dict[str, int]:
    """Rss, Pss and private (USS) bytes of a process from Linux /proc/PID/smaps_rollup; {} where the kernel has
    no rollup or the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        return {}
    return out


def track_peak_memory(proc: subprocess.Popen) -> tuple[threading.Thread, dict[str, int]]:
    """Sample a process and all its descendants every 0.1 s while it runs; peaks (bytes) of:
    - `rss`: the summed RSS (a page shared by the fork server and its workers counts once per process: an
      upper bound of the tree's footprint);
    - `tree`: the summed private pages (USS) plus the shared pages of the process with the most of them,
      counted once (a lower bound; unlike PSS it does not move with what other programs on the machine map);
    - `pss`: the summed PSS (shared pages split between every process on the machine that maps them: it
      moves with the machine's other load, so it is recorded, not used);
    - `root_rss`: the stage process's own RSS.
    psutil for the tree, because getrusage cannot see workers forked by a fork server (they are its
    children, never waited for by the stage's process)."""
    peak = {"rss": 0, "tree": 0, "pss": 0, "root_rss": 0}

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss, uss, shared, pss = [], 0, 0, 0
                for p in [root, *root.children(recursive=True)]:
                    m = _rollup(p)
                    rss.append(m.get("Rss", 0))
                    private = m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
                    uss += private
                    shared = max(shared, m.get("Rss", 0) - private)
                    pss += m.get("Pss", 0)
                peak["rss"] = max(peak["rss"], sum(rss))
                peak["tree"] = max(peak["tree"], uss + shared)
                peak["pss"] = max(peak["pss"], pss)
                peak["root_rss"] = max(peak["root_rss"], rss[0])
                time.sleep(0.1)
        except psutil.Error:
            return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread, peak


def run_stage(name: str, out: Path, root: Path, data: Path | None = None) -> dict:
    """Seconds of the stage's own work, and peak memory (MiB) of its process and every process under it (pool
    workers and their fork server for ingest), sampled every 0.1 s (track_peak_memory): summed RSS
    (`peak_mib`), private + shared-once (`peak_tree_mib`), summed PSS (`peak_pss_mib`) and the stage
    process's own RSS (`root_rss_mib`)."""
    code = PRELUDE + STAGES[name] + EPILOGUE
    proc = subprocess.Popen(
        ["nice", "-n", "5", sys.executable, "-c", code, str(out), str(root), *([str(data)] if data else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    thread, peak = track_peak_memory(proc)
    stdout, stderr = proc.communicate()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{name}: {stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_mib": peak["rss"] / 2**20,
            "peak_tree_mib": peak["tree"] / 2**20, "peak_pss_mib": peak["pss"] / 2**20,
            "root_rss_mib": peak["root_rss"] / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs=2, default=[2000, 10000])
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    ap.add_argument(
        "--reuse",
        type=Path,
        help="folder with src-N (fixture) and data-N (ingest + structure outputs) of an earlier run: run only "
        "--stages after structure on them (e.g. re-measure validate, shard, export after a change)",
    )
    ap.add_argument("--keep", type=Path, help="move each size's src-N and data-N here (for a later --reuse)")
    ap.add_argument(
        "--fixtures",
        type=Path,
        help="folder of src-N fixtures to read (each written there first if missing, and kept): every stage "
        "runs afresh on them (e.g. the same archive under two versions of the code)",
    )
    ap.add_argument(
        "--validate-batch-rows",
        type=int,
        help="rows per validation batch (tasks/validate.BATCH_ROWS): below the smaller size's row count, both "
        "sizes run full batches, so their peaks compare the part that still grows with the archive",
    )
    args = ap.parse_args()
    if args.validate_batch_rows:
        os.environ["BENCH_VALIDATE_BATCH_ROWS"] = str(args.validate_batch_rows)
    from fixtures.mimic_cxr import write_mimic_cxr

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict[int, dict] = {}
    try:
        for n in args.images:
            root, out = tmp / f"src-{n}", tmp / f"out-{n}"
            data = None
            if args.reuse:
                root, data = args.reuse / f"src-{n}", args.reuse / f"data-{n}"
            elif args.fixtures:
                root = args.fixtures / f"src-{n}"
                if not root.exists():
                    write_mimic_cxr(
                        root, studies=round(n / 1.5), seed=n, jpg=True, size="small", defects=False
                    )
            else:
                write_mimic_cxr(root, studies=round(n / 1.5), seed=n, jpg=True, size="small", defects=False)
            results[n] = {}
            for name in args.stages:
                results[n][name] = run_stage(name, out, root, data)
                print(f"# {n} {name}: {results[n][name]}", flush=True)
            kept = json.loads(((data or out / "data") / "summary.json").read_text())["kept"]
            results[n]["kept"] = kept
            if args.keep and not args.reuse:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.move(root, args.keep / f"src-{n}")
                shutil.move(out / "data", args.keep / f"data-{n}")
            elif not (args.reuse or args.fixtures):
                shutil.rmtree(root)
            shutil.rmtree(out, ignore_errors=True)  # --reuse writes into DATA: out may never exist
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = args.images
    ka, kb = results[a]["kept"], results[b]["kept"]
    print(
        f"\n| stage | {ka} images: s | peak MiB | {kb} images: s | peak MiB | marginal ms/image | "
        f"marginal KiB/image of peak | 700K extrapolated: s | 700K extrapolated: peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.stages:
        ra, rb = results[a][name], results[b][name]
        ms = 1000 * (rb["s"] - ra["s"]) / (kb - ka)
        kib = 1024 * (rb["peak_mib"] - ra["peak_mib"]) / (kb - ka)
        print(
            f"| {name} | {ra['s']:.1f} | {ra['peak_mib']:.0f} | {rb['s']:.1f} | {rb['peak_mib']:.0f} | {ms:.2f} | "
            f"{kib:.2f} | {rb['s'] + ms * (700_000 - kb) / 1000:.0f} | "
            f"{(rb['peak_mib'] + kib * (700_000 - kb) / 1024) / 1024:.1f} |"
        )

    _pss_table(args.stages, results, a, b)


def _pss_table(stages: list[str], results: dict, a: int, b: int) -> None:
    """Each measure of track_peak_memory per stage, with the ratio of the two sizes and the linear 700K
    extrapolation."""
    ka, kb = results[a]["kept"], results[b]["kept"]
    print(f"\n| stage | measure | {ka} images: MiB | {kb} images: MiB | ratio | marginal KiB/image | "
          "700K extrapolated GiB |")
    print("|---|---|---|---|---|---|---|")
    for name in stages:
        for label, col in (("summed RSS", "peak_mib"), ("private + shared once", "peak_tree_mib"),
                           ("summed PSS", "peak_pss_mib"), ("own RSS", "root_rss_mib")):
            va, vb = results[a][name][col], results[b][name][col]
            kib = 1024 * (vb - va) / (kb - ka)
            print(f"| {name} | {label} | {va:.0f} | {vb:.0f} | {vb / va:.2f} | {kib:.2f} | "
                  f"{(vb + kib * (700_000 - kb) / 1024) / 1024:.2f} |")


if __name__ == "__main__":
    main()
