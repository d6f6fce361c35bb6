"""`cxrflow demo` with its two variants one after the other (`--parallel 1`, what it did before issue 28) and side
by side (the default: one per core, each training in its own process), in one run against one Prefect server
started here (so neither pays for a temporary server), each on a fresh output folder. Prints both wall times,
their ratio, each run's stage seconds, and whether the two learning.json files are equal (they must be: CPU
training is deterministic at a fixed thread count).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_demo_parallel
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_demo import BIN, start_server


def run(out: Path, env: dict, *options: str) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    res = subprocess.run([str(BIN / "cxrflow"), "demo", "--out", str(out), *options], env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - start
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    runs = [json.loads((out / "pipeline" / "runs" / f"learning-{v}.json").read_text()) for v in ("trained", "shuffled")]
    stages = {f"{r['name']}:{s}": v["seconds"] for r in runs for s, v in r["stages"].items()}
    return wall, stages, json.loads((out / "learning.json").read_text())


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-parallel-"))
    proc, url = start_server(tmp / "prefect-home")
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        seq_s, seq_stages, seq_learning = run(tmp / "sequential", env, "--parallel", "1")
        par_s, par_stages, par_learning = run(tmp / "side-by-side", env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"cores": os.cpu_count(), "one_after_the_other_wall_s": round(seq_s, 1),
                      "side_by_side_wall_s": round(par_s, 1), "side_by_side / one_after_the_other": round(par_s / seq_s, 2),
                      "learning_json_equal": seq_learning == par_learning,
                      "rule_f1_micro_14": {k: par_learning[k] for k in ("trained", "shuffled")},
                      "stage_s": {"one_after_the_other": seq_stages, "side_by_side": par_stages}}, indent=2))


if __name__ == "__main__":
    main()
