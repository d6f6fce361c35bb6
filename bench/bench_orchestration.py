"""Orchestrated vs bare ingest, and the fixed cost orchestration adds:
`python -m bench.bench_orchestration --images 1000 10000 [--pairs 2] [--fixtures DIR]`.

A MIMIC-CXR-JPG fixture (small 208x256 JPGs, the layout as released) of each size goes through
`cxrflow ingest --all-views --workers 2` as a CLI process, once with `--no-prefect` (bare process pool) and
once as a Prefect flow against one local Prefect server started here (neither pays for a temporary server).
Each pair alternates its order; the output folder is fresh each time. Per run: wall, CPU seconds of the CLI
and every process under it (the fork server, the pool workers; sampled every 0.1 s, per process the last
value seen), the Prefect server's CPU seconds during the run, and peak summed RSS (the server not counted).
Prefect runs also get their phases from the server's own timestamps (flow run created/started/ended, each
task run's start and end), so the fixed cost is split into start-up, flow start, steps and end of flow.

The fixed cost is printed two ways: the Prefect run minus the bare run at the same size (mean of the pairs),
and with two sizes or more, the difference of the intercepts of wall vs images (least squares per mode). The
CLI's own start-up (`cxrflow --help`, and the imports of `cxrflow ingest` in each mode) is measured apart.
`--fixtures DIR` reuses DIR/src-N (the same fixture, e.g. kept by `bench_scale --keep`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from bench.bench_demo import start_server

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def track_peak_rss(proc: subprocess.Popen) -> tuple[threading.Thread, list]:
    """Sample a process and all its descendants every 0.1 s while it runs: [peak summed RSS, peak RSS of the
    process itself, {pid: last CPU seconds seen}, when the process was seen gone] (psutil: getrusage cannot see pool workers forked from a
    fork server, which are the fork server's children and are never waited for by the process)."""
    peak: list = [0, 0, {}, None]

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = []
                for p in [root, *root.children(recursive=True)]:
                    try:
                        with p.oneshot():
                            rss.append(p.memory_info().rss)
                            t = p.cpu_times()
                            peak[2][p.pid] = t.user + t.system
                    except psutil.Error:
                        rss.append(0)
                peak[0] = max(peak[0], sum(rss))
                peak[1] = max(peak[1], rss[0])
                time.sleep(0.1)
        except psutil.Error:
            pass
        peak[3] = time.time()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread, peak


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a live process and its live descendants (the Prefect server)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_cli(args: list[str], env: dict) -> dict:
    """One CLI run: wall s, CPU s of the CLI tree, peak tree / main RSS bytes, its summary, start/exit time."""
    t0, start = time.time(), time.perf_counter()
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
    return {"wall": wall, "cpu": sum(peak[2].values()), "tree": peak[0], "main": peak[1], "summary": summary,
            "t0": t0, "t1": peak[3] or t0 + wall, "t2": t0 + wall}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def flow_phases(url: str, run: dict) -> dict:
    """The latest `ingest` flow run's phases from the server's timestamps, in seconds, against the CLI's start
    and exit: start-up (CLI start -> flow run created), flow start (created -> Running), each step's task runs,
    the gaps between them, end of flow (last task run's end -> flow run's end) and exit (-> CLI exit)."""
    fr = httpx.post(f"{url}/flow_runs/filter", json={"limit": 1, "sort": "START_TIME_DESC"}, timeout=30)
    fr = fr.json()[0]
    trs = httpx.post(
        f"{url}/task_runs/filter", json={"flow_runs": {"id": {"any_": [fr["id"]]}}, "limit": 200}, timeout=30
    ).json()
    steps: dict[str, list[tuple[float, float]]] = {}
    for t in trs:
        if t["start_time"] and t["end_time"]:
            name = t["name"].rsplit("-", 1)[0]  # Prefect names a task run <task name>-<3 random characters>
            steps.setdefault(name, []).append((_ts(t["start_time"]), _ts(t["end_time"])))
    created, start, end = _ts(fr["created"]), _ts(fr["start_time"]), _ts(fr["end_time"])
    phases = {"start-up": created - run["t0"], "flow start": start - created}
    cursor = start
    for name in ("discover", "process-chunk", "assemble"):
        spans = steps.get(name)
        if not spans:
            continue
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        phases[f"before {name}"] = first - cursor
        phases[name] = last - first
        if name == "process-chunk":
            durations = sorted(e - s for s, e in spans)
            phases["chunks"] = len(spans)
            phases["chunk median s"] = statistics.median(durations)
        cursor = last
    phases["end of flow"] = end - cursor
    phases["exit"] = run["t1"] - end  # the CLI process gone (sampled every 0.1 s)
    phases["pipes closed"] = run["t2"] - run["t1"]  # its fork server and workers, which share its stdout
    return phases


def startup(env: dict, runs: int) -> list[tuple[str, float, float]]:
    """(what, median wall s, median CPU s) of the CLI's start-up: `cxrflow --help`, and the imports of
    `cxrflow ingest` in each mode (an interpreter doing nothing is subtracted)."""
    probes = {
        "python -c pass (subtracted below)": [sys.executable, "-c", "pass"],
        "cxrflow --help": [str(BIN / "cxrflow"), "--help"],
        "import cxrflow_cli.main (every command registered)": [sys.executable, "-c", "import cxrflow_cli.main"],
        # what `cxrflow ingest --no-prefect` imports in both modes (tasks.mixture: polars, for the summary)
        "+ import tasks.ingest, tasks.mixture (cxrflow ingest --no-prefect)": [
            sys.executable, "-c", "import cxrflow_cli.main, tasks.ingest, tasks.mixture"],
        "+ import flows.ingest (cxrflow ingest, Prefect)": [
            sys.executable, "-c", "import cxrflow_cli.main, tasks.ingest, tasks.mixture, flows.ingest"],
    }
    rows = []
    for what, cmd in probes.items():
        walls, cpus = [], []
        for _ in range(runs):
            before = os.times()
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
            after = os.times()
            cpus.append(after.children_user - before.children_user + after.children_system - before.children_system)
        rows.append((what, statistics.median(walls), statistics.median(cpus)))
    base_wall, base_cpu = rows[0][1], rows[0][2]
    return [rows[0]] + [(w, wall - base_wall, cpu - base_cpu) for w, wall, cpu in rows[1:]]


def intercept(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(intercept s, slope s/image) of a least-squares line through (images, wall)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--pairs", type=int, default=1, help="bare/Prefect pairs per size, order alternating")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--startup-runs", type=int, default=3, help="runs of each start-up probe (median)")
    ap.add_argument(
        "--fixtures",
        type=Path,
        help="use FIXTURES/src-N where present (the same fixture, e.g. bench_scale --keep)",
    )
    args = ap.parse_args()
    from fixtures.mimic_cxr import write_mimic_cxr

    print(f"# uptime: {os.getloadavg()} (load average 1/5/15 min) at {time.strftime('%H:%M:%S')}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    server, url = start_server(tmp / "prefect-home")
    server_ps = psutil.Process(server.pid)
    # A fresh server answers its first API call ~1 s late (its own lazy start-up, measured: 1.4 s at load 8,
    # then 0.03-0.05 s): a long-running server has paid it, so the runs below do not.
    httpx.get(f"{url}/admin/version", timeout=60)
    httpx.post(f"{url}/flow_runs/filter", json={"limit": 1}, timeout=60)
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    runs: list[dict] = []
    try:
        start_rows = startup(env, args.startup_runs)
        order_flip = 0
        for n in args.images:
            kept_src = args.fixtures / f"src-{n}" if args.fixtures else None
            root = kept_src if kept_src and kept_src.is_dir() else tmp / f"src-{n}"
            if root != kept_src:
                write_mimic_cxr(root, studies=round(n / 1.5), seed=n, jpg=True, size="small", defects=False)
            for _ in range(args.pairs):
                order = ("bare", "prefect") if order_flip % 2 == 0 else ("prefect", "bare")
                order_flip += 1
                for mode in order:
                    out = tmp / f"out-{n}-{mode}"
                    cli = ["ingest", "--source", "mimic-cxr", "--root", str(root), "--out", str(out),
                           "--all-views", "--workers", str(args.workers)] + (["--no-prefect"] if mode == "bare" else [])
                    server_cpu = tree_cpu(server_ps)
                    run = run_cli(cli, env)
                    run.update(n=n, mode=mode, server_cpu=tree_cpu(server_ps) - server_cpu,
                               load=os.getloadavg()[0])
                    if mode == "prefect":
                        run["phases"] = flow_phases(url, run)
                    shutil.rmtree(out)
                    runs.append(run)
                    print(f"# {n} {mode}: {run['wall']:.1f} s wall, {run['cpu']:.1f} s CPU, load "
                          f"{run['load']:.1f}", flush=True)
            if root != kept_src:
                shutil.rmtree(root)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, runs, start_rows)


def report(args, runs: list[dict], start_rows: list) -> None:
    for run in runs:  # both modes account for the same images
        assert run["summary"]["kept"] == next(r for r in runs if r["n"] == run["n"])["summary"]["kept"]
    print(f"\nMIMIC-CXR-JPG fixture (208x256 JPG), --all-views, {args.workers} workers, output 518 px JPEG q95")
    print(f"load average at the end: {os.getloadavg()}\n")
    print("CLI start-up, median of", args.startup_runs, "(wall s, CPU s; interpreter start subtracted):\n")
    print("| what | wall s | CPU s |\n|---|---|---|")
    for what, wall, cpu in start_rows:
        print(f"| {what} | {wall:.2f} | {cpu:.2f} |")
    print("\n| images | mode | wall s | CPU s, CLI + workers | Prefect server CPU s | images/s | load (1 min) | "
          "peak RSS, CLI + workers | peak RSS, CLI process |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        kept = r["summary"]["kept"]
        print(f"| {kept} | {r['mode']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['server_cpu']:.1f} | "
              f"{kept / r['wall']:.0f} | {r['load']:.1f} | {r['tree'] / 2**20:.0f} MiB | {r['main'] / 2**20:.0f} MiB |")
    phased = [r for r in runs if "phases" in r]
    if phased:
        names = list(phased[0]["phases"])
        print("\nPrefect runs by the server's timestamps (s; start-up = CLI start -> flow run created):\n")
        print("| images | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for r in phased:
            cells = [f"{r['phases'].get(k, 0):.2f}" if k != "chunks" else str(r["phases"].get(k)) for k in names]
            print(f"| {r['n']} | " + " | ".join(cells) + " |")
    print()
    per_size = {}
    for n in args.images:
        bare = [r["wall"] for r in runs if r["n"] == n and r["mode"] == "bare"]
        pref = [r["wall"] for r in runs if r["n"] == n and r["mode"] == "prefect"]
        cpu_b = [r["cpu"] for r in runs if r["n"] == n and r["mode"] == "bare"]
        cpu_p = [r["cpu"] + r["server_cpu"] for r in runs if r["n"] == n and r["mode"] == "prefect"]
        per_size[n] = (statistics.fmean(bare), statistics.fmean(pref))
        print(f"{n} images: bare {per_size[n][0]:.1f} s, Prefect {per_size[n][1]:.1f} s (mean of {len(bare)}); "
              f"Prefect - bare {per_size[n][1] - per_size[n][0]:.1f} s wall, "
              f"{statistics.fmean(cpu_p) - statistics.fmean(cpu_b):.1f} s CPU (server included); "
              f"prefect/bare {per_size[n][0] / per_size[n][1]:.2f}")
    if len(set(args.images)) >= 2:
        lines = {m: intercept([(r["n"], r["wall"]) for r in runs if r["mode"] == m]) for m in ("bare", "prefect")}
        print(f"intercepts of wall vs images: bare {lines['bare'][0]:.1f} s, Prefect {lines['prefect'][0]:.1f} s; "
              f"marginal images/s: bare {1 / lines['bare'][1]:.0f}, Prefect {1 / lines['prefect'][1]:.0f}")
        print(f"fixed cost s (intercept difference): {lines['prefect'][0] - lines['bare'][0]:.2f}")
    big = max(args.images)
    print(f"fixed cost s (Prefect - bare at {big} images): {per_size[big][1] - per_size[big][0]:.2f}")
    print(f"prefect/bare at {big} images: {per_size[big][0] / per_size[big][1]:.2f}")


if __name__ == "__main__":
    main()
