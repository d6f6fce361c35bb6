"""The LLM layer against a real local OpenAI-compatible HTTP server, through the real openai client:
caching, resumption, faults, batch mode, Azure, ledger totals, keys kept out of logs and outputs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from structure_support import REPORTS, rules_responder, small_manifest

from fixtures.openai_server import OpenAIServer, user_text
from schemas.llm import LLMConfig, StructureConfig
from tasks.llm import ResponseCache, WorkItem, read_ledger, run_operation, run_operation_async
from tasks.reports.operations import STRUCTURE, SYNTHESIZE
from tasks.reports.structure import run_structure


@pytest.fixture
def server():
    with OpenAIServer(rules_responder) as srv:
        srv.times = []
        yield srv


def cfg_for(srv: OpenAIServer, tmp_path: Path, **kw) -> LLMConfig:
    base = {"backend": "openai", "model": "gpt-4o", "base_url": srv.base_url, "cache_dir": tmp_path / "cache",
            "timeout_s": 30.0, "max_retries": 3, "concurrency": 4}
    return LLMConfig(**{**base, **kw})


def items(n: int, source: str = "mimic-cxr", marker: str = "") -> list[WorkItem]:
    return [WorkItem(f"k{i}", source, {"report_text": f"{REPORTS[i % len(REPORTS)]} Case {i}.{marker if i == 0 else ''}"})
            for i in range(n)]


def test_structure_run_then_rerun_sends_zero_requests(server, tmp_path):
    manifest = small_manifest(tmp_path / "m.parquet", n_reports=6)
    cfg = StructureConfig(manifest=manifest, out=tmp_path / "out", llm=cfg_for(server, tmp_path))
    first = run_structure(cfg)
    assert first["reports"] == 8 and first["ok"] == 8 and first["quarantined"] == 0
    assert first["requests"] == 8 == server.chat_requests
    table = pq.read_table(tmp_path / "out" / "reports.parquet").to_pylist()
    row = next(r for r in table if r["image_key"] == "mimic-cxr_img0")
    assert row["report_text"].startswith("EXAMINATION: CHEST")  # original text kept beside the fields
    assert row["findings"] == "Heart size is normal. No pleural effusion."
    assert row["operation"] == "structure" and row["backend"] == "openai" and row["model"] == "gpt-4o"
    assert row["prompt_version"] == STRUCTURE.version and json.loads(row["parameters"])["temperature"] == 0.0
    assert row["method"] == "openai:gpt-4o"
    syn = next(r for r in table if r["image_key"] == "chexpert_img100")
    assert syn["operation"] == "synthesize" and syn["prompt_version"] == SYNTHESIZE.version
    # the responder mirrors the rules, so the comparison must show identical findings
    comp = first["comparison"]
    assert comp["pairs"] == 6 and comp["bleu4"] == pytest.approx(100.0) and comp["share_differing"] == 0.0
    assert comp["comparison_sentences_removed"] >= 3

    server.reset_counts()
    second = run_structure(cfg)
    assert server.chat_requests == 0
    assert second["requests"] == 0 and second["cache_hits"] == 8 and second["ok"] == 8
    assert all(r["cache_hit"] for r in pq.read_table(tmp_path / "out" / "reports.parquet").to_pylist())


def test_comparison_detects_differences(tmp_path):
    def paraphrase(body: dict) -> dict:
        out = rules_responder(body)
        if "Case 1." in user_text(body) and out.get("findings"):
            out["findings"] = "Lungs are well expanded and clear."
        return out

    with OpenAIServer(paraphrase) as srv:
        manifest = small_manifest(tmp_path / "m.parquet", n_reports=4)
        summary = run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o", llm=cfg_for(srv, tmp_path)))
    comp = summary["comparison"]
    assert comp["share_differing"] == pytest.approx(0.25) and comp["bleu4"] < 100 and comp["rougeL"] < 100


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    cfg_items = items(16)
    # 0.2 s per answer: 16 answers at concurrency 2 take >= 1.6 s, ample room to cancel mid-run under load
    with OpenAIServer(rules_responder, latency=0.2) as srv:
        cfg = cfg_for(srv, tmp_path, concurrency=2)
        cache = ResponseCache(cfg.cache_dir)

        async def interrupted():
            task = asyncio.create_task(run_operation_async(STRUCTURE, cfg_items, cfg))
            while len(cache) < 5:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        cached = len(cache)
        assert 5 <= cached < 16
        srv.reset_counts()
        result = run_operation(STRUCTURE, cfg_items, cfg)
        assert srv.chat_requests == 16 - cached
        assert result.cache_hits == cached and all(r.status == "ok" for r in result.results.values())


def test_429_with_retry_after_is_honoured(server, tmp_path):
    server.fail_next("429", times=2, retry_after=0.1)
    result = run_operation(STRUCTURE, items(2), cfg_for(server, tmp_path, concurrency=1))
    assert all(r.status == "ok" for r in result.results.values())
    assert server.chat_requests == 4
    totals = result.ledger.totals()
    assert totals["requests"] == 2 and totals["http_attempts"] == 4
    # A Retry-After longer than openai's own first backoff (<= 0.5 s) must be waited out in full:
    # a lower bound only, so a loaded machine cannot make it fail.
    server.fail_next("429", times=1, retry_after=1.6)
    start = time.monotonic()
    again = run_operation(STRUCTURE, items(1), cfg_for(server, tmp_path / "b"))
    assert again.results["k0"].status == "ok" and time.monotonic() - start >= 1.6


def test_500_is_retried_and_persistent_500_quarantines_one_item_only(server, tmp_path):
    server.fail_next("500", times=1)
    result = run_operation(STRUCTURE, items(3), cfg_for(server, tmp_path, concurrency=1))
    assert all(r.status == "ok" for r in result.results.values()) and server.chat_requests == 4

    server.reset_counts()
    server.fail_when("Case 0.", "500")  # always fails
    cfg = cfg_for(server, tmp_path / "b", max_retries=1, concurrency=2)
    result = run_operation(STRUCTURE, items(3), cfg)
    bad = result.results["k0"]
    assert bad.status == "quarantined" and "HTTP 500" in bad.reason
    assert [result.results[k].status for k in ("k1", "k2")] == ["ok", "ok"]
    assert bad.cache_key not in ResponseCache(cfg.cache_dir)  # transport failures are retried on a rerun


def test_slow_response_times_out_then_retries(server, tmp_path):
    # generous margins: a normal answer must never hit the 4 s timeout, even on a machine at load 10, and a
    # slow one (12 s) always does
    server.fail_next("slow", times=1, delay=12.0)
    cfg = cfg_for(server, tmp_path, timeout_s=4.0, max_retries=2, concurrency=1)
    result = run_operation(STRUCTURE, items(1), cfg)
    assert result.results["k0"].status == "ok" and server.chat_requests == 2

    server.reset_counts()
    server.fail_when("Case 0.", "slow", delay=12.0)
    cfg = cfg_for(server, tmp_path / "b", timeout_s=4.0, max_retries=0)
    result = run_operation(STRUCTURE, items(2), cfg)
    assert result.results["k0"].status == "quarantined" and "APITimeoutError" in result.results["k0"].reason
    assert result.results["k1"].status == "ok"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("truncated", "not valid JSON"), ("refusal", "refusal"), ("bad_schema", "does not match schema"),
     ("length", "finish_reason=length")],
)
def test_invalid_answers_are_asked_twice_then_quarantined_with_raw(server, tmp_path, fault, reason):
    server.fail_when("Case 0.", fault)
    result = run_operation(STRUCTURE, items(3), cfg_for(server, tmp_path))
    bad = result.results["k0"]
    assert bad.status == "quarantined" and reason in bad.reason and "after 2 attempt(s)" in bad.reason
    assert bad.raw  # the model's answer is kept
    assert result.results["k1"].status == "ok" and result.results["k2"].status == "ok"
    assert server.chat_requests == 4  # one re-ask for the bad item
    assert result.ledger.totals()["requests"] == 4
    # the quarantine is cached: a rerun asks nothing
    server.reset_counts()
    again = run_operation(STRUCTURE, items(3), cfg_for(server, tmp_path))
    assert server.chat_requests == 0 and again.results["k0"].status == "quarantined"


def test_one_invalid_answer_recovers_on_reask(server, tmp_path):
    server.fail_when("Case 0.", "truncated", times=1)
    result = run_operation(STRUCTURE, items(1), cfg_for(server, tmp_path))
    assert result.results["k0"].status == "ok" and server.chat_requests == 2


def test_broken_http_body_does_not_fail_the_batch(server, tmp_path):
    server.fail_when("Case 0.", "broken_body")
    result = run_operation(STRUCTURE, items(2), cfg_for(server, tmp_path, max_retries=0))
    assert result.results["k0"].status == "quarantined" and result.results["k1"].status == "ok"


def test_cost_totals_equal_sum_of_ledger(server, tmp_path):
    manifest = small_manifest(tmp_path / "m.parquet", n_reports=5)
    server.fail_when("Case 0.", "refusal", times=1)  # an extra (invalid) request is paid for too
    summary = run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o", llm=cfg_for(server, tmp_path)))
    entries = [e for e in read_ledger(tmp_path / "o" / "ledger.jsonl") if e["run_id"] == summary["run_id"]]
    assert len(entries) == summary["requests"] == 8
    assert sum(e["prompt_tokens"] for e in entries) == summary["prompt_tokens"] > 0
    assert sum(e["completion_tokens"] for e in entries) == summary["completion_tokens"] > 0
    assert sum(e["cost_usd"] for e in entries) == pytest.approx(summary["estimated_cost_usd"])
    expected = (summary["prompt_tokens"] * 2.5 + summary["completion_tokens"] * 10.0) / 1e6  # gpt-4o list price
    assert summary["estimated_cost_usd"] == pytest.approx(expected)


def test_unpriced_model_cost_is_not_computed(server, tmp_path):
    result = run_operation(STRUCTURE, items(1), cfg_for(server, tmp_path, model="llama-3-local"))
    totals = result.ledger.totals()
    assert totals["estimated_cost_usd"] is None and "not computed" in totals["estimated_cost_note"]


def test_batch_mode_splits_files_requeues_failures_and_fills_the_cache(server, tmp_path):
    server.fail_when("Case 1.", "500", times=1)  # fails in the first batch, succeeds when re-queued
    cfg = cfg_for(server, tmp_path, batch=True, batch_max_requests=3, batch_poll_s=0.02)
    result = run_operation(STRUCTURE, items(7), cfg)
    assert all(r.status == "ok" for r in result.results.values())
    assert server.counts["files"] == 4  # 3 + 3 + 1 requests, then the re-queued one
    assert server.counts["batches"] == 4 and server.chat_requests == 0
    entries = result.ledger.entries
    assert len(entries) == 7 and {e.mode for e in entries} == {"batch"}
    sync_cost = sum((e.prompt_tokens * 2.5 + e.completion_tokens * 10.0) / 1e6 for e in entries)
    assert result.ledger.totals()["estimated_cost_usd"] == pytest.approx(sync_cost / 2)  # batch: half price
    server.reset_counts()
    again = run_operation(STRUCTURE, items(7), cfg.model_copy(update={"batch": False}))
    assert again.cache_hits == 7 and sum(server.counts.values()) == 0


def test_batch_mode_quarantines_invalid_answers(server, tmp_path):
    server.fail_when("Case 0.", "refusal")
    cfg = cfg_for(server, tmp_path, batch=True, batch_poll_s=0.02)
    result = run_operation(STRUCTURE, items(2), cfg)
    assert result.results["k0"].status == "quarantined" and "refusal" in result.results["k0"].reason
    assert result.results["k1"].status == "ok"


def test_azure_backend_talks_to_a_deployment(server, tmp_path):
    cfg = LLMConfig(backend="azure", model="cxr-gpt4o", azure_endpoint=server.base_url.removesuffix("/v1"),
                    cache_dir=tmp_path / "cache", max_retries=0)
    result = run_operation(STRUCTURE, items(2), cfg)
    assert all(r.status == "ok" for r in result.results.values()) and server.chat_requests == 2


def test_api_key_never_reaches_logs_or_outputs(server, tmp_path, monkeypatch, caplog):
    secret = "sk-cxrflow-test-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    manifest = small_manifest(tmp_path / "m.parquet", n_reports=2)
    server.fail_next("429", times=1, retry_after=0.05)  # retries log at INFO
    with caplog.at_level(logging.DEBUG):
        run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o", llm=cfg_for(server, tmp_path)))
    assert server.chat_requests == 5
    assert caplog.records, "expected log records from the run"
    assert secret not in caplog.text
    for path in list((tmp_path / "o").rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert server.last_authorization == f"Bearer {secret}"  # the key was used, just never written anywhere


def test_batch_in_flight_is_picked_up_again_after_an_interruption(tmp_path):
    # the batch stays in progress for 3 s: the interruption always lands while it is in flight, even under load
    with OpenAIServer(rules_responder, batch_delay=3.0) as srv:
        cfg = cfg_for(srv, tmp_path, batch=True, batch_poll_s=0.02)

        async def interrupted():
            task = asyncio.create_task(run_operation_async(STRUCTURE, items(3), cfg))
            # interrupt once the batch is submitted and recorded (a cut between the two cannot be undone)
            while not list((cfg.cache_dir / "batches").glob("*.json")):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        assert srv.counts["files"] == 1 and srv.counts["batches"] == 1
        result = run_operation(STRUCTURE, items(3), cfg)
        assert all(r.status == "ok" for r in result.results.values())
        assert srv.counts["files"] == 1 and srv.counts["batches"] == 1  # the same batch, not paid for twice


def test_rate_limiter_spaces_requests_beyond_the_budget():
    from tasks.llm.ratelimit import RateLimiter

    async def go() -> float:
        limiter = RateLimiter(rpm=600)  # a burst of 600, then 10 per second
        limiter._requests.level = 1.0  # start with one request left in the bucket
        t0 = time.monotonic()
        for _ in range(3):
            await limiter.acquire()
        return time.monotonic() - t0

    assert asyncio.run(go()) >= 0.18  # requests 2 and 3 wait 0.1 s each

    async def tokens() -> float:
        limiter = RateLimiter(tpm=6000)  # 100 tokens per second
        limiter._tokens.level = 0.0
        t0 = time.monotonic()
        await limiter.acquire(20)
        return time.monotonic() - t0

    assert asyncio.run(tokens()) >= 0.18


@pytest.mark.slow
def test_key_from_a_prefect_secret_block(server, tmp_path, prefect_server, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    Secret(value="sk-from-prefect-block-42").save("cxrflow-test-openai-key", overwrite=True)
    cfg = cfg_for(server, tmp_path, secret_block="cxrflow-test-openai-key")
    result = run_operation(STRUCTURE, items(1), cfg)
    assert result.results["k0"].status == "ok"
    assert server.last_authorization == "Bearer sk-from-prefect-block-42"


def test_identical_reports_are_asked_once(server, tmp_path):
    same = [WorkItem(f"img{i}", "mimic-cxr", {"report_text": REPORTS[0]}) for i in range(4)]  # one study, 4 images
    result = run_operation(STRUCTURE, same, cfg_for(server, tmp_path))
    assert server.chat_requests == 1 and len({r.cache_key for r in result.results.values()}) == 1
    assert all(r.status == "ok" and r.output == result.results["img0"].output for r in result.results.values())


def test_translate_with_an_llm_and_the_cli_in_batch_mode(server, tmp_path, monkeypatch):
    from structure_support import manifest_row, write_manifest
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    rows = [manifest_row(i, "padchest", text=f"cardiomegalia . derrame pleural {i}", origin="labels")
            for i in range(3)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    server.responder = lambda body: {"translation": "Cardiomegaly. Pleural effusion."}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    args = ["structure", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--operation", "translate",
            "--backend", "openai", "--base-url", server.base_url, "--cache-dir", str(tmp_path / "cache"),
            "--batch", "--batch-poll-s", "0.05", "--no-prefect"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] == 3 and server.counts["batches"] == 1
    table = pq.read_table(tmp_path / "o" / "reports.parquet").to_pylist()
    assert {r["translation"] for r in table} == {"Cardiomegaly. Pleural effusion."}
    assert all(r["findings"] == r["translation"] and r["operation"] == "translate" for r in table)
    assert table[0]["report_text"].startswith("cardiomegalia")
