"""User mistakes: one line on stderr, exit code 2, and nothing started (no Prefect server, no work).

PREFECT_API_URL points at a closed port: had any command reached a flow, it would fail on the connection
with a traceback and exit 1, never 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrflow_cli.quiet import ENV_VARS as QUIET_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(monkeypatch, capsys):
    from cxrflow_cli.main import run

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    for var in QUIET_ENV:  # the CLI's quiet mode sets these: undo after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def assert_one_line_error(result, *needles: str) -> str:
    """Asserts exit code 2 and exactly one `error: ...` line on stderr holding every needle; returns it."""
    from cxrflow_cli.progress import PROGRESS_PREFIX

    code, out, err = result
    assert code == 2, (code, out, err)
    # a slow (loaded) run may print progress lines off a terminal before the error (cxrflow_cli/progress.py)
    lines = [line for line in err.strip().splitlines() if not line.startswith(PROGRESS_PREFIX)]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_source_suggests_the_closest(cli, tmp_path):
    line = assert_one_line_error(
        cli("ingest", "--source", "mimic", "--root", tmp_path, "--out", tmp_path / "o"),
        "unknown source 'mimic'",
        "did you mean 'mimic-cxr'?",
    )
    assert "Traceback" not in line
    assert not (tmp_path / "o").exists()


def test_root_that_is_not_the_dataset(cli, tmp_path):
    (tmp_path / "not-mimic").mkdir()
    assert_one_line_error(
        cli("ingest", "--source", "mimic-cxr", "--root", tmp_path / "not-mimic", "--out", tmp_path / "o"),
        "has no files/ folder",
    )
    (tmp_path / "a-file").write_text("x")
    assert_one_line_error(
        cli("ingest", "--source", "mimic-cxr", "--root", tmp_path / "a-file", "--out", tmp_path / "o"),
        "is a file, not a folder",
    )


def test_out_naming_a_file(cli, tmp_path, mimic_small):
    (tmp_path / "a-file").write_text("x")
    assert_one_line_error(
        cli("ingest", "--root", mimic_small, "--out", tmp_path / "a-file"), "is a file, not a folder"
    )


def test_config_key_typo_suggests_the_key(cli, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("data: {root: /nowhere}\ntrain: {max_step: 3}\n")
    assert_one_line_error(
        cli("pipeline", "--config", config),
        "unknown config key 'train.max_step'",
        "did you mean 'max_steps'?",
    )
    # the same through --set, and inside a stage override dict
    config.write_text(f"out: {tmp_path / 'out'}\ndata: {{root: /nowhere}}\n")
    assert_one_line_error(
        cli("pipeline", "--config", config, "--set", "trian.max_steps=3"), "did you mean 'train'?"
    )
    assert_one_line_error(
        cli("pipeline", "--config", config, "--set", "train.stage1.learning_rate=0.1"),
        "unknown config key 'train.stage1.learning_rate'",
    )


def test_pipeline_evaluate_split_typo_fails_before_any_stage(cli, tmp_path):
    """A typo'd evaluate.split used to pass the config check and fail only at the evaluate stage, after ingest
    and training ran; it is a one-line config error now (root /nowhere: no stage could even start)."""
    config = tmp_path / "p.yaml"
    config.write_text(f"out: {tmp_path / 'out'}\ndata: {{root: /nowhere}}\nevaluate: {{split: valid}}\n")
    assert_one_line_error(cli("pipeline", "--config", config), "evaluate.split")
    config.write_text(f"out: {tmp_path / 'out'}\ndata: {{root: /nowhere}}\nevaluate: {{split: validation}}\n")
    assert "evaluate.split" not in cli("pipeline", "--config", config)[2]


def test_pipeline_chexprompt_llm_fields_are_checked_with_the_config(cli, tmp_path):
    """evaluate.llm was a free dict: a key in its URL reached the evaluate flow's stored parameters and a typo
    failed only after training; both are one-line config errors now, and the key is never echoed."""
    secret = "sk-proj-SECRETKEY0123456789"
    config = tmp_path / "p.yaml"
    head = f"out: {tmp_path / 'out'}\ndata: {{root: /nowhere}}\n"
    config.write_text(
        head + f"evaluate: {{llm: {{backend: openai, base_url: 'http://127.0.0.1:8/v1?key={secret}'}}}}\n"
    )
    line = assert_one_line_error(cli("pipeline", "--config", config), "evaluate.llm", "api_key_env")
    assert secret not in line
    config.write_text(head + "evaluate: {llm: {backend: openai, bse_url: 'http://127.0.0.1:8/v1'}}\n")
    assert_one_line_error(cli("pipeline", "--config", config), "unknown LLM config key 'bse_url'", "base_url")


def test_numeric_ranges(cli, tmp_path):
    assert_one_line_error(
        cli("train", "--shards", tmp_path, "--out", tmp_path / "r", "--max-steps", "-1"),
        "--max-steps",
        "greater than or equal to 1",
    )
    assert_one_line_error(
        cli("ingest", "--root", tmp_path, "--out", tmp_path / "o", "--jpeg-quality", "101"), "--jpeg-quality"
    )


def test_train_on_a_folder_without_shards(cli, tmp_path):
    (tmp_path / "x.txt").write_text("not shards")
    assert_one_line_error(
        cli("train", "--shards", tmp_path, "--out", tmp_path / "r"),
        "is not a shard folder: no train.index.json",
    )


def test_shard_and_evaluate_check_their_folders(cli, tmp_path):
    assert_one_line_error(
        cli("shard", "--data", tmp_path, "--out", tmp_path / "s"), "holds no manifest.parquet"
    )
    assert_one_line_error(
        cli("evaluate", "--run", tmp_path, "--shards", tmp_path, "--out", tmp_path / "e"),
        "is not a training run",
    )


def test_a_file_that_is_not_a_manifest_is_one_line(cli, tmp_path):
    """Was a KeyError / ArrowInvalid traceback from inside the flow, after the server started (the API URL is
    closed here, so reaching the flow would be a connection error, not this line)."""
    import polars as pl

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.parquet").write_text("sources: []\n")
    assert_one_line_error(
        cli("shard", "--data", tmp_path / "d", "--out", tmp_path / "s"), "not a readable Parquet"
    )
    pl.DataFrame({"image_key": ["a"], "shard": ["x"]}).write_parquet(tmp_path / "shards.parquet")
    line = assert_one_line_error(
        cli("structure", "--manifest", tmp_path / "shards.parquet", "--out", tmp_path / "o"),
        "is not a manifest",
    )
    assert "no source, subject_id" in line


def test_bad_choice_and_missing_option_are_one_line(cli, tmp_path):
    assert_one_line_error(
        cli("ingest", "--root", tmp_path, "--out", tmp_path / "o", "--resize", "stretch"),
        "--resize",
        "hint: see `cxrflow ingest --help`",
    )
    assert_one_line_error(cli("train", "--out", tmp_path), "--shards")
    (tmp_path / "p.jsonl").write_text('{"id": "a", "reference": "x", "prediction": "y"}\n')
    line = assert_one_line_error(
        cli("score", "--predictions", tmp_path / "p.jsonl", "--bootstrap-scheme", "scipy"),
        "--bootstrap-scheme",
    )
    assert "'cxrflow', 'reference'" in line  # the choices, from the option's Enum


def test_a_malformed_predictions_file_is_one_line(cli, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "reference": "x", "prediction": "y"}\nnot json\n')
    assert_one_line_error(cli("score", "--predictions", tmp_path / "p.jsonl"), "p.jsonl:2: not JSON")
    assert_one_line_error(
        cli("chexprompt", "--input", tmp_path / "p.jsonl", "--backend", "rules"), ":2: not JSON"
    )
    (tmp_path / "b.jsonl").write_bytes(b'{"id": "a", "reference": "x", "prediction": "y"}\n\xc7\xff{}\n')
    assert_one_line_error(cli("score", "--predictions", tmp_path / "b.jsonl"), "b.jsonl:2: not UTF-8")
    assert_one_line_error(
        cli("chexprompt", "--input", tmp_path / "b.jsonl", "--backend", "rules"), ":2: not UTF-8"
    )
    assert not (tmp_path / "metrics.json").exists()


def test_version_and_unexpected_errors_keep_their_traceback(cli, monkeypatch):
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("cxrflow ")
    import tasks.preflight

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tasks.preflight, "check_out_dir", boom)
    with pytest.raises(RuntimeError, match="a bug"):  # not swallowed into one line
        cli("ingest", "--root", "/x", "--out", "/y")


def test_console_script_fails_in_one_line_without_a_server(tmp_path):
    """The real entry point, as a user runs it: no traceback, no temporary server."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_API_URL="")
    env.pop("PREFECT_API_URL")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrflow_cli.main",
            "ingest",
            "--source",
            "mimic",
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # a generous deadline: the suite must pass on a loaded machine
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: unknown source 'mimic'; known: brax, candid-ptx, chestxray14, chexpert, chexpert-plus, dicomweb, "
        "mimic-cxr, openi, padchest, vindr-cxr (hint: did you mean 'mimic-cxr'?)"
    ]
    assert "temporary server" not in proc.stdout + proc.stderr


