"""The Prefect UI as a researcher sees it: a real `prefect server start` on loopback with its own PREFECT_HOME,
a two-variant ablation of the tiny pipeline run against it by the CLI, the runs/parameters/tags/leaderboard
checked through the REST API, and the Runs page filtered by tag (one row per variant) and the leaderboard
artifact page rendered by headless Chromium."""

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
    pytest.mark.ops,  # a real server and Chromium: make test-ops (CI runs it)
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
    env.pop("PREFECT_LOGGING_LEVEL", None)  # the CLI as a user runs it (conftest quiets the in-process runs)
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
    # The Runs page's tag filter (the same query the UI sends): one row per variant, nothing else. Stage
    # subflows carry stage:/variant: tags; the ablate and compare runs their own `ablate:` tag.
    runs = api.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["ablation:ui-demo"]}}}).json()
    assert sorted((r["name"], flows[r["flow_id"]]) for r in runs) == [
        ("ui-demo-crop", "pipeline"), ("ui-demo-pad", "pipeline")]
    variants = {r["name"]: r for r in runs}
    stage_runs = api.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["variant:pad"]}}}).json()
    assert {t for r in stage_runs for t in r["tags"]} >= {"stage:train", "stage:evaluate", "variant:pad"}
    own = api.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["ablate:ui-demo"]}}}).json()
    assert sorted(r["name"] for r in own) == ["ui-demo-ablate", "ui-demo-compare"]
    for name, resize in (("crop", "crop"), ("pad", "pad")):
        run = variants[f"ui-demo-{name}"]
        assert {"ablation:ui-demo", f"variant:{name}"} <= set(run["tags"])
        assert run["parameters"]["cfg"]["data"]["image"]["resize"] == resize
        assert run["state_type"] == "COMPLETED"
    arts = api.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["ablation-ui-demo-leaderboard"]}}}).json()
    assert len(arts) == 1 and arts[0]["type"] == "table"
    rows = json.loads(arts[0]["data"]) if isinstance(arts[0]["data"], str) else arts[0]["data"]
    assert [(r["variant"], r["metric"]) for r in rows] == [
        ("crop", "rouge_l"), ("crop", "rule_f1_micro_14"), ("pad", "rouge_l"), ("pad", "rule_f1_micro_14"),
        *((f"baseline:{b}", m) for b in ("image_blind", "majority_report") for m in ("rouge_l", "rule_f1_micro_14"))]
    pad_rouge = rows[2]
    for col in ("value", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_value"):
        assert isinstance(pad_rouge[col], float), (col, pad_rouge)  # numbers, so the UI sorts them
    # a markdown link: the UI renders a table artifact's text cells as markdown
    assert pad_rouge["run"] == f"[pad](/runs/flow-run/{variants['ui-demo-pad']['id']})"

    # The Runs page as a researcher opens it, filtered by the tag in its URL (the UI keeps its filter in the
    # query string: `/runs?tag=<tag>`, prefect/server/ui's Runs page): one row per variant, named after it.
    listed = _run_rows(f"{url}/runs?tag=ablation:ui-demo", tmp_path)
    assert sorted(listed.values()) == ["ui-demo-crop", "ui-demo-pad"], listed
    assert set(listed) == {variants["ui-demo-crop"]["id"], variants["ui-demo-pad"]["id"]}
    # each row shows its variant's headline metric (a tag on the run): the page answers which is better
    heads = {name: [t for t in r["tags"] if t.startswith("metric rouge_l ")] for name, r in variants.items()}
    assert all(len(h) == 1 for h in heads.values()), heads
    page = _rendered(f"{url}/runs?tag=ablation:ui-demo", tmp_path)
    assert all(h[0] in page for h in heads.values()), (heads, page[-3000:])
    # the same page with the ablate tag lists the other two runs: the rows come from the URL's filter
    assert sorted(_run_rows(f"{url}/runs?tag=ablate:ui-demo", tmp_path).values()) == [
        "ui-demo-ablate", "ui-demo-compare"]

    # The artifact page as a researcher opens it: numeric columns render as their own headers and cells.

    dom = _dom(f"{url}/artifacts/artifact/{arts[0]['id']}", tmp_path)
    text = _text(dom)
    assert "ablation-ui-demo-leaderboard" in text, text[-2000:]
    # the run cells are links to the variants' run pages
    assert f'href="/runs/flow-run/{variants["ui-demo-pad"]["id"]}"' in dom, dom[-3000:]
    header = text.split("p_value", 1)
    assert len(header) == 2 and all(c in header[0] for c in ("ci_low", "ci_high", "diff_ci_low", "diff_ci_high"))
    cells = " ".join(_js(pad_rouge[c]) for c in ("value", "ci_low", "ci_high", "diff"))
    assert f"pad rouge_l {cells} " in header[1], header[1][:1500]
    # The markdown twin links each variant to its run.
    md = api.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["ablation-ui-demo-leaderboard-md"]}}}).json()
    assert f"(/runs/flow-run/{variants['ui-demo-pad']['id']})" in md[0]["data"]
    assert "pad" in _rendered(f"{url}/artifacts/artifact/{md[0]['id']}", tmp_path)


    # A default `cxrflow pipeline` run (the crop variant's config: every stage reused) prints its run's link,
    # and its page in the UI shows its logs (Prefect's console is quiet, not its API handler).
    cfg_path = tmp_path / "crop.yaml"
    cfg_path.write_text(yaml.safe_dump(spec["base"]))
    res = subprocess.run([str(BIN / "cxrflow"), "pipeline", "--config", str(cfg_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    link = [line for line in res.stderr.splitlines() if line.startswith(f"run: {url}/runs/flow-run/")]
    assert len(link) == 1, res.stderr[-3000:]
    run_id = link[0].split("/runs/flow-run/", 1)[1].split()[0]
    logs = api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}).json()
    assert any("ingest: reused" in r["message"] for r in logs), [r["message"] for r in logs]
    page = _rendered(f"{url}/runs/flow-run/{run_id}", tmp_path)
    assert "ingest: reused" in page and "didn't generate logs" not in page, page[-3000:]


def _js(x: float) -> str:
    """A number as JavaScript prints it."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _dom(page: str, tmp_path: Path) -> str:
    """The page's DOM after headless Chromium has run the UI's JavaScript. A tall window: the Runs list is a
    virtual scroller that renders only the rows in view."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,3000", "--virtual-time-budget=30000",
         "--dump-dom", page],
        capture_output=True, text=True, timeout=180,
    ).stdout


def _text(html: str) -> str:
    import re

    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _rendered(page: str, tmp_path: Path) -> str:
    """The page's visible text."""
    return _text(_dom(page, tmp_path))


def _run_rows(page: str, tmp_path: Path) -> dict[str, str]:
    """The rows of a rendered Runs page: flow run id -> the run name its row shows."""
    import re

    dom = _dom(page, tmp_path)
    links = re.findall(r'<a href="/runs/flow-run/([0-9a-f-]+)" class="[^"]*flow-run-bread-crumbs__flow-run-link"'
                       r"[^>]*>(.*?)</a>", dom, flags=re.S)
    assert dom.count('class="flow-run-list-item"') == len(links), _text(dom)[-2000:]
    return {run_id: _text(inner) for run_id, inner in links}
