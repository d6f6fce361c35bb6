"""The GX gate: each row-level expectation quarantines exactly the rows that break it; leakage and row-count
collapse fail the run. One GX context (artifacts root) is shared by the module: GX is slow to set up."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from fixtures.shard_manifest import default_rows, manifest_row, write_dataset
from schemas.shards import ValidateConfig
from tasks.validate import VALIDATION_STEPS, ValidationFailed, run_validation


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


# row index -> (mutation, expected check label in the quarantine reason)
DEFECTS = {
    1: (
        lambda r: r.update(findings="Results called to Dr. X at 555-123-4567 today."),
        "no contact in findings_text",
    ),
    2: (lambda r: r.update(view="LATERAL"), "frontal view"),
    3: (lambda r: r.update(label_edema=3), "label_edema in 1/0/-1"),
    6: (lambda r: r.update(study_id="50000099", image_id="dup"), "study+image unique"),
    7: (lambda r: r.update(study_id="50000099", image_id="dup"), "study+image unique"),
    8: (lambda r: r.update(findings="Ok."), "findings length"),
    9: (lambda r: r.update(width=5), "width bounds"),
    10: (lambda r: r.update(indication="Send to jdoe@hospital.org"), "no contact in indication"),
    11: (lambda r: r.update(impression="Unchanged since 3/14/2019."), "no date in impression"),
    12: (lambda r: r.update(comparison="MRN 12345678"), "no id in comparison"),
    13: (lambda r: r.update(image_key="mimic-cxr_img.13"), "image_key dot-free"),
    15: (lambda r: r.update(report_text="FINDINGS: clear. Seen 2019-03-14."), "no date in report_text"),
    18: (lambda r: r.update(height=9000), "height bounds"),
    19: (lambda r: r.update(history="Call (617) 555-0101."), "no contact in history"),
    # K.json joins source labels with "|": a label that would not split back is quarantined, not a crash
    22: (lambda r: r.update(source_labels=["Nodule|Mass"]), "source labels joinable"),
    23: (lambda r: r.update(source_labels=["Nodule", ""]), "source labels joinable"),
}


def _defective_rows(n=40):
    rows = default_rows(n)
    for i, (mutate, _) in DEFECTS.items():
        mutate(rows[i])
    rows[4]["image_key"] = rows[5]["image_key"]  # duplicated key: both rows quarantined
    rows[14]["image_path"] = "images/missing.jpg"  # image file absent
    rows[16]["findings"] = None  # no findings in any version: filtered, not quarantined
    rows[17]["findings"] = None  # has an LLM version (reports.parquet): kept with that text
    rows[17]["indication"] = None  # ... and its indication comes from the structured report
    rows[n - 1]["findings"] = None  # test split, LLM version only: filtered (test uses rule-based only)
    return rows


def test_each_row_expectation_quarantines_the_right_rows(tmp_path, artifacts):
    rows = _defective_rows()
    reports = [
        {
            "image_key": rows[17]["image_key"],
            "findings": "Lungs are clear without focal consolidation.",
            "indication": "Fever.",
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
        },
        {
            "image_key": rows[39]["image_key"],
            "findings": "Heart size normal, lungs clear of disease.",
            "indication": None,
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
        },
        {
            "image_key": rows[20]["image_key"],
            "findings": "Clear lungs; no effusion or pneumothorax.",
            "indication": None,
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
        },
    ]
    data = write_dataset(tmp_path / "data", rows, reports=reports)
    (data / "images" / "missing.jpg").unlink(missing_ok=True)
    (data / rows[21]["image_path"]).write_bytes(b"")  # truncated to nothing
    res = run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())

    reasons = {q["image_key"]: q["reason"] for q in res.quarantined}
    for i, (_, label) in DEFECTS.items():
        key = rows[i]["image_key"]
        assert key in reasons, f"row {i} ({label}) not quarantined"
        assert label in reasons[key], (i, reasons[key])
    assert "image_key unique" in reasons[rows[5]["image_key"]]
    assert sum(1 for q in res.quarantined if q["image_key"] == rows[5]["image_key"]) == 2
    assert "image file present" in reasons[rows[14]["image_key"]]
    assert "image file non-empty" in reasons[rows[21]["image_key"]]
    # Nothing else was quarantined: the clean rows pass every expectation.
    assert len(res.quarantined) == len(DEFECTS) + 4
    assert all(q["stage"] == "validate" for q in res.quarantined)

    assert sorted(f["image_key"] for f in res.filtered) == sorted(
        [rows[16]["image_key"], rows[39]["image_key"]]
    )
    assert {f["reason"] for f in res.filtered} == {"no findings"}

    acc = res.accepted
    assert acc.height + len(res.filtered) + len(res.quarantined) == len(rows)
    llm_only = acc.filter(pl.col("image_key") == rows[17]["image_key"]).row(0, named=True)
    assert llm_only["primary_method"] == "openai:gpt-4o-mini"
    assert llm_only["indication_text"] == "Fever."
    both = acc.filter(pl.col("image_key") == rows[20]["image_key"]).row(0, named=True)
    assert [t["method"] for t in json.loads(both["targets_json"])] == ["rule-based", "openai:gpt-4o-mini"]
    assert both["findings_text"] == rows[20]["findings"]

    # Every expectation is recorded with its result; Data Docs exist on disk under the artifacts root.
    failed = {r["check"] for r in res.expectations if not r["success"]}
    assert {label for _, label in DEFECTS.values()} <= failed
    assert res.docs_url and res.docs_url.startswith("file://")
    assert (artifacts / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    q = pl.read_parquet(tmp_path / "shards" / "validation" / "quarantine.parquet")
    assert q.height == len(res.quarantined)


def test_patient_leakage_fails_the_run(tmp_path, artifacts):
    rows = default_rows(12)
    rows[10]["subject_id"] = rows[0]["subject_id"]  # rows[10] is a test-split row: same patient in train+test
    data = write_dataset(tmp_path / "data", rows)
    with pytest.raises(ValidationFailed, match="patient-level split leakage: 1 patient"):
        run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())
    assert not (tmp_path / "shards" / "validation" / "accepted.parquet").exists()
    report = json.loads((tmp_path / "shards" / "validation" / "expectations.json").read_text())
    leak = [r for r in report["expectations"] if r["suite"] == "cxrflow-patient-splits"]
    assert leak and not leak[0]["success"]


def test_same_patient_in_one_split_is_fine(tmp_path, artifacts):
    rows = default_rows(12)
    rows[1]["subject_id"] = rows[0]["subject_id"]
    data = write_dataset(tmp_path / "data", rows)
    steps = []
    res = run_validation(
        data, tmp_path / "shards", artifacts, ValidateConfig(), progress=lambda *a: steps.append(a)
    )
    assert res.accepted.height == 12
    # progress: every step announced before it runs, then all done
    assert steps == [(i, len(VALIDATION_STEPS), s) for i, s in enumerate(VALIDATION_STEPS)] + [(5, 5, "done")]


def test_row_count_floor_relative_to_found_fails(tmp_path, artifacts):
    data = write_dataset(tmp_path / "data", default_rows(12), found=1000)
    with pytest.raises(
        ValidationFailed, match="row-count collapse: manifest has 12 rows, below the floor 200"
    ):
        run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())


def test_a_collapse_repeats_the_ingest_hint(tmp_path, artifacts):
    """A source emptied by the view policy: the collapse says why and what to pass (`cxrflow data` hides the
    ingest flow's own note)."""
    data = write_dataset(tmp_path / "data", default_rows(12), found=1000)
    summary = json.loads((data / "summary.json").read_text())
    hint = "5 of 5 films state no view, so frontal_only filtered every film; ingest it with --all-views"
    (data / "summary.json").write_text(json.dumps({**summary, "notes": {"hint": hint}}))
    with pytest.raises(ValidationFailed, match="row-count collapse: .*ingest it with --all-views"):
        run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())


