"""Wall time of `cxrflow demo` (learnable fixture -> ingest -> structure -> shard -> tiny train and the shuffle
control -> evaluate -> compare) and of a rerun with nothing changed, both as CLI processes against one Prefect
server started here (so neither pays for a temporary server). The rerun must decode no image, send no LLM
request and take no training step. Also prints the demo's learning.json.

    .venv/bin/python -m bench.bench_demo [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(180):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("prefect server did not start")


def run_demo(out: Path, env: dict) -> tuple[float, dict]:
    """(wall seconds, per-variant run summaries merged: stage seconds/statuses and work summed)."""
    start = time.perf_counter()
    res = subprocess.run([str(BIN / "cxrflow"), "demo", "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    runs = [json.loads((out / "pipeline" / "runs" / f"learning-{v}.json").read_text()) for v in ("trained", "shuffled")]
    merged = {"stages": {f"{r['name']}:{s}": v for r in runs for s, v in r["stages"].items()},
              "work": {k: sum(r["work"][k] for r in runs) for k in runs[0]["work"]},
              "learning": json.loads((out / "learning.json").read_text())}
    return wall, merged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="default: a temporary folder (removed)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    out = args.out or tmp / "demo"
    proc, url = start_server(tmp / "prefect-home")
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    try:
        cold, first = run_demo(out, env)
        warm, again = run_demo(out, env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True) if args.out is None else None
    stage_s = {s: v["seconds"] for s, v in first["stages"].items()}
    print(json.dumps({"cores": os.cpu_count(), "demo_wall_s": round(cold, 1), "rerun_wall_s": round(warm, 1),
                      "speedup": round(cold / warm, 1), "first_run_stage_s": stage_s,
                      "first_run_work": first["work"], "rerun_work": again["work"],
                      "rerun_statuses": sorted({v["status"] for v in again["stages"].values()}),
                      "learning": first["learning"]}, indent=2))


if __name__ == "__main__":
    main()
