"""`make install`'s shell logic, run against a stand-in interpreter (no network, no real pip): a failed install of
the isolated torchvision must fail `make install`, not leave a venv stamped as installed without it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

# `python -c <probe>` answers whether torchvision is importable (exit 0: absent); `--target` is the isolated
# torchvision install; the torch version probe runs for real against a stub torch; every other call (pip upgrade, editable install, --no-deps open_clip) succeeds.
_FAKE_PY = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *--target*) exit {target_rc} ;;
  *torch.__version__*) PYTHONPATH="{stub}" exec "{real_py}" "$@" ;;
  -c*) exit {probe_rc} ;;
esac
exit 0
"""


def _make_install(
    tmp_path: Path, *, target_rc: int, probe_rc: int, torch: str = "2.13.0+cpu"
) -> tuple[subprocess.CompletedProcess, str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    log.touch()
    py = venv / "bin" / "python"
    stub = tmp_path / "stub"  # a `torch` module of the given version for the version probe
    stub.mkdir()
    (stub / "torch.py").write_text(f"__version__ = {torch!r}\n")
    fake = _FAKE_PY.format(log=log, target_rc=target_rc, probe_rc=probe_rc, stub=stub, real_py=sys.executable)
    py.write_text(fake)
    py.chmod(0o755)
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "install", f"VENV={venv}"], capture_output=True, text=True, timeout=600
    )
    return proc, log.read_text()


def test_failed_isolated_torchvision_install_fails_make_install(tmp_path):
    proc, calls = _make_install(tmp_path, target_rc=1, probe_rc=0)
    assert "--target" in calls  # torchvision absent: the isolated install was attempted
    assert proc.returncode != 0, "a failed torchvision install was swallowed"
    assert not (tmp_path / "venv" / ".installed").exists()


def test_isolated_torchvision_installed_when_absent(tmp_path):
    proc, calls = _make_install(tmp_path, target_rc=0, probe_rc=0)
    assert proc.returncode == 0, proc.stderr
    assert "--target" in calls and (tmp_path / "venv" / ".installed").exists()


def test_no_isolated_install_when_torchvision_importable(tmp_path):
    proc, calls = _make_install(tmp_path, target_rc=1, probe_rc=1)
    assert proc.returncode == 0, proc.stderr
    assert "--target" not in calls and (tmp_path / "venv" / ".installed").exists()


def test_isolated_torchvision_is_the_release_for_the_installed_torch(tmp_path):
    """torchvision 0.N pairs with torch 2.(N-15): a venv whose torch is not 2.13 (the range allows 2.3 to
    2.13) needs its own torchvision, or its compiled ops and Python code mismatch torch."""
    proc, calls = _make_install(tmp_path, target_rc=0, probe_rc=0, torch="2.5.1+cpu")
    assert proc.returncode == 0, proc.stderr
    assert "torchvision==0.20.*" in calls, calls
    proc, calls = _make_install(tmp_path / "b", target_rc=0, probe_rc=0)
    assert "torchvision==0.28.*" in calls, calls


def test_isolated_torchvision_is_replaced_on_reinstall(tmp_path):
    """pip --target leaves an existing package in place unless --upgrade: after a torch change the old
    torchvision would stay."""
    proc, calls = _make_install(tmp_path, target_rc=0, probe_rc=0)
    target = next(line for line in calls.splitlines() if "--target" in line)
    assert "--upgrade" in target