def test_a_flow_run_fails_with_the_same_one_line_message(prefect_server, tmp_path, cli, monkeypatch, capsys):
    """What a deployment run shows in its state: the CLI's message, as a typed UserError."""
    from flows.train import train
    from schemas.errors import UserError
    from schemas.train import default_config

    (tmp_path / "x.txt").write_text("not shards")
    monkeypatch.delenv("PREFECT_API_URL")  # the test server
    state = train(default_config("tiny", tmp_path, tmp_path / "run"), return_state=True)
    assert state.is_failed()
    with pytest.raises(UserError) as caught:
        state.result()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    capsys.readouterr()  # the flow run's own log lines
    line = assert_one_line_error(cli("train", "--shards", tmp_path, "--out", tmp_path / "run"))
    assert line == f"error: {caught.value}"
    assert caught.value.message in state.message


def test_an_empty_split_is_not_a_mistake(tmp_path):
    """No index for a split the shard stage found empty: evaluation scores nothing instead of failing."""
    import json

    from schemas.errors import UserError
    from tasks.preflight import check_shards

    with pytest.raises(UserError, match="no test.index.json"):
        check_shards(tmp_path, "test")
    (tmp_path / "summary.json").write_text(json.dumps({"splits": {"test": {"samples": 0}}}))
    check_shards(tmp_path, "test")
    with pytest.raises(UserError, match="no validation.index.json"):  # `validate` is read as `validation`
        check_shards(tmp_path, "validate")


