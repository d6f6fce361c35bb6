"""The fault campaign's categories, kept as regression tests (issue 11): the data-use guard judged by the
transport, PHI in every output, bad inputs that must become quarantine rows or one-line errors, kill points,
stale outputs after an interrupted run, and two runs racing for one output folder.

Each section names the promise it proves; README's "Reliability promises" lists them."""

from __future__ import annotations

import pytest
from http_support import Recorder

from schemas.llm import LLMConfig
from tasks.llm import DataUseError, WorkItem, check_data_use, run_operation
from tasks.reports.operations import STRUCTURE

SECRET = "sk-proj-SECRETKEY0123456789"
REPORT = "FINDINGS: Small left effusion in patient PATIENT-TEXT-77. IMPRESSION: Effusion."


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def _llm(url: str, tmp_path, **kw) -> LLMConfig:
    return LLMConfig(
        backend="openai",
        base_url=url,
        cache_dir=tmp_path / "cache",
        max_retries=0,
        invalid_answer_retries=0,
        **kw,
    )


# --- 1. the data-use guard governs the transport ----------------------------------------------------------------


def test_guard_llm_calls_never_follow_a_redirect(tmp_path, no_proxy_env):
    sink = Recorder()
    redirector = Recorder(307, {"Location": f"{sink.url}/v1/chat/completions"})
    try:
        items = [WorkItem("a", "mimic-cxr", {"report_text": REPORT})]
        result = run_operation(STRUCTURE, items, _llm(f"{redirector.url}/v1", tmp_path))
        assert redirector.saw(b"PATIENT-TEXT-77")  # the configured (local) endpoint got it
        assert sink.requests == []  # ... and nothing followed the 307
        assert result.results["a"].status != "ok"
    finally:
        sink.close()
        redirector.close()


def test_guard_http_client_refuses_any_other_origin(tmp_path, no_proxy_env):
    import asyncio

    from tasks.llm.guard import guarded_http_client

    sink = Recorder()
    try:
        cfg = _llm("http://127.0.0.1:9/v1", tmp_path)

        async def go():
            async with guarded_http_client(cfg) as http:
                await http.post(
                    f"{sink.url}/v1/chat/completions", content=REPORT.encode(), follow_redirects=True
                )

        with pytest.raises(DataUseError, match="configured endpoint"):
            asyncio.run(go())
        assert sink.requests == []
    finally:
        sink.close()


def test_guard_judges_a_proxy_by_where_data_goes(tmp_path, monkeypatch, no_proxy_env):
    proxy = Recorder()
    target = Recorder()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        cfg = _llm(f"{target.url}/v1", tmp_path)
        with pytest.raises(DataUseError, match="proxy"):
            check_data_use(["mimic-cxr"], cfg)
        with pytest.raises(DataUseError, match="proxy"):
            run_operation(STRUCTURE, [WorkItem("a", "mimic-cxr", {"report_text": REPORT})], cfg)
        assert proxy.requests == [] and target.requests == []
        check_data_use(["openi"], cfg)  # public data may use a proxy
        # the proxy named as allowed (a data-use agreement covers it), or bypassed with NO_PROXY: accepted
        check_data_use(["mimic-cxr"], cfg.model_copy(update={"allow_endpoints": [proxy.url.split("//")[1]]}))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        check_data_use(["mimic-cxr"], cfg)
        run_operation(STRUCTURE, [WorkItem("a", "mimic-cxr", {"report_text": REPORT})], cfg)
        assert proxy.requests == [] and target.saw(b"PATIENT-TEXT-77")  # the client used the guard's (absent) proxy
    finally:
        proxy.close()
        target.close()


# --- 2. the PHI-stripped DICOM cache holds no PHI at any depth ------------------------------------------------


def test_dicom_cache_strip_is_an_allow_list_at_every_depth():
    import io

    import numpy as np
    import pydicom
    from pydicom.sequence import Sequence

    from fixtures.dicom import DXSpec, dx_dataset, picture, stored_values
    from tasks.phi import strip_dataset

    spec = DXSpec(voi_lut=True)
    ds = dx_dataset(
        stored_values(picture(32, 24), spec),
        spec,
        patient_id="MRN-PLANTED-4711",
        study_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        series_uid="1.2.3.4.6",
    )
    ds.PatientName = "Planted^Zebulon"
    lut = ds.VOILUTSequence[0]
    lut.LUTExplanation = "LUT for Zebulon Planted"
    lut.PatientName = "Planted^Zebulon"
    lut.PatientID = "MRN-PLANTED-4711"
    lut.ReferencedImageSequence = Sequence([pydicom.Dataset()])
    lut.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    out = strip_dataset(ds, "s" * 16)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    for needle in (b"Zebulon", b"Planted", b"MRN-PLANTED-4711", b"1.2.3.4.5"):
        assert needle not in raw, needle
    back = pydicom.dcmread(io.BytesIO(raw))
    item = back.VOILUTSequence[0]
    assert set(item.dir()) == {"LUTDescriptor", "LUTData"}  # the LUT itself survives, nothing else
    assert np.asarray(back.pixel_array).shape == (32, 24)


