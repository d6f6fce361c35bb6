"""Every config in configs/ runs on a fresh clone with the commands its header documents (`# run:` lines:
the fixture first, then the cxrflow command; cxrflow_cli/_headers.py), in a copy of configs/ in an empty
folder, with only the header's own `# smoke:` options added for speed. Configs of real data (absolute roots
that are not on this machine) fail in one line naming the `cxrflow fixtures` command that writes the root.
The configs share one workspace, as they share fixtures and stage outputs on a clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrflow_cli._headers import run_commands, smoke_options, with_smoke

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clone(tmp_path_factory, prefect_server):
    """An empty working directory holding configs/ as a clone has it, and one record of the fixture commands
    already run there (configs that read the same fixture write it once, as a user would)."""
    from prefect.client.orchestration import get_client

    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "configs", root / "configs")
    env = {**os.environ, "PREFECT_API_URL": str(get_client().api_url), "OMP_NUM_THREADS": "1"}
    return root, env, set()


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.slow
@pytest.mark.ops
@pytest.mark.parametrize("config", CONFIGS)
def test_config_runs_with_its_header_commands(config, clone):
    root, env, done = clone
    commands = run_commands(REPO / config)
    assert commands and commands[-1][0] == "cxrflow", f"{config}: no `# run:` command in its header"
    assert any(config in " ".join(c) for c in commands), f"{config}: its header does not run it"
    smoke = smoke_options(REPO / config)
    local_roots = _roots_here(REPO / config)
    for cmd in commands:
        cmd = with_smoke(cmd, smoke)
        if cmd[:2] == ["cxrflow", "fixtures"]:
            if tuple(cmd) in done:
                continue
            done.add(tuple(cmd))
        res = _run(cmd, root, env)
        if not local_roots and cmd[:2] != ["cxrflow", "fixtures"]:
            # real data at absolute paths: one line naming the command that writes a synthetic copy there
            lines = res.stderr.strip().splitlines()
            assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
            assert "source root does not exist" in lines[0] and "`cxrflow fixtures " in lines[0], lines
            return
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    last = commands[-1]
    if last[1] == "pipeline":
        assert "metrics" in res.stdout
        import yaml

        cfg = yaml.safe_load((REPO / config).read_text())
        result = json.loads((root / cfg["out"] / "runs" / f"{cfg['name']}.json").read_text())
        n = json.loads((root / result["metrics_json"]).read_text())["n_reports"]
        if not any(words[0] == "fixtures" for words, _ in smoke):  # the documented fixture size
            assert n >= 20, f"{config}: {n} test reports, too few to compare"
    if last[1] == "ablate":
        assert "vs baseline" in res.stdout and "/runs?tag=ablation:" in res.stdout, res.stdout[-3000:]


def _roots_here(path: Path) -> bool:
    """Whether the config reads data under the working directory (fixtures) rather than absolute roots."""
    import yaml

    text = yaml.safe_load(path.read_text())
    roots = [s.get("root") for s in text.get("sources", [])] if "sources" in text else []
    return not roots or not all(str(r).startswith("/") for r in roots)


def test_a_missing_fixture_is_named_with_the_headers_command(tmp_path):
    """A fresh clone without the fixture: one line, exit 2, the exact command of the config's header."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fixture = next(c for c in run_commands(REPO / "configs/demo.yaml") if c[:2] == ["cxrflow", "fixtures"])
    for cmd in (["cxrflow", "pipeline", "--config", "configs/demo.yaml"],
                ["cxrflow", "ablate", "--spec", "configs/ablations/lora-rank.yaml"]):
        res = _run(cmd, tmp_path, {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"})  # never reached
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
        assert "source root does not exist: artifacts/demo/mimic-cxr" in lines[0]
        assert f"`{' '.join(fixture)}`" in lines[0], lines[0]