def test_split_is_accepted_in_both_spellings(tmp_path):
    """`--split validation` (the shard files' name, as the evaluate help says) and MIMIC's `validate` both
    name the same index; a typo is still refused."""
    from schemas.errors import UserError
    from tasks.preflight import check_shards

    (tmp_path / "validation.index.json").write_text('{"wids_version": 1, "shardlist": []}')
    check_shards(tmp_path, "validation")
    check_shards(tmp_path, "validate")
    with pytest.raises(UserError, match="unknown split 'valid'"):
        check_shards(tmp_path, "valid")


def test_a_broken_or_half_copied_shard_folder_is_one_line(cli, tmp_path):
    """An index that is not JSON, or that names tars that are not there (a folder copied without data/), was
    a JSONDecodeError / FileNotFoundError traceback from inside the training flow."""
    from fixtures.train_shards import write_train_shards
    from tasks.preflight import check_shards

    shards = write_train_shards(tmp_path / "shards", n=3, per_shard=3)
    check_shards(shards, "train")  # whole: fine
    for tar in (shards / "data").glob("*.tar"):
        tar.unlink()
    out = ["--out", str(tmp_path / "o")]
    assert_one_line_error(
        cli("train", "--shards", shards, *out), "shard(s) train.index.json names are missing"
    )
    (shards / "train.index.json").write_text("{not json")
    assert_one_line_error(cli("train", "--shards", shards, *out), "train.index.json is not a wids index")