# --- 3. the report scrub and validation's PHI checks cover the campaign's categories ---------------------------

CAMPAIGN_REPORT = (
    "Patient Maria Garcia-Lopez. Ms. Garcia was seen 14-Mar-2024, again on the 2nd of April and 3/14. Age 93. "
    "SSN 078-05-1120. Discussed with Dr. Whitcombe, who lives at 221 Baker Street. "
    "FINDINGS: Small left effusion. Heart size is normal at 12 cm. 1.5 cm nodule. IMPRESSION: Effusion."
)
CAMPAIGN_PHI = (
    "Maria",
    "Garcia",
    "Lopez",
    "14-Mar-2024",
    "2nd of April",
    "3/14",
    "93",
    "078-05-1120",
    "Whitcombe",
    "221 Baker Street",
)


def test_report_scrub_covers_the_campaign_categories():
    import pydicom

    from tasks.phi import context_from_dataset, scrub_report

    header = pydicom.Dataset()
    header.PatientName = "GARCIA-LOPEZ^MARIA"
    out = scrub_report(CAMPAIGN_REPORT, context_from_dataset(header))
    for leaked in CAMPAIGN_PHI:
        assert leaked not in out, (leaked, out)
    assert "Ms. ___" in out and "Dr. ___" in out and "Age ___" in out
    assert "FINDINGS: Small left effusion. Heart size is normal at 12 cm. 1.5 cm nodule." in out


def test_report_scrub_catches_titled_names_in_other_spellings():
    from tasks.phi import scrub_report

    for text, name in (
        ("Seen by Dr. de la Cruz today.", "Cruz"),
        ("Discussed with Dr. van der Berg.", "Berg"),
        ("Called DR. SMITH at noon.", "SMITH"),
        ("Per Dr.Whitcombe the line moved.", "Whitcombe"),
        ("Seen by Mr. Álvarez.", "lvarez"),
        ("Dr. Émile Zola reviewed.", "mile"),
    ):
        out = scrub_report(text)
        assert name not in out and "___" in out, (text, out)
    assert "2024-03-14" not in scrub_report("Prior film 2024-03-14T10:00 unchanged.")


def test_report_scrub_keeps_clinical_fractions_and_header_name_particles_out_of_ordinary_words():
    import pydicom

    from tasks.phi import context_from_dataset, scrub_report

    header = pydicom.Dataset()
    header.PatientName = "de la Cruz^Maria"
    text = (
        "Mrs. de la Cruz. 3/4 views obtained. Opacity in 1/2 of the left lung. Ribs 4/5 fractured. "
        "T1-T2 levels. C5/6 disc. Nodule 1.2 x 3.4 cm. A de novo lesion. Compared with 3/14 and the 12/5 film. "
        "Results to jdoe.planted@hospital.org."
    )
    out = scrub_report(text, context_from_dataset(header))
    for leaked in ("Cruz", "3/14", "12/5", "jdoe.planted@hospital.org"):
        assert leaked not in out, (leaked, out)
    for clinical in ("3/4 views", "1/2 of the left lung", "Ribs 4/5", "T1-T2", "C5/6 disc", "1.2 x 3.4 cm",
                     "A de novo lesion"):  # fmt: skip
        assert clinical in out, (clinical, out)
    header.PatientName = "LE^VAN"  # a one-word surname that looks like a particle is still a name
    out = scrub_report("Patient Le Van, chest PA.", context_from_dataset(header))
    assert "Le" not in out and "Van" not in out, out


