"""The Prefect UI as a researcher sees it: a real `prefect server start` on loopback with its own PREFECT_HOME,
a two-variant ablation of the tiny pipeline run against it by the CLI, the runs/parameters/tags/leaderboard
checked through the REST API, and the leaderboard artifact page rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from pipeline_support import base_dict, tiny_config, write_fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                       reason="chromium not installed (apt-get install chromium); CI always runs this test"),
]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_RESULTS_LOCAL_STORAGE_PATH", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("prefect server did not start: " + (tmp_path / "server.log").read_text()[-3000:])
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_two_variant_ablation_shows_in_the_ui(server, tmp_path):
    url, env = server
    root = write_fixture(tmp_path / "mimic")
    spec = {"name": "ui-demo", "base": base_dict(tiny_config(root, tmp_path / "out")),
            "variants": {"crop": {"data.image.resize": "crop"}, "pad": {"data.image.resize": "pad"}},
            "metrics": ["rouge_l", "rule_f1_micro_14"]}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    res = subprocess.run([str(BIN / "cxrflow"), "ablate", "--spec", str(spec_path), "--n-resamples", "50"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    api = httpx.Client(base_url=f"{url}/api", timeout=30)
    flows = {f["id"]: f["name"] for f in api.post("/flows/filter", json={}).json()}
    runs = api.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["ablation:ui-demo"]}}}).json()
    variants = {r["name"]: r for r in runs if flows[r["flow_id"]] == "pipeline"}
    assert set(variants) == {"ui-demo-crop", "ui-demo-pad"}
    for name, resize in (("crop", "crop"), ("pad", "pad")):
        run = variants[f"ui-demo-{name}"]
        assert {"ablation:ui-demo", f"variant:{name}"} <= set(run["tags"])
        assert run["parameters"]["cfg"]["data"]["image"]["resize"] == resize
        assert run["state_type"] == "COMPLETED"
    arts = api.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["ablation-ui-demo-leaderboard"]}}}).json()
    assert len(arts) == 1 and arts[0]["type"] == "table"
    rows = json.loads(arts[0]["data"]) if isinstance(arts[0]["data"], str) else arts[0]["data"]
    assert [r["variant"] for r in rows] == ["crop", "pad"]

    # The artifact page as a researcher opens it: the leaderboard's variants and comparison column render.
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=30000", "--dump-dom",
         f"{url}/artifacts/artifact/{arts[0]['id']}"],
        capture_output=True, text=True, timeout=180,
    ).stdout
    assert "rouge_l vs baseline" in dom, dom[-2000:]
    import re

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "ablation-ui-demo-leaderboard" in text
    table = text.split("rouge_l vs baseline", 1)[1]
    assert re.search(r"crop true \d+ ", table) and re.search(r"pad false \d+ ", table), table[:1000]
