"""No flow publishes an artifact under a fixed key: inside an ablation every variant's pipeline runs the same
stage flows, and an artifact key shared by the variants shows only the latest variant's artifact (progress,
summaries). Keys go through flows.ui.artifact_key (the experiment appended inside a pipeline run) or are
built from the run's own names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHERS = {
    "create_progress_artifact",
    "create_table_artifact",
    "create_markdown_artifact",
    "create_link_artifact",
    "Reporter",
}


def _fixed_keys(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in PUBLISHERS:
            continue
        key = next((k.value for k in node.keywords if k.arg == "key"), None)
        if key is None and name == "Reporter" and node.args:
            key = node.args[0]
        if isinstance(key, ast.Constant):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {key.value!r}")
    return found


def test_no_flow_artifact_has_a_fixed_key():
    fixed = [hit for p in sorted((ROOT / "flows").glob("*.py")) for hit in _fixed_keys(p)]
    assert not fixed, fixed


def test_artifact_key_carries_the_experiment_inside_a_stage_scope():
    from flows.ui import artifact_key, stage_scope

    assert artifact_key("train-progress") == "train-progress"
    with stage_scope("learning-trained", "train", "trained"):
        a = artifact_key("train-progress")
    with stage_scope("learning-shuffled", "train", "shuffled"):
        b = artifact_key("train-progress")
    assert a != b and a.endswith("learning-trained")


def test_every_flow_artifact_key_comes_from_the_one_key_function():
    """Keys are built one way (flows.ui.artifact_key): no f-string or concatenated key in flows/."""
    built = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for k in node.keywords:
                    if k.arg == "key" and isinstance(k.value, ast.JoinedStr | ast.BinOp):
                        built.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "").endswith("key") for t in node.targets):
                if isinstance(node.value, ast.JoinedStr | ast.BinOp):
                    built.append(f"{path.name}:{node.lineno}")
    assert not built, built


def test_artifact_key_parts_and_scope():
    from flows.ui import artifact_key, stage_scope

    assert artifact_key("ingest-progress", "MIMIC_CXR") == "ingest-progress-mimic-cxr"
    assert artifact_key("ingest-mixture-summary", "") == "ingest-mixture-summary"
    with stage_scope("Exp 1", "ingest", "v"):
        assert artifact_key("train-progress") == "train-progress-exp-1"
        assert artifact_key("evaluation", "exp-1", scoped=False) == "evaluation-exp-1"