def test_mass_quarantine_is_a_collapse(tmp_path, artifacts):
    rows = default_rows(12)
    for r in rows[:8]:
        r["view"] = "LL"
    data = write_dataset(tmp_path / "data", rows)
    with pytest.raises(ValidationFailed, match="8 of 12 rows failed"):
        run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())


def test_all_views_config_accepts_laterals(tmp_path, artifacts):
    rows = [manifest_row(i) for i in range(6)]
    rows[0]["view"] = "LATERAL"
    data = write_dataset(tmp_path / "data", rows)
    res = run_validation(data, tmp_path / "shards", artifacts, ValidateConfig(frontal_only=False))
    assert res.accepted.height == 6 and not res.quarantined


def test_indication_from_a_structured_report_is_checked_for_phi(tmp_path, artifacts):
    """An LLM's indication (e.g. translated from a Spanish report) reaches K.json and the LLaVA export."""
    rows = default_rows(12)
    rows[0]["indication"] = None
    reports = [
        {
            "image_key": rows[0]["image_key"],
            "findings": "Lungs are clear without consolidation.",
            "indication": "Follow-up of the study from March 3, 2015.",
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
        }
    ]
    data = write_dataset(tmp_path / "data", rows, reports=reports)
    res = run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())
    reasons = {q["image_key"]: q["reason"] for q in res.quarantined}
    assert "no date in indication_text" in reasons.get(rows[0]["image_key"], ""), reasons
    assert res.accepted.height == 11


