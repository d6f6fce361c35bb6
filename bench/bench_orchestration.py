"""Orchestrated vs bare ingest at archive scale: `python -m bench.bench_orchestration --images 1000 10000`.

A MIMIC-CXR-JPG fixture (small 208x256 JPGs, the layout as released) of each size goes through
`cxrflow ingest --all-views --workers 2` as a CLI process, once with `--no-prefect` (bare process pool) and
once as a Prefect flow against one local Prefect server started here (neither pays for a temporary server).
Order alternates per size; the output folder is fresh each time. Peak memory is the summed RSS of the CLI
process and its descendants (the fork server and the pool workers), sampled every 0.1 s; the Prefect server
is not counted. `--fixtures DIR` reuses DIR/src-N (the same fixture, e.g. kept by `bench_scale --keep`).
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

from bench.bench_demo import start_server

BIN = Path(sys.executable).parent


def track_peak_rss(proc: subprocess.Popen) -> tuple[threading.Thread, list[int]]:
    """Sample a process and all its descendants every 0.1 s while it runs: [peak summed RSS, peak RSS of the
    process itself] (psutil: getrusage cannot see pool workers forked from a fork server, which are the fork
    server's children and are never waited for by the process)."""
    peak = [0, 0]

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = []
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        rss.append(0)
                peak[0] = max(peak[0], sum(rss))
                peak[1] = max(peak[1], rss[0])
                time.sleep(0.1)
        except psutil.Error:
            return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread, peak


def run_cli(args: list[str], env: dict) -> tuple[float, int, int, dict]:
    """(wall s, peak tree RSS bytes, peak main-process RSS bytes, summary)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["nice", "-n", "5", str(BIN / "cxrflow"), *args],  # `nice` execs cxrflow: the root is the CLI process
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    thread, peak = track_peak_rss(proc)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    thread.join()
    if proc.returncode:
        raise RuntimeError(out[-2000:] + err[-3000:])
    summary = json.loads(out[out.index("{") :])
    return wall, peak[0], peak[1], summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--fixtures",
        type=Path,
        help="use FIXTURES/src-N where present (the same fixture, e.g. bench_scale --keep)",
    )
    args = ap.parse_args()
    from fixtures.mimic_cxr import write_mimic_cxr

    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    server, url = start_server(tmp / "prefect-home")
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    rows = []
    try:
        for i, n in enumerate(args.images):
            kept_src = args.fixtures / f"src-{n}" if args.fixtures else None
            root = kept_src if kept_src and kept_src.is_dir() else tmp / f"src-{n}"
            if root != kept_src:
                write_mimic_cxr(root, studies=round(n / 1.5), seed=n, jpg=True, size="small", defects=False)
            found = {}
            order = ("bare", "prefect") if i % 2 == 0 else ("prefect", "bare")
            for mode in order:
                out = tmp / f"out-{n}-{mode}"
                cli = [
                    "ingest",
                    "--source",
                    "mimic-cxr",
                    "--root",
                    str(root),
                    "--out",
                    str(out),
                    "--all-views",
                    "--workers",
                    str(args.workers),
                ] + (["--no-prefect"] if mode == "bare" else [])
                found[mode] = run_cli(cli, env)
                shutil.rmtree(out)
                print(
                    f"# {n} {mode}: {found[mode][0]:.1f} s, peak {found[mode][1] / 2**20:.0f} MiB", flush=True
                )
            if root != kept_src:
                shutil.rmtree(root)
            kept = found["bare"][3]["kept"]
            assert found["prefect"][3]["kept"] == kept
            rows.append((n, kept, found))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nMIMIC-CXR-JPG fixture (208x256 JPG), --all-views, {args.workers} workers, output 518 px JPEG q95\n"
    )
    print(
        "| images | mode | wall s | images/s | prefect / bare throughput | peak RSS, CLI + workers | "
        "peak RSS, CLI process |"
    )
    print("|---|---|---|---|---|---|---|")
    for _n, kept, found in rows:
        for mode in ("bare", "prefect"):
            wall, tree, main_rss, _ = found[mode]
            ratio = found["bare"][0] / wall if mode == "prefect" else 1.0
            print(
                f"| {kept} | {mode} | {wall:.1f} | {kept / wall:.0f} | {ratio:.2f} | {tree / 2**20:.0f} MiB | "
                f"{main_rss / 2**20:.0f} MiB |"
            )

    if len(rows) >= 2:
        (_, k1, f1), (_, k2, f2) = rows[0], rows[-1]
        rate = {m: (k2 - k1) / (f2[m][0] - f1[m][0]) for m in ("bare", "prefect")}
        print(
            f"\nmarginal images/s between {k1} and {k2} images (start-up costs cancel): bare {rate['bare']:.0f}, "
            f"prefect {rate['prefect']:.0f}, prefect / bare {rate['prefect'] / rate['bare']:.2f}"
        )
        for m in ("bare", "prefect"):
            print(
                f"fixed cost ({m}): {f1[m][0] - k1 / rate[m]:.1f} s; peak RSS x{f2[m][1] / f1[m][1]:.2f} "
                f"for x{k2 / k1:.0f} images"
            )


if __name__ == "__main__":
    main()
