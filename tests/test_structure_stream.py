"""The structure stage in bounded batches (issue 28): a manifest structured a few rows at a time gives the
outputs of one batch, the reports file grows a row group per batch, and an interrupted LLM run resumes from
its cache across batches."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from structure_support import REPORTS, manifest_row, rules_responder, write_manifest

import tasks.reports.structure as structure
from fixtures.openai_server import OpenAIServer
from schemas.llm import LLMConfig, StructureConfig
from tasks.reports.annotations import ANNOTATIONS_SCHEMA, FILE_NAME


def _mixed_manifest(folder):
    """Free text, an empty report, label-only rows, a foreign report and released annotations (two records
    for one image, one without findings), in an order that puts every kind on both sides of a 3-row cut."""
    rows = [manifest_row(i, text=f"{REPORTS[i % len(REPORTS)]} Case {i}.") for i in range(7)]
    rows[2]["report_text"] = "   "  # quarantined: no report text
    rows.append(manifest_row(8, "chexpert", origin="labels", labels={"Cardiomegaly": 1, "Pneumothorax": 0}))
    rows.append(manifest_row(9, "chexpert", origin="labels", labels={}))  # quarantined: no labels
    foreign = manifest_row(10, "padchest", text="Sin hallazgos.")
    foreign["report_language"] = "es"
    rows.append(foreign)
    rows.sort(key=lambda r: r["image_key"])
    manifest = write_manifest(folder / "manifest.parquet", rows)
    released = [
        {"image_key": "mimic-cxr_img4", "record_id": "r4a", "generate_method": "rule-based", "findings": "Clear.",
         "reason": "Cough", "indication": None, "history": None, "impression": "Normal.", "annotation_file": "a.json"},
        {"image_key": "mimic-cxr_img4", "record_id": "r4b", "generate_method": "gpt4", "findings": "Lungs clear.",
         "reason": "Cough", "indication": None, "history": None, "impression": "Normal.", "annotation_file": "b.json"},
        {"image_key": "mimic-cxr_img6", "record_id": "r6", "generate_method": "gpt4", "findings": None,
         "reason": None, "indication": None, "history": None, "impression": None, "annotation_file": "b.json"},
    ]
    pq.write_table(pa.Table.from_pylist(released, schema=ANNOTATIONS_SCHEMA), folder / FILE_NAME)
    return manifest, len(rows)


def test_tiny_batches_give_the_one_batch_outputs(tmp_path, monkeypatch):
    manifest, n = _mixed_manifest(tmp_path / "data")
    whole = structure.run_structure(StructureConfig(manifest=manifest, out=tmp_path / "whole"), batch_rows=n)

    sent: list[int] = []
    real = structure.run_operation
    monkeypatch.setattr(structure, "run_operation", lambda op, items, *a, **kw: sent.append(len(items)) or
                        real(op, items, *a, **kw))
    small = structure.run_structure(StructureConfig(manifest=manifest, out=tmp_path / "small"), batch_rows=3)

    assert small.pop("run_id") != whole.pop("run_id")  # the ledger's id of each run; everything else equal
    assert small == whole
    a, b = (pq.read_table(tmp_path / d / "reports.parquet") for d in ("whole", "small"))
    assert b.equals(a) and b.schema.equals(a.schema, check_metadata=True)
    assert whole["reports"] == n + 1 and whole["released"]["records"] == 3  # img4's two released records
    # quarantined: the empty text, the blank labels, the foreign report (synthesized offline from its blank
    # labels) and the released record without findings
    assert whole["quarantined"] == 4
    # never more than a batch's rows at once: per call to the backend, and per row group of the file
    assert max(sent) <= 3
    meta = pq.ParquetFile(tmp_path / "small" / "reports.parquet").metadata
    assert meta.num_row_groups == -(-n // 3)
    assert pq.ParquetFile(tmp_path / "whole" / "reports.parquet").metadata.num_row_groups == 1


def test_an_interrupted_llm_run_resumes_across_batches(tmp_path):
    rows = [manifest_row(i, text=f"{REPORTS[i % len(REPORTS)]} Case {i}.") for i in range(12)]
    manifest = write_manifest(tmp_path / "data" / "manifest.parquet", rows)
    with OpenAIServer(rules_responder) as srv:
        llm = LLMConfig(backend="openai", model="gpt-4o", base_url=srv.base_url, cache_dir=tmp_path / "cache",
                        timeout_s=30.0, max_retries=3, concurrency=1)
        cfg = StructureConfig(manifest=manifest, out=tmp_path / "out", llm=llm, compare_rules=False)

        def stop_in_the_second_batch(done, _total, _cost):
            if done >= 6:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            structure.run_structure(cfg, progress=stop_in_the_second_batch, batch_rows=4)
        assert not (tmp_path / "out" / "reports.parquet").exists()  # no partial file left in its place
        asked = srv.chat_requests
        assert 6 <= asked < 12
        srv.reset_counts()
        summary = structure.run_structure(cfg, batch_rows=4)
        assert srv.chat_requests == 12 - asked  # only what the first run had not answered
        assert summary["cache_hits"] == asked and summary["ok"] == 12
    reports = pq.read_table(tmp_path / "out" / "reports.parquet").to_pylist()
    assert [r["image_key"] for r in reports] == [r["image_key"] for r in rows]  # manifest order