def test_rules_version_kept_when_the_llm_answer_was_quarantined(tmp_path, artifacts):
    """The structure stage's rules findings stand on their own: an LLM failure on the row must not drop them."""
    rows = default_rows(12)
    rows[11]["findings"] = None  # test split: only a rule-based version may be used
    reports = [
        {
            "image_key": rows[11]["image_key"],
            "findings": None,
            "indication": None,
            "rule_findings": "Lungs are clear without consolidation.",
            "status": "quarantined",
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
            "method": "openai:gpt-4o-mini",
        }
    ]
    data = write_dataset(tmp_path / "data", rows, reports=reports)
    res = run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())
    assert not res.filtered and res.accepted.height == 12
    row = res.accepted.filter(pl.col("image_key") == rows[11]["image_key"]).row(0, named=True)
    assert (row["primary_method"], row["findings_text"]) == (
        "rule-based",
        "Lungs are clear without consolidation.",
    )


@pytest.mark.slow  # ~20 s: the whole suite once, then in 3-row batches (>10 GX runs)
def test_row_suite_in_tiny_batches_gives_the_whole_frame_outputs(tmp_path, artifacts, monkeypatch):
    """The row suite runs BATCH_ROWS rows at a time: 3-row batches give, byte for byte, the outputs of one
    batch, duplicates split across two batches included (found over the whole archive, not per batch)."""
    import tasks.validate as validate

    rows = _defective_rows()
    rows[2]["image_key"] = rows[3]["image_key"]  # rows 2 | 3: a duplicated key across a batch boundary
    for i in (24, 25):  # the same study+image in two batches (row 16 is filtered, so 24 | 25 straddle one)
        rows[i].update(study_id="50000077", image_id="dup2")
    reports = [  # LLM versions for rows in later slices (17: its only version; 20: a second one; 39: test split)
        {
            "image_key": rows[i]["image_key"],
            "findings": text,
            "indication": ind,
            "operation": "structure",
            "backend": "openai",
            "model": "gpt-4o-mini",
        }
        for i, text, ind in (
            (17, "Lungs are clear without focal consolidation.", "Fever."),
            (20, "Clear lungs; no effusion or pneumothorax.", None),
            (39, "Heart size normal, lungs clear of disease.", None),
        )
    ]
    data = write_dataset(tmp_path / "data", rows, reports=reports)
    batches = []
    frame = validate.gx_frame
    monkeypatch.setattr(validate, "gx_frame", lambda s: batches.append(s.height) or frame(s))

    outs = {}
    for size in (10**6, 3):
        monkeypatch.setattr(validate, "BATCH_ROWS", size)
        outs[size] = tmp_path / f"shards-{size}"
        res = run_validation(data, outs[size], artifacts, ValidateConfig())
    assert batches[0] > 3 and set(batches[1:]) <= {1, 2, 3} and len(batches) > 10  # one batch, then many

    reasons = {}
    for q in res.quarantined:
        reasons.setdefault(q["image_key"], []).append(q["reason"])
    dup_key = reasons[rows[3]["image_key"]]
    assert len(dup_key) == 2 and all("image_key unique" in r for r in dup_key)
    assert all("study+image unique" in " ".join(reasons[rows[i]["image_key"]]) for i in (24, 25))
    assert res.accepted.height + len(res.filtered) + len(res.quarantined) == len(rows)
    llm_only = res.accepted.filter(pl.col("image_key") == rows[17]["image_key"]).row(0, named=True)
    assert (llm_only["primary_method"], llm_only["indication_text"]) == ("openai:gpt-4o-mini", "Fever.")
    for name in ("quarantine.parquet", "filtered.parquet", "expectations.json"):
        one, many = (outs[s] / "validation" / name for s in (10**6, 3))
        assert one.read_bytes() == many.read_bytes(), name
    # accepted.parquet: a row group per slice, so the bytes differ by batch size; the rows, order and schema not
    one, many = (pl.read_parquet(outs[s] / "validation" / "accepted.parquet") for s in (10**6, 3))
    assert one.schema == many.schema and one.equals(many)