@pytest.fixture(scope="module")
def phi_validation(tmp_path_factory):
    """One GX validation run over rows each carrying one kind of PHI the scrub should have removed."""
    from fixtures.shard_manifest import default_rows, write_dataset
    from schemas.shards import ValidateConfig
    from tasks.validate import run_validation

    tmp = tmp_path_factory.mktemp("phi-validation")
    rows = default_rows(24)
    planted = {
        1: ("findings", "No effusion. SSN 078-05-1120 on file.", "no id in findings_text"),
        2: ("findings", "No effusion. Discussed with Dr. Whitcombe.", "no name in findings_text"),
        3: ("findings", "No effusion. Home at 221 Baker Street.", "no address in findings_text"),
        4: ("findings", "No effusion in this patient, age 93.", "no age in findings_text"),
        5: ("findings", "No effusion since 14-Mar-2024 film.", "no date in findings_text"),
        6: ("findings", "No effusion. Email jdoe.planted@hospital.org now.", "no contact in findings_text"),
        7: ("findings", "No effusion. Phone (617) 555-0101 for results.", "no contact in findings_text"),
        8: ("findings", "No effusion. Record 99887766 reviewed today.", "no id in findings_text"),
        9: ("findings", "No effusion.\x00\x00 Lungs clear.", "no control character in findings_text"),
        # shapes the old backstop's patterns missed (issue 23)
        10: ("findings", "No effusion. Seen by dr fairbanks and nurse Henrietta Vandersloot.", "no name in findings_text"),
        11: ("findings", "No effusion. Call +44 20 7946 0958.", "no contact in findings_text"),
        12: ("findings", "No effusion on Mar-14-2024.", "no date in findings_text"),
        13: ("findings", "No effusion. 92F with cough.", "no age in findings_text"),
        14: ("findings", "No effusion. Lives at 12 main street, MA 02115.", "no address in findings_text"),
        15: ("findings", "No effusion. Unit number 48213.", "no id in findings_text"),
    }
    for i, (col, text, _) in planted.items():
        rows[i][col] = text
    data = write_dataset(tmp / "data", rows)
    artifacts = tmp / "artifacts"
    res = run_validation(data, tmp / "shards", artifacts, ValidateConfig(max_quarantine_fraction=0.9))
    return rows, planted, res, artifacts, tmp / "shards"


@pytest.mark.slow  # one GX run (shared with the artifacts test): ~25 s on 2 busy cores
def test_validation_rejects_rows_that_still_hold_phi(phi_validation):
    rows, planted, res, _, _ = phi_validation
    reasons = {q["image_key"]: q["reason"] for q in res.quarantined}
    for i, (_, _, label) in planted.items():
        assert label in reasons.get(rows[i]["image_key"], ""), (i, label, reasons)


# --- 4./5. training: stage boundary reproducibility, kill during the first save --------------------------------


def _train_cfg(shards, out, stages):
    from schemas.train import default_config, stage1_defaults, stage2_defaults

    return default_config(
        "tiny", shards, out, save_every=100,
        stage1=stage1_defaults(global_batch_size=4, micro_batch_size=2, lr=1e-2),
        stage2=stage2_defaults(global_batch_size=4, micro_batch_size=2, epochs=1, lr=3e-3),
    ).model_copy(update={"stages": stages})  # fmt: skip


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    from fixtures.train_shards import write_train_shards

    return write_train_shards(tmp_path_factory.mktemp("rel-train-shards"), n=12, per_shard=5)