@pytest.mark.slow  # ~20 s: the CLI in a subprocess, GX validation in a flow run
def test_an_error_found_inside_a_flow_is_the_only_output(prefect_server, tmp_path):
    """Patient-level leakage is found by the flow, after the server is reached: stderr is still the CLI's one
    line (Prefect's failure records stay in the flow run's logs and state on the server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    from fixtures.shard_manifest import default_rows, write_dataset

    rows = default_rows(12)
    rows[9]["subject_id"] = rows[0]["subject_id"]  # a patient in the validate and the train split
    data = write_dataset(tmp_path / "data", rows)
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    env.update(PYTHONPATH=str(ROOT), PREFECT_API_URL=PREFECT_API_URL.value())
    args = ["shard", "--data", str(data), "--out", str(tmp_path / "s"), "--artifacts", str(tmp_path / "a")]
    proc = subprocess.run(
        [sys.executable, "-m", "cxrflow_cli.main", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = assert_one_line_error((proc.returncode, proc.stdout, proc.stderr), "patient-level split leakage")
    assert "(hint: every expectation's result is in " in line and "Traceback" not in proc.stdout
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.parameters.get("params", {}).get("data") == str(data)]
        assert len(runs) == 1 and runs[0].state.is_failed()
        assert "patient-level split leakage" in runs[0].state.message
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))
    assert any(r.level >= 40 and "patient-level split leakage" in r.message for r in logs), logs
    assert not any("Traceback" in r.message for r in logs)


@pytest.mark.slow  # ~20 s: the CLI in a subprocess, a flow run
def test_a_bug_inside_a_flow_keeps_its_traceback_on_the_console(prefect_server, tmp_path):
    """The console filter keeps only user errors off the console: an unexpected exception raised inside a
    flow run's task reaches stderr with its traceback and exit 1, at the default verbosity."""
    from prefect.settings import PREFECT_API_URL

    from fixtures.shard_manifest import default_rows, write_dataset

    data = write_dataset(tmp_path / "data", default_rows(12))
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    env.update(PYTHONPATH=str(ROOT), PREFECT_API_URL=PREFECT_API_URL.value())
    args = ["shard", "--data", str(data), "--out", str(tmp_path / "s"), "--artifacts", str(tmp_path / "a")]
    script = (
        "import sys, tasks.validate as v\n"
        "def boom(*a, **k):\n    raise RuntimeError('a bug in assembling samples')\n"
        "v.sample_batches = boom\n"  # what run_validation walks (assemble_samples joins it whole)
        "from cxrflow_cli.main import run\nsys.exit(run(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" in proc.stderr and "RuntimeError: a bug in assembling samples" in proc.stderr
    # Prefect's own records of the failed task and flow run (what the filter sees) are on the console too
    assert "Task run failed with exception: RuntimeError" in proc.stderr
    assert "Task run encountered an exception RuntimeError" in proc.stderr
    assert "Encountered exception during execution: RuntimeError" in proc.stderr


def test_encoder_and_comparisons_check_their_inputs(cli, tmp_path):
    """Before any flow (a flow would fail on the closed PREFECT_API_URL with a traceback, exit 1)."""
    assert_one_line_error(
        cli("encoder", "--shards", tmp_path / "none", "--out", tmp_path / "e"), "is not a folder"
    )
    assert_one_line_error(cli("compare", f"a={tmp_path}"), "no metrics.json there")
    (tmp_path / "metrics.json").write_text("{}")
    assert_one_line_error(cli("compare", f"a={tmp_path}", "--baseline", "b"), "--baseline 'b' is not one of")
    assert_one_line_error(cli("compare-evals", tmp_path, tmp_path), "holds no per_report.parquet")
    (tmp_path / "per_report.parquet").write_bytes(b"not parquet")
    assert_one_line_error(cli("compare-evals", tmp_path, tmp_path), "is not a readable Parquet file")
    (tmp_path / "metrics.json").write_text(
        "{bad"
    )  # was found inside the compare flow, without the file's name
    assert_one_line_error(
        cli("compare", f"a={tmp_path}"), f"a={tmp_path}: metrics.json is not an evaluation's"
    )
    line = assert_one_line_error(
        cli("fixtures", "mimic-cxr", "--out", tmp_path / "f", "--size", "huge"), "--size"
    )
    assert "Value error" not in line and "'small', 'full'" in line


def test_demo_checks_its_out_and_spec_before_writing_the_fixture(cli, tmp_path, monkeypatch):
    """Each was a traceback, two of them after the 200-study fixture was written."""
    import cxrflow_cli.demo as demo

    written: list[Path] = []
    monkeypatch.setattr(demo, "write_demo_fixture", lambda root, *a: written.append(root) or root)
    (tmp_path / "f").write_text("")
    assert_one_line_error(cli("demo", "--out", tmp_path / "f"), "--out", "is a file, not a folder")
    assert_one_line_error(cli("demo", "--out", tmp_path / "o", "--spec", tmp_path / "no.yaml"), "--spec")
    assert_one_line_error(cli("demo", "--out", tmp_path / "o", "--studies", "0"), "--studies")
    assert written == []

    import flows.ablate

    class Ran(Exception):
        pass

    def ran(ablation, **options):
        raise Ran(ablation.name)

    monkeypatch.setattr(flows.ablate, "run_ablation", ran)
    monkeypatch.chdir(tmp_path)  # outside the repository: the default spec is the project's own copy
    with pytest.raises(Ran):
        cli("demo", "--out", tmp_path / "o")
    assert written == [tmp_path / "o" / "learnable"]


def test_config_files_that_are_not_yaml_mappings_are_one_line(cli, tmp_path):
    """Not UTF-8 and not YAML, for every command reading a YAML file (ablate and a non-UTF-8 mixture were
    tracebacks; a non-UTF-8 pipeline config did not name the file)."""
    (tmp_path / "bin.yaml").write_bytes(b"\xfb\xc7\x00garbage")
    (tmp_path / "bad.yaml").write_text("name: x\nbase: {root: /tmp\n")
    (tmp_path / "nobase.yaml").write_text(f"name: x\nbase: {tmp_path / 'none.yaml'}\nvariants: {{a: {{}}}}\n")
    out = ["--out", str(tmp_path / "o")]
    assert_one_line_error(cli("pipeline", "--config", tmp_path / "bin.yaml"), "bin.yaml is not UTF-8")
    assert_one_line_error(cli("ingest", "--mixture", tmp_path / "bin.yaml", *out), "bin.yaml is not UTF-8")
    assert_one_line_error(cli("ablate", "--spec", tmp_path / "bin.yaml"), "bin.yaml is not UTF-8")
    assert_one_line_error(cli("ablate", "--spec", tmp_path / "bad.yaml"), "bad.yaml is not valid YAML")
    assert_one_line_error(cli("ablate", "--spec", tmp_path / "nobase.yaml"), "none.yaml does not exist")


@pytest.mark.parametrize("source", ["mimic-cxr", "padchest", "vindr-cxr"])
def test_fixtures_refuse_a_file_as_out(cli, tmp_path, source):
    """Was a NotADirectoryError traceback from inside the writer."""
    (tmp_path / "f").write_text("")
    assert_one_line_error(
        cli("fixtures", source, "--out", tmp_path / "f"), "--out", "is a file, not a folder"
    )
    assert_one_line_error(cli("fixtures", source, "--out", tmp_path / "f" / "x"), "is a file, not a folder")