def test_validation_streams_the_manifest_and_writes_accepted_from_batches(tmp_path, artifacts, monkeypatch):
    """Validation never reads manifest.parquet or reports.parquet whole (only key columns are read whole): the
    samples are assembled, checked and written a slice at a time (3 rows here), and accepted.parquet, written
    a row group per spilled slice, holds the whole frame's rows, order and schema."""
    import tasks.validate as validate

    rows = _defective_rows()
    reports = [
        {"image_key": rows[i]["image_key"], "findings": "Lungs are clear without focal consolidation.",
         "indication": None, "operation": "structure", "backend": "openai", "model": "gpt-4o-mini"}
        for i in (17, 20, 39)
    ]
    data = write_dataset(tmp_path / "data", rows, reports=reports)
    samples, _ = validate.assemble_samples(data, ValidateConfig())  # the whole frame, before any patching

    real_read = pl.read_parquet

    def key_columns_only(source, *args, columns=None, **kwargs):
        whole = Path(source).name in ("manifest.parquet", "reports.parquet") and columns is None
        assert not whole, f"{source} read whole"
        return real_read(source, *args, columns=columns, **kwargs)

    slices = []
    real_slice = validate._assemble_slice
    monkeypatch.setattr(pl, "read_parquet", key_columns_only)
    monkeypatch.setattr(validate, "_assemble_slice", lambda r, *a: slices.append(r.height) or real_slice(r, *a))
    monkeypatch.setattr(validate, "BATCH_ROWS", 3)
    res = run_validation(data, tmp_path / "shards", artifacts, ValidateConfig())
    assert len(slices) == -(-len(rows) // 3) and max(slices) == 3
    assert res.quarantined and res.filtered  # the fixture's defects: some rows go, the others are written
    bad = {q["image_key"] for q in res.quarantined}
    kept = samples.filter(~pl.col("image_key").is_in(list(bad))).drop(validate.ROW_INDEX)
    got = pl.read_parquet(res.accepted_path)
    assert got.schema == kept.schema and got.equals(kept)
    # a row group per slice (at most 3 rows): readers' windows never decode more than a slice
    groups = pq.ParquetFile(res.accepted_path).metadata
    assert groups.num_row_groups > 1 and all(groups.row_group(i).num_rows <= 3 for i in range(groups.num_row_groups))
    assert not [p for p in res.accepted_path.parent.iterdir() if p.name.startswith(".")]  # spill removed
