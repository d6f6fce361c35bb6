"""Report-structuring throughput against the local OpenAI-compatible server (fixed latency per request).

    python -m bench.bench_llm [--latency 0.2] [--reports-per-worker 8] [--min-reports 30]

For concurrency 1, 8, 32: reports/s through the real openai async client and the runner (cache lookups
and writes, validation, ledger included), as a share of the ideal concurrency / latency; then the same
reports again, served from the cache (zero requests). One client serves every setting, warmed up first:
building a client (~50 ms) and its first request (platform detection, imports) are one-off costs per run.
The server runs in its own process (`python -m fixtures.openai_server`), as a real endpoint would: in
this process it would compete with the client for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from schemas.llm import LLMConfig
from tasks.llm import WorkItem, run_operation_async
from tasks.llm.client import make_client
from tasks.reports.operations import STRUCTURE

REPORT = ("EXAMINATION: CHEST (PA AND LAT)\nINDICATION: Cough.\nFINDINGS: Heart size is normal. The lungs are "
          "clear. No pleural effusion or pneumothorax.\nIMPRESSION: No acute cardiopulmonary process. Case {i}.")


class RemoteServer:
    """fixtures.openai_server in a child process; request counts come from its /_stats route."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fixtures.openai_server", "--port", "0", "--latency", str(latency)],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        self.base_url = line.split()[-1]
        self._offset = 0

    def _chat(self) -> int:
        with urllib.request.urlopen(self.base_url + "/_stats") as r:
            return json.load(r).get("chat", 0)

    def reset_counts(self) -> None:
        self._offset = self._chat()

    @property
    def chat_requests(self) -> int:
        return self._chat() - self._offset

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def bench(srv: RemoteServer, tmp: Path, args: argparse.Namespace) -> list[dict]:
    warm_cfg = LLMConfig(backend="openai", base_url=srv.base_url, cache_dir=tmp / "warm-up")
    client = await make_client(warm_cfg)
    warm_items = [WorkItem(f"w{i}", "mimic-cxr", {"report_text": f"FINDINGS: warm-up {i}."}) for i in range(2)]
    await run_operation_async(STRUCTURE, warm_items, warm_cfg, client=client)
    rows = []
    for concurrency in (1, 8, 32):
        n = max(args.min_reports, concurrency * args.reports_per_worker)
        items = [WorkItem(f"r{i}", "mimic-cxr", {"report_text": REPORT.format(i=i)}) for i in range(n)]
        cfg = warm_cfg.model_copy(update={"concurrency": concurrency, "cache_dir": tmp / f"cache-{concurrency}"})
        srv.reset_counts()
        t0 = time.perf_counter()
        result = await run_operation_async(STRUCTURE, items, cfg, client=client)
        cold = time.perf_counter() - t0
        assert srv.chat_requests == n and all(r.status == "ok" for r in result.results.values())
        srv.reset_counts()
        t0 = time.perf_counter()
        again = await run_operation_async(STRUCTURE, items, cfg, client=client)
        warm = time.perf_counter() - t0
        assert srv.chat_requests == 0 and again.cache_hits == n
        ideal = concurrency / args.latency
        rows.append({"concurrency": concurrency, "reports": n, "reports_per_s": round(n / cold, 2),
                     "ideal_per_s": round(ideal, 2), "share_of_ideal": round(n / cold / ideal, 3),
                     "cached_reports_per_s": round(n / warm, 1)})
        print(json.dumps(rows[-1]), flush=True)
    await client.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--reports-per-worker", type=int, default=8)
    ap.add_argument("--min-reports", type=int, default=30)
    args = ap.parse_args()
    srv = RemoteServer(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(bench(srv, Path(tmp), args))
    finally:
        srv.close()
    print(f"load average after the run (2 shared cores): {os.getloadavg()[0]:.1f}")
    print("| concurrency | reports | reports/s | ideal (c/latency) | share of ideal | cached rerun reports/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['reports']} | {r['reports_per_s']} | {r['ideal_per_s']} | "
              f"{r['share_of_ideal']:.1%} | {r['cached_reports_per_s']} |")


if __name__ == "__main__":
    main()
