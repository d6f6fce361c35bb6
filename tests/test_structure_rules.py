"""The offline `rules` backend, the data-use guard, and the stage through its flow and CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from structure_support import manifest_row, small_manifest, write_manifest

from schemas.labels import CHEXPERT_LABELS
from schemas.llm import LLMConfig, StructureConfig
from tasks.llm import DataUseError, WorkItem, check_data_use, run_operation
from tasks.reports.operations import SYNTHESIZE, TRANSLATE
from tasks.reports.rules_backend import TEMPLATES, remove_comparison_sentences, synthesize_rules
from tasks.reports.structure import default_operation, run_structure


def test_rules_structure_and_synthesize_on_a_small_manifest(tmp_path):
    manifest = small_manifest(tmp_path / "m.parquet", n_reports=4)
    summary = run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o"))
    assert summary["reports"] == 6 == summary["ok"] + summary["quarantined"] and summary["quarantined"] == 0
    assert summary["requests"] == 0 and summary["estimated_cost_usd"] == 0.0
    rows = {r["image_key"]: r for r in pq.read_table(tmp_path / "o" / "reports.parquet").to_pylist()}
    first = rows["mimic-cxr_img0"]
    assert first["method"] == "rule-based" and first["backend"] == "rules"
    assert first["examination"] == "CHEST (PA AND LAT)" and first["indication"] == "Cough."
    # the sentence comparing with the prior study is gone; the rest is verbatim
    assert first["findings"] == "Heart size is normal. No pleural effusion."
    assert first["comparison_sentences_removed"] == 1
    assert rows["mimic-cxr_img3"]["indication"] == "Fever."  # from HISTORY
    assert rows["mimic-cxr_img1"]["findings"] == "Mild pulmonary edema. No pneumothorax."
    syn = rows["chexpert_img100"]
    assert syn["operation"] == "synthesize" and syn["method"] == "synthesized-rules"
    assert syn["findings"] == ("The heart is enlarged. A small pleural effusion is possible. "
                               "There is no pneumothorax.")
    assert syn["impression"] == "Cardiomegaly. Possible pleural effusion."
    assert syn["examination"] == "Chest radiograph, AP view."
    assert rows["chexpert_img101"]["impression"] == "No acute cardiopulmonary process."
    assert summary["comparison"]["status"].startswith("not computed")


def test_templates_cover_every_chexpert_observation():
    assert set(TEMPLATES) | {"No Finding"} == set(CHEXPERT_LABELS)
    for name in TEMPLATES:
        for value, phrase in ((1, 1), (-1, 3)):
            out = synthesize_rules({"labels": {name: value}, "view": "PA"})
            assert TEMPLATES[name][phrase] in out["findings"]
    neg = synthesize_rules({"labels": {"Pneumothorax": 0}})
    assert neg["findings"] == "There is no pneumothorax." and neg["impression"] == "No acute cardiopulmonary process."
    listed = synthesize_rules({"labels": ["Edema", "Fracture"]})
    assert listed["findings"] == "There is pulmonary edema. A fracture is seen."


def test_rules_refuse_what_they_cannot_do():
    items = [WorkItem("a", "padchest", {"report_text": "cardiomegalia"})]
    res = run_operation(TRANSLATE, items, LLMConfig(backend="rules")).results["a"]
    assert res.status == "quarantined" and res.reason == "translation needs an LLM backend" and res.output is None
    bad = [WorkItem("b", "chestxray14", {"labels": ["Nodule"]}), WorkItem("c", "chexpert", {"labels": {}})]
    results = run_operation(SYNTHESIZE, bad, LLMConfig(backend="rules")).results
    assert "no template for label(s) Nodule" in results["b"].reason
    assert "no labels" in results["c"].reason


def test_rows_without_input_are_quarantined_not_lost(tmp_path):
    rows = [manifest_row(0, text="FINDINGS: Clear lungs."), manifest_row(1, text=None),
            manifest_row(2, "chexpert", origin="labels")]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    summary = run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o"))
    assert (summary["reports"], summary["ok"], summary["quarantined"]) == (3, 1, 2)
    assert summary["quarantined_by_reason"] == {"no report text": 1, "no labels to write a report from (all blank)": 1}


def test_translate_operation_quarantines_under_rules(tmp_path):
    rows = [manifest_row(i, "padchest", text="cardiomegalia . sin derrame", origin="labels") for i in range(2)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    summary = run_structure(StructureConfig(manifest=manifest, out=tmp_path / "o", operation="translate"))
    assert summary["quarantined"] == 2
    assert summary["quarantined_by_reason"] == {"translation needs an LLM backend": 2}


def test_default_operation():
    assert default_operation({"report_origin": "labels"}) == "synthesize"
    assert default_operation({"report_origin": "report"}) == "structure"
    spanish = {"report_origin": "labels", "report_language": "es", "report_text": "siluet cardiac normal ."}
    assert default_operation(spanish, "openai") == "translate"
    assert default_operation(spanish, "azure") == "translate"
    assert default_operation(spanish, "rules") == "synthesize"  # offline: written from labels, recorded as such
    assert default_operation({"report_origin": "report", "report_language": "en"}, "openai") == "structure"


def test_comparison_sentence_removal():
    text = ("Comparison is made to the prior radiograph. The heart is normal. No interval change. "
            "There is a small left effusion. Unchanged position of the ET tube. Stable mild cardiomegaly.")
    kept, removed = remove_comparison_sentences(text)
    assert removed == 3
    assert kept == "The heart is normal. There is a small left effusion. Stable mild cardiomegaly."
    assert remove_comparison_sentences(None) == (None, 0)


# --- data-use guard ---------------------------------------------------------------------------------------

def test_guard_refuses_public_openai_for_mimic_without_sending(tmp_path, monkeypatch):
    import tasks.llm.client as client_module

    async def no_client(cfg):
        raise AssertionError("a client was built: the guard must run first")

    monkeypatch.setattr(client_module, "make_client", no_client)
    cfg = LLMConfig(backend="openai", base_url="https://api.openai.com/v1", cache_dir=tmp_path)
    items = [WorkItem("a", "mimic-cxr", {"report_text": "FINDINGS: Clear."})]
    with pytest.raises(DataUseError) as err:
        run_operation(TRANSLATE, items, cfg)
    msg = str(err.value)
    assert "mimic-cxr" in msg and "PhysioNet Credentialed Health Data License" in msg and "api.openai.com" in msg
    # allow-listing the public API does not help, and batch mode is refused too
    with pytest.raises(DataUseError, match="batch mode"):
        check_data_use(["vindr-cxr"], cfg.model_copy(update={"batch": True, "allow_endpoints": ["api.openai.com"]}))
    # the default endpoint (no base_url, no OPENAI_BASE_URL) is the public API
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(DataUseError):
        check_data_use(["brax"], LLMConfig(backend="openai"))


def test_guard_allows_loopback_private_and_allow_listed_hosts(monkeypatch):
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1", "http://10.1.2.3/v1", "http://[::1]:80/v1"):
        check_data_use(["mimic-cxr"], LLMConfig(backend="openai", base_url=url))
    azure = LLMConfig(backend="azure", azure_endpoint="https://lab.openai.azure.com")
    with pytest.raises(DataUseError, match="allow_endpoints"):
        check_data_use(["mimic-cxr"], azure)
    check_data_use(["mimic-cxr"], azure.model_copy(update={"allow_endpoints": ["lab.openai.azure.com"]}))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.168.1.20:8000/v1")
    check_data_use(["mimic-cxr"], LLMConfig(backend="openai"))


def test_guard_policies_by_source():
    public = LLMConfig(backend="openai", base_url="https://api.openai.com/v1")
    check_data_use(["openi", "chestxray14"], public)  # their adapters allow it
    with pytest.raises(DataUseError, match="unknown licence"):
        check_data_use(["some-hospital-archive"], public)  # unknown sources are treated as credentialed
    check_data_use(["mimic-cxr"], LLMConfig(backend="rules"))  # nothing leaves



def test_guard_errors_and_configs_never_carry_a_key_put_in_the_url(monkeypatch):
    from pydantic import ValidationError

    secret = "sk-proj-SECRET123"
    with pytest.raises(ValidationError) as bad:
        LLMConfig(backend="openai", base_url=f"https://{secret}:x@api.openai.com/v1")
    assert secret not in str(bad.value) and "api_key_env" in str(bad.value)
    # the environment variable (and configs copied without validation) go through the guard's message
    monkeypatch.setenv("OPENAI_BASE_URL", f"https://user:{secret}@API.OPENAI.COM./v1")
    with pytest.raises(DataUseError) as err:
        check_data_use(["mimic-cxr"], LLMConfig(backend="openai", allow_endpoints=["api.openai.com."]))
    # refused for the key in the URL itself, before the host is even judged
    assert secret not in str(err.value) and "must not carry credentials" in str(err.value)


# --- flow and CLI -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_structure_flow_writes_artifacts(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.structure import structure
    from tasks.llm.runner import run_sync

    manifest = small_manifest(tmp_path / "m.parquet", n_reports=3)
    state = structure(StructureConfig(manifest=manifest, out=tmp_path / "o"), return_state=True)
    summary = state.result()
    assert summary["reports"] == 5 and (tmp_path / "o" / "structure-summary.json").exists()

    async def artifacts():
        # Keys are shared by every run on the session's server: this run's artifacts only.
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["structure-run-totals", "structure-comparison"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))

    found = run_sync(artifacts())
    assert {a.key for a in found} == {"structure-run-totals", "structure-comparison"}
    totals = next(a for a in found if a.key == "structure-run-totals")
    table = json.loads(totals.data) if isinstance(totals.data, str) else totals.data
    assert {"measure": "reports", "value": 5} in table


def test_cli_runs_without_prefect(tmp_path):
    from typer.testing import CliRunner

    from cxrflow_cli.main import app

    manifest = small_manifest(tmp_path / "m.parquet", n_reports=2)
    res = CliRunner().invoke(app, ["structure", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                                   "--backend", "rules", "--no-prefect"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["reports"] == 4
    refused = CliRunner().invoke(app, ["structure", "--manifest", str(manifest), "--out", str(tmp_path / "p"),
                                       "--backend", "openai", "--base-url", "https://api.openai.com/v1",
                                       "--no-prefect"])
    assert refused.exit_code == 2 and "PhysioNet" in refused.output


@pytest.mark.slow
def test_rules_on_the_mimic_fixture(tmp_path, mimic_small):
    from schemas.config import IngestConfig
    from tasks.ingest import run_ingest

    ingest = run_ingest(IngestConfig(source="mimic-cxr", root=mimic_small, out=tmp_path / "ingest", workers=1,
                                     image={"size": 32}))
    assert ingest["kept"] > 0
    summary = run_structure(StructureConfig(manifest=tmp_path / "ingest" / "manifest.parquet", out=tmp_path / "o"))
    assert summary["reports"] == ingest["kept"] == summary["ok"] + summary["quarantined"]
    rows = pq.read_table(tmp_path / "o" / "reports.parquet").to_pylist()
    manifest = {r["image_key"]: r for r in pq.read_table(tmp_path / "ingest" / "manifest.parquet").to_pylist()}
    with_findings = [r for r in rows if r["findings"]]
    assert with_findings, "the fixture has reports with FINDINGS"
    for r in with_findings:
        # rules structure = ingest's parser output minus comparison sentences
        kept, _ = remove_comparison_sentences(manifest[r["image_key"]]["findings"])
        assert r["findings"] == kept and r["report_text"] == manifest[r["image_key"]]["report_text"]