def _scramble_rngs(seed: int) -> None:
    """What a fresh process (or one that did other work first) looks like to the global RNGs."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.mark.slow
def test_training_stage2_identical_whether_or_not_stage1_ran_in_the_same_process(train_shards, tmp_path):
    from safetensors.torch import load_file

    from training.run import run_training

    _scramble_rngs(1)
    one = run_training(_train_cfg(train_shards, tmp_path / "one", [1, 2]))
    _scramble_rngs(2)
    run_training(_train_cfg(train_shards, tmp_path / "split", [1]))  # `--stage 1`
    _scramble_rngs(3)  # ... then `--stage both` in another process: stage 1 is skipped
    split = run_training(_train_cfg(train_shards, tmp_path / "split", [1, 2]))
    assert split["stages"][1] == {"skipped": "already finished"}
    assert split["stages"][2]["losses"] == one["stages"][2]["losses"]
    a = load_file(str(tmp_path / "one" / "final" / "stage2-trainable.safetensors"))
    b = load_file(str(tmp_path / "split" / "final" / "stage2-trainable.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_training_kill_during_the_first_base_save_does_not_wedge_the_run_dir(tmp_path, monkeypatch):
    import transformers

    from schemas.train import default_config
    from training.model import build_model, build_tokenizer

    cfg = default_config("tiny", tmp_path / "shards", tmp_path / "run")
    real_save = transformers.LlavaForConditionalGeneration.save_pretrained

    def killed_mid_save(self, path, *a, **kw):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_bytes(b"")  # what kill -9 left behind (5/5 tries)
        raise KeyboardInterrupt("killed")

    tok = build_tokenizer(cfg, cfg.out)
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "save_pretrained", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        build_model(cfg, tok, cfg.out)
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "save_pretrained", real_save)
    first = build_model(cfg, tok, cfg.out)  # the rerun works without deleting anything by hand
    again = build_model(cfg, tok, cfg.out)  # ... and later runs load the same saved base
    assert all(
        bool((a == b).all())
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_training_stale_temp_checkpoints_are_cleaned_on_start(tmp_path):
    import subprocess
    import sys

    from training.checkpoint import clean_stale_temps

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    run = tmp_path / "run"
    stale = [run / "checkpoints" / f".tmp-stage1-step-0000003-{dead_pid}", run / f".base.tmp-{dead_pid}"]
    live = run / "checkpoints" / f".tmp-stage1-step-0000006-{__import__('os').getpid()}"  # a save in progress
    for d in (*stale, live):
        d.mkdir(parents=True)
        (d / "optimizer.pt").write_bytes(b"partial")
    assert sorted(p.name for p in clean_stale_temps(run)) == sorted(p.name for p in stale)
    assert not any(p.exists() for p in stale) and live.exists()


# --- 6. ingest: file-system errors become quarantine rows; keys never collide ------------------------------------


@pytest.fixture
def mimic_root(tmp_path):
    from fixtures.mimic_cxr import write_mimic_cxr

    root = tmp_path / "mimic"
    write_mimic_cxr(root, studies=4, seed=1, defects=False)
    return root


def _ingest_cfg(source, root, out, **kw):
    from schemas.config import ImageConfig, IngestConfig

    return IngestConfig(source=source, root=root, out=out, image=ImageConfig(size=32), workers=1, **kw)


def _reconciles(summary: dict) -> None:
    assert summary["found"] == summary["kept"] + summary["filtered"] + summary["quarantined"], summary


def test_ingest_file_system_errors_are_quarantine_rows(mimic_root, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    import polars as pl

    import tasks.sources.mimic_cxr as mimic
    from tasks.ingest import run_ingest

    studies = sorted(p for p in (mimic_root / "files").glob("p*/p*/s*") if p.is_dir())
    a, b, c, d = studies[:4]
    os.symlink(a / "loopb.dcm", a / "loopa.dcm")  # a symlink loop among images
    os.symlink(a / "loopa.dcm", a / "loopb.dcm")
    (a / "dangling.dcm").symlink_to(a / "nowhere.dcm")  # a dangling link
    (a / "folder.dcm").mkdir()  # a folder with an image's name
    report_b = b.parent / f"{b.name}.txt"
    report_b.unlink()
    report_b.mkdir()  # the report path is a folder
    report_c = c.parent / f"{c.name}.txt"
    real_read_bytes, real_scandir = Path.read_bytes, os.scandir

    def read_bytes(self):  # tests run as root: chmod 000 would not stop a read, so the error is injected
        if self == report_c:
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    def scandir(path="."):
        if str(path) == str(d):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(mimic.os, "scandir", scandir)
    summary = run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    _reconciles(summary)
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    reasons = dict(zip(q["source_path"], q["reason"], strict=True))
    rel = lambda p: p.relative_to(mimic_root).as_posix()  # noqa: E731
    assert (
        "symbolic links" in reasons[rel(a / "loopa.dcm")]
        and "symbolic links" in reasons[rel(a / "loopb.dcm")]
    )
    assert "No such file" in reasons[rel(a / "dangling.dcm")]
    assert "not a regular file" in reasons[rel(a / "folder.dcm")]
    assert any(
        "report path is a folder" in r for r in q.filter(pl.col("source_path").str.contains(b.name))["reason"]
    )
    assert any(
        "Permission denied" in r for r in q.filter(pl.col("source_path").str.contains(c.name))["reason"]
    )
    assert "folder unreadable: Permission denied" in reasons[rel(d)]
    assert summary["kept"] > 0


def test_ingest_ids_that_collapse_to_one_key_are_quarantined_never_merged(mimic_root, tmp_path, monkeypatch):
    import polars as pl

    import tasks.ingest as ingest
    from tasks.sources import get_adapter

    real = get_adapter("mimic-cxr")

    class Colliding:  # the real adapter, with two image ids that differ only by '.' vs '-'
        name, may_leave_premises, licence = real.name, real.may_leave_premises, real.licence
        check = staticmethod(real.check)

        @staticmethod
        def discover(cfg):
            d = real.discover(cfg)
            d.candidates[0].image_id, d.candidates[1].image_id = "1.2.3", "1-2-3"
            return d

    monkeypatch.setattr(ingest, "get_adapter", lambda name: Colliding)
    summary = ingest.run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    _reconciles(summary)
    manifest = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest["image_key"].n_unique() == manifest.height
    assert "mimic-cxr_1-2-3" not in manifest["image_key"].to_list()
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    collided = q.filter(pl.col("reason").str.contains("key collision"))
    assert collided.height == 2 and set(collided["image_key"]) == {"mimic-cxr_1-2-3"}


def test_ingest_openi_report_that_is_a_folder_is_quarantined(tmp_path):
    import polars as pl

    from fixtures.openi import write_openi
    from tasks.ingest import run_ingest

    root = tmp_path / "openi"
    write_openi(root)
    xml = sorted((root / "ecgen-radiology").glob("*.xml"))[0]
    xml.unlink()
    xml.mkdir()
    summary = run_ingest(_ingest_cfg("openi", root, tmp_path / "out"))
    _reconciles(summary)
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert "report XML unreadable: Is a directory" in q["reason"].to_list()


# --- 7. a killed re-shard never leaves an index naming missing tars ----------------------------------------------


def _published_set_consistent(out) -> list[str]:
    """Problems a reader would hit: index entries naming absent/changed tars, map/summary/LLaVA naming others."""
    import json

    import polars as pl

    problems = []
    indexed: dict[str, int] = {}
    for index in out.glob("*.index.json"):
        for entry in json.loads(index.read_text())["shardlist"]:
            tar = out / entry["url"]
            if not tar.exists() or tar.stat().st_size != entry["filesize"]:
                problems.append(f"{index.name} names {entry['url']} (missing or another size)")
            indexed[entry["url"]] = entry["nsamples"]
    if (out / "shards.parquet").exists():
        counts = pl.read_parquet(out / "shards.parquet")["shard"].value_counts()
        for shard, n in counts.iter_rows():
            if not (out / shard).exists() or indexed.get(shard) != n:
                problems.append(f"shards.parquet: {shard} with {n} samples disagrees with the tars/indexes")
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        if summary["samples"] != sum(indexed.values()):
            problems.append("summary.json counts differ from the indexes")
    if (out / "llava").exists() and sum(indexed.values()) == 0:
        problems.append("llava/ without any index")
    return problems


def test_shard_killed_reshard_never_publishes_stale_indexes(tmp_path, monkeypatch):
    import wids

    import tasks.shard as shard
    from fixtures.shard_manifest import default_rows, write_dataset
    from schemas.shards import SPLITS, ShardConfig, ValidateConfig
    from tasks.export_llava import export_llava
    from tasks.shard_index import write_shard_map, write_summary, write_wids_index
    from tasks.validate import ROW_INDEX, assemble_samples

    data = write_dataset(tmp_path / "data", default_rows(16))
    accepted = assemble_samples(data, ValidateConfig())[0].drop(ROW_INDEX)
    out = tmp_path / "shards"

    def publish(cfg):
        infos = shard.write_shards(accepted, data, out, cfg)
        for s in SPLITS:
            write_wids_index(out, s, infos)
        write_shard_map(out, infos, accepted)
        write_summary(out, infos, {})
        export_llava(accepted, out)

    publish(ShardConfig(max_samples=8, workers=1))
    assert not _published_set_consistent(out)
    real_write_one, written = shard._write_one, []

    def killed_after_one(s, out_dir, fault, *rows):  # kill -9 after the first new tar of a re-shard
        if written:
            raise KeyboardInterrupt("killed")
        written.append(s.name)
        return real_write_one(s, out_dir, fault, *rows)

    monkeypatch.setattr(shard, "_write_one", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        publish(ShardConfig(max_samples=3, workers=1))
    assert not _published_set_consistent(out), _published_set_consistent(out)
    for index in out.glob("*.index.json"):  # every index still there reads without IndexError
        ds = wids.ShardListDataset(str(index), cache_dir=str(tmp_path / "wids"))
        for i in range(len(ds)):
            ds[i]
    monkeypatch.setattr(shard, "_write_one", real_write_one)
    publish(ShardConfig(max_samples=3, workers=1))  # the rerun completes the new set
    assert not _published_set_consistent(out) and (out / "summary.json").exists()


# --- 8. one run per output folder ---------------------------------------------------------------------------------


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding an output folder's lock; `.kill()` ends it the hard way (kill -9)."""
    import os
    import signal
    import subprocess
    import sys

    held = []

    def hold(folder):
        code = (
            "import sys, time; from pathlib import Path; from tasks.lock import output_lock\n"
            "with output_lock(Path(sys.argv[1]), 'ingest'):\n    print('held', flush=True); time.sleep(600)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env={**os.environ}
        )
        assert proc.stdout.readline().strip() == "held"
        held.append(proc)
        return proc

    yield hold
    for proc in held:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_lock_second_run_on_an_output_folder_is_refused_and_dead_holders_release(
    mimic_root, tmp_path, held_lock
):
    import signal

    from tasks.ingest import run_ingest
    from tasks.lock import OutputLocked

    out = tmp_path / "out"
    holder = held_lock(out)
    with pytest.raises(OutputLocked, match=rf"in use by another cxrflow run \(pid {holder.pid}, ingest\)"):
        run_ingest(_ingest_cfg("mimic-cxr", mimic_root, out))
    assert not (out / "manifest.parquet").exists()  # refused before any work
    holder.send_signal(signal.SIGKILL)  # the holder dies without cleaning up: its lock must not outlive it
    holder.wait()
    summary = run_ingest(_ingest_cfg("mimic-cxr", mimic_root, out))
    _reconciles(summary)


def test_lock_taken_on_a_file_its_last_holder_unlinked_is_retaken(tmp_path, monkeypatch):
    """A run that did nothing removes its lock file and folder on exit; a second run that opened the file just
    before must not lock the unlinked inode (a third run would lock a new file: two runs at once)."""
    import fcntl
    import os

    from tasks import lock

    out = tmp_path / "out"
    out.mkdir()
    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_left(fd, op):
        if not calls:  # the previous holder's cleanup lands between our open and our flock
            (out / lock.LOCK_NAME).unlink()
            out.rmdir()
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(lock.fcntl, "flock", flock_after_the_holder_left)
    with lock.output_lock(out, "ingest"):
        fd = lock._held[str(out.resolve())][0]
        assert (out / lock.LOCK_NAME).exists() and os.fstat(fd).st_ino == os.stat(out / lock.LOCK_NAME).st_ino


def test_lock_refusal_on_the_command_line_is_one_line(mimic_root, tmp_path, held_lock):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = held_lock(out)
    proc = subprocess.run(
        [sys.executable, "-m", "cxrflow_cli.main", "ingest", "--source", "mimic-cxr", "--root", str(mimic_root),
         "--out", str(out), "--no-prefect", "--size", "32", "--workers", "1"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"pid {holder.pid}" in proc.stderr


# --- 9. paths a release names stay inside the release ---------------------------------------------------------------


def test_release_paths_outside_the_root_are_quarantined_never_read(tmp_path):
    import csv
    import shutil

    import polars as pl

    from fixtures.chexpert import write_chexpert
    from tasks.ingest import run_ingest

    root = tmp_path / "release"
    facts = write_chexpert(root, patients=4, plus=False, quirks=False)
    base = root / facts["prefix"]
    with open(base / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    sample = next(r for r in rows[1:] if r[1] == "Frontal" or "Frontal" in r)
    climbing = f"{facts['prefix']}/train/../../../outside/x.jpg"
    outside = (base / "train/../../../outside/x.jpg").resolve()
    outside.parent.mkdir(parents=True)
    shutil.copy(base / sample[0].split("/", 1)[1], outside)  # a real image lies there: it must not be read
    absolute = str(outside)
    for bad in (climbing, absolute):
        rows.append([bad, *sample[1:]])
    with open(base / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    summary = run_ingest(_ingest_cfg("chexpert", root, tmp_path / "out"))
    _reconciles(summary)
    manifest = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert not any("outside" in str(v) for row in manifest.iter_rows() for v in row)
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    escaped = q.filter(pl.col("reason").str.contains("leaves the release root"))
    assert escaped.height == 2


def test_release_path_check_is_lexical_and_strict():
    from tasks.sources._common import escapes_root

    for bad in ("../x.jpg", "train/../../x.jpg", "/etc/passwd", "C:/x.jpg", "a/../../b", "..\\x.jpg"):
        assert escapes_root(bad), bad
    for ok in ("train/p1/s1/v1.jpg", "./train/x.jpg", "train/p1/../p2/x.jpg", "x.jpg"):
        assert not escapes_root(ok), ok


# --- 10. GX results and Data Docs hold ids and expectations, never the text of a row -------------------------------


@pytest.mark.slow
def test_gx_artifacts_never_hold_the_text_of_a_phi_quarantined_row(phi_validation):
    rows, planted, res, artifacts, shards = phi_validation
    needles = [
        "078-05-1120",
        "Whitcombe",
        "221 Baker",
        "age 93",
        "14-Mar-2024",
        "jdoe.planted@hospital.org",
        "555-0101",
        "99887766",
    ]
    quarantined = {q["image_key"] for q in res.quarantined}
    assert {rows[i]["image_key"] for i in planted} <= quarantined
    leaks = []
    for root in (artifacts, shards):
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in {".json", ".html", ".md", ".txt", ".parquet", ".csv"}:
                data = path.read_bytes()
                leaks += [(path.relative_to(root).as_posix(), n) for n in needles if n.encode() in data]
    # GX's own stores and Data Docs, and cxrflow's validation outputs: only ids and expectation names
    assert not leaks, leaks


# --- 11. no key in any part of an endpoint URL ----------------------------------------------------------------------

KEYED_URLS = (
    f"http://127.0.0.1:8000/v1?api-key={SECRET}",
    f"http://127.0.0.1:8000/v1#{SECRET}",
    f"http://127.0.0.1:8000/{SECRET}/v1",
    f"http://user:{SECRET}@127.0.0.1:8000/v1",
    # path parameters and percent-encoding are still the path
    f"http://127.0.0.1:8000/v1;api-key={SECRET}",
    f"http://127.0.0.1:8000/key={SECRET}/v1",
    "http://127.0.0.1:8000/v1/" + SECRET.replace("-", "%2D"),
    "http://127.0.0.1:8000/Bearer%20" + SECRET,
)


def test_keys_in_any_part_of_an_endpoint_url_are_refused_without_echo(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from schemas.pipeline import StructureSection
    from schemas.shards import DataParams

    for url in KEYED_URLS:
        for build in (
            lambda u: LLMConfig(backend="openai", base_url=u),
            lambda u: LLMConfig(backend="azure", azure_endpoint=u),
            lambda u: DataParams(root=tmp_path, out=tmp_path, llm_base_url=u),  # a Prefect flow parameter
            lambda u: StructureSection(backend="openai", base_url=u),
        ):
            with pytest.raises(ValidationError) as err:
                build(url)
            assert SECRET not in str(err.value) and "api_key_env" in str(err.value), url
    # ordinary endpoints stay accepted
    LLMConfig(backend="openai", base_url="http://127.0.0.1:8000/v1")
    LLMConfig(backend="azure", azure_endpoint="https://lab-east.openai.azure.com/")
    monkeypatch.setenv("OPENAI_BASE_URL", KEYED_URLS[0])  # the environment is checked too
    with pytest.raises(DataUseError) as err:
        check_data_use(["openi"], LLMConfig(backend="openai"))
    assert SECRET not in str(err.value)


def test_keyed_url_on_the_command_line_is_a_one_line_error(tmp_path):
    import os
    import subprocess
    import sys

    from structure_support import manifest_row, write_manifest

    manifest = write_manifest(tmp_path / "m.parquet", [manifest_row(0, "openi")])  # the URL is what is wrong
    proc = subprocess.run(
        [sys.executable, "-m", "cxrflow_cli.main", "structure", "--manifest", str(manifest),
         "--out", str(tmp_path / "o"), "--backend", "openai", "--base-url", KEYED_URLS[0], "--no-prefect"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and "api_key_env" in proc.stderr


# --- 12. low: contradictory headers, text defects, CSV errors that name the file -------------------------------------


def _dx(tmp_path, name, **extra):
    from fixtures.dicom import DXSpec, dx_dataset, picture, stored_values

    spec = DXSpec(rescale=(1.0, 0.0)) if "RescaleSlope" in extra else DXSpec()
    ds = dx_dataset(
        stored_values(picture(40, 32), spec),
        spec,
        patient_id="p",
        study_uid="1.2.3",
        sop_uid=f"1.2.3.{len(name)}",
        series_uid="1.2.4",
    )
    for k, v in extra.items():
        setattr(ds, k, v)
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_headers_that_contradict_the_pixels_are_rejected_with_a_reason(tmp_path):
    import numpy as np

    from schemas.config import ImageConfig
    from tasks.images import ImageDecodeError, process

    rgb_bytes = np.zeros((40, 32, 3), dtype="<u2").tobytes()
    rgb = _dx(tmp_path, "rgb", SamplesPerPixel=3, PlanarConfiguration=0, PixelData=rgb_bytes)
    black = _dx(tmp_path, "black", RescaleSlope=0)
    with pytest.raises(ImageDecodeError, match="SamplesPerPixel 3"):
        process(rgb, "dicom", ImageConfig(size=32))
    with pytest.raises(ImageDecodeError, match="RescaleSlope 0"):
        process(black, "dicom", ImageConfig(size=32))
    process(_dx(tmp_path, "fine"), "dicom", ImageConfig(size=32))  # the same film without the defect decodes


def test_report_bom_is_read_and_nul_bytes_are_quarantined(mimic_root, tmp_path):
    import polars as pl

    from tasks.ingest import run_ingest
    from tasks.reports.sections import parse_report

    reports = sorted((mimic_root / "files").glob("p*/p*/s*.txt"))
    # a report that has findings (the fixture also writes shapes without any)
    bom = next(r for r in reports if parse_report(r.read_text(), r.stem[1:]).sections["findings"])
    nul = next(r for r in reports if r != bom)
    bom.write_bytes(b"\xef\xbb\xbf" + bom.read_bytes())
    nul.write_bytes(nul.read_bytes() + b"\x00\x00\x00")
    summary = run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    _reconciles(summary)
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    with_bom = m.filter(pl.col("study_id") == bom.stem[1:])
    assert with_bom.height and with_bom["findings"].is_not_null().all()
    assert not with_bom["report_text"].str.contains("\ufeff").any()
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    nul_rows = q.filter(pl.col("reason").str.contains("NUL bytes"))
    assert nul_rows.height >= 1 and nul_rows["source_path"].str.contains(nul.stem).all()
    assert m.filter(pl.col("study_id") == nul.stem[1:]).height == 0


def test_every_csv_or_gz_error_names_the_file(mimic_root, tmp_path):
    import gzip

    from tasks.ingest import discover
    from tasks.sources.base import SourceLayoutError

    meta = mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"
    orig = meta.read_bytes()
    text = gzip.decompress(orig)
    first_row_end = text.index(b"\n", text.index(b"\n") + 1)
    variants = {
        "not gzip": (text, "not gzip"),  # a plain CSV under a .gz name
        "truncated": (orig[: len(orig) // 2], "unreadable"),
        "empty": (b"", "empty"),
        "latin-1": (
            gzip.compress(text[:first_row_end] + "\nx\u00e9,1".encode("latin-1") + text[first_row_end:]),
            "UTF-8",
        ),
    }
    for name, (data, words) in variants.items():
        meta.write_bytes(data)
        with pytest.raises(SourceLayoutError) as err:
            discover(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
        msg = str(err.value)
        assert meta.name in msg and words in msg and "\n" not in msg, (name, msg)
    meta.write_bytes(orig)


def test_conflicting_duplicate_metadata_rows_are_quarantined_not_first_wins(mimic_root, tmp_path):
    import gzip

    import polars as pl

    from tasks.ingest import run_ingest

    meta_path = mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"
    meta = pl.read_csv(gzip.decompress(meta_path.read_bytes()), infer_schema=False)
    frontal = meta.filter(pl.col("ViewPosition").is_in(["PA", "AP"]))
    clash = frontal.head(1).with_columns(pl.lit("LATERAL").alias("ViewPosition"))  # same dicom_id, other view
    same = frontal.slice(1, 1)  # an exact duplicate row is harmless
    meta_path.write_bytes(gzip.compress(pl.concat([meta, clash, same]).write_csv().encode()))
    summary = run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    _reconciles(summary)
    m = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    dicom_id = clash["dicom_id"][0]
    assert dicom_id not in m["image_id"].to_list()
    assert q.filter(pl.col("image_key").str.contains(dicom_id))["reason"].str.contains("conflicting").all()
    assert same["dicom_id"][0] in m["image_id"].to_list()


def test_ragged_metadata_row_is_quarantined_not_filtered_as_lateral(mimic_root, tmp_path):
    import gzip

    import polars as pl

    from tasks.ingest import run_ingest

    meta_path = mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"
    lines = gzip.decompress(meta_path.read_bytes()).decode().splitlines()
    header = lines[0].split(",")
    view_at = header.index("ViewPosition")
    i, line = next((i, ln) for i, ln in enumerate(lines[1:], 1) if ln.split(",")[view_at] in ("PA", "AP"))
    lines[i] = ",".join(line.split(",")[: view_at - 1])  # cut short before the view: a ragged row
    meta_path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    summary = run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    _reconciles(summary)
    dicom_id = line.split(",")[header.index("dicom_id")]
    q = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert q.filter(pl.col("image_key").str.contains(dicom_id))["reason"].str.contains("ragged").all()
    assert q.filter(pl.col("image_key").str.contains(dicom_id)).height == 1


def test_ingest_file_system_error_an_adapter_did_not_expect_is_one_line_naming_the_path(
    mimic_root, tmp_path, monkeypatch
):
    import tasks.ingest as ingest
    from tasks.sources import get_adapter
    from tasks.sources.base import SourceLayoutError

    real = get_adapter("mimic-cxr")

    class Unreadable:  # an adapter walking a folder it may not list
        name, may_leave_premises, licence = real.name, real.may_leave_premises, real.licence
        check = staticmethod(real.check)

        @staticmethod
        def discover(cfg):
            raise PermissionError(13, "Permission denied", str(mimic_root / "files" / "p10"))

    monkeypatch.setattr(ingest, "get_adapter", lambda name: Unreadable)
    with pytest.raises(SourceLayoutError) as err:
        ingest.run_ingest(_ingest_cfg("mimic-cxr", mimic_root, tmp_path / "out"))
    assert (
        "Permission denied" in str(err.value) and "files/p10" in str(err.value) and "\n" not in str(err.value)
    )
