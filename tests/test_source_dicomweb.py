"""Hospital archive over DICOMweb against a real Orthanc on loopback, and the PHI protections.

The Orthanc tests skip locally when the Debian packages are absent but FAIL under CI=true (CI installs
`orthanc` and `orthanc-dicomweb` from .ci/apt-packages.txt).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
from pathlib import Path

import polars as pl
import pydicom
import pytest
from sources_support import assert_reconciles, config

from fixtures.hospital_archive import write_descriptor, write_hospital_archive
from fixtures.orthanc_server import OrthancServer, dicomweb_plugin, free_port, orthanc_binary
from tasks.ingest import discover as engine_discover
from tasks.phi import (
    PhiConfigError,
    PhiContext,
    context_from_dataset,
    pseudonym,
    resolve_salt,
    scrub_report,
)
from tasks.sources import get_adapter
from tasks.sources.base import SourceLayoutError

SALT = "test-salt-0123456789abcdef"
ADAPTER = get_adapter("dicomweb")


# ---------------------------------------------------------------------------------------- PHI unit tests


def test_scrub_report_removes_each_kind_of_phi():
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "NGUYEN^THI^LAN", "MRN0042", "XR-2024-0077"
    ds.InstitutionName, ds.ReferringPhysicianName = "St. Agatha Regional Medical Center", "PATEL^RAVI"
    text = (
        "Lan Nguyen, MRN 88412907, Acc XR-2024-0077, seen 2/3/2024 (DOB March 4, 1931) at St Agatha Regional "
        "Medical Center. Call Dr. Patel at 212-555-0199. 94 year old. FINDINGS: No pneumothorax. Agatha ward. "
        "Heart size 12 cm. May represent atelectasis in May."
    )
    out = scrub_report(text, context_from_dataset(ds))
    for leaked in ("Lan", "Nguyen", "88412907", "XR-2024-0077", "2/3/2024", "1931", "Agatha", "Patel",
                   "555-0199", "94 year"):  # fmt: skip
        assert leaked not in out, (leaked, out)
    # Clinical content and ordinary words survive.
    assert "FINDINGS: No pneumothorax." in out and "12 cm" in out and "May represent atelectasis" in out


def test_pseudonyms_keyed_and_salt_required(monkeypatch):
    a = pseudonym(SALT, "patient", "MRN4471923")
    assert a == pseudonym(SALT, "patient", "MRN4471923") and "." not in a and len(a) == 20
    assert a != pseudonym(SALT + "x", "patient", "MRN4471923") and a != pseudonym(SALT, "study", "MRN4471923")
    monkeypatch.delenv("CXRFLOW_PHI_SALT", raising=False)
    with pytest.raises(PhiConfigError, match="no pseudonymisation salt"):
        resolve_salt({})
    monkeypatch.setenv("CXRFLOW_PHI_SALT", "abc")
    with pytest.raises(PhiConfigError, match="too short"):
        resolve_salt({})
    monkeypatch.setenv("CXRFLOW_PHI_SALT", SALT)
    assert resolve_salt({}) == SALT
    with pytest.raises(PhiConfigError, match="refused"):  # options are flow parameters: never a secret
        resolve_salt({"salt": SALT})


def test_scrub_without_header_context_still_catches_patterns():
    out = scrub_report("Seen on 2023-11-05, phone (617) 555-0143, MRN: A1234567.", PhiContext())
    assert "2023" not in out and "555" not in out and "1234567" not in out


# ---------------------------------------------------------------------------------------- Orthanc


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if not (orthanc_binary() and dicomweb_plugin()):
        msg = "Orthanc + DICOMweb plugin not installed (apt: orthanc orthanc-dicomweb)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    root = tmp_path_factory.mktemp("hospital")
    info = write_hospital_archive(root, seed=11)
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload(info["expect"]["files"])
        write_descriptor(root, server.dicomweb_url)
        yield root, info


@pytest.fixture(autouse=True)
def _salt_env(monkeypatch):
    """The salt comes from the environment (options are stored with a run's parameters: never a secret)."""
    monkeypatch.setenv("CXRFLOW_PHI_SALT", SALT)


def _cfg(root: Path, out: Path, **options):
    return config("dicomweb", root, out, options=options)


def test_discover_filters_and_reports(archive, tmp_path, monkeypatch):
    root, info = archive
    expect = info["expect"]
    d = engine_discover(_cfg(root, tmp_path))
    # Server-side filters (date range, modality, body part) exclude 3 studies; the lateral is filtered here.
    assert d.found == expect["found"] == 4
    assert [f.reason for f in d.filtered] == ["not frontal: view LATERAL (frontal_only)"]
    assert [q.reason for q in d.quarantined] == ["no report in the export for this study"]
    assert len(d.candidates) == 2 and all(c.report_origin == "report" for c in d.candidates)
    assert len({c.subject_id for c in d.candidates}) == 1  # same patient -> same pseudonym
    assert len({c.study_id for c in d.candidates}) == 2
    assert d.notes["retrieved"] == 4 and d.notes["cache_hits"] == 0
    # Second run reuses the PHI-stripped cache: no pixel data is fetched again, same ids.
    again = engine_discover(_cfg(root, tmp_path))
    assert again.notes["cache_hits"] == 4 and again.notes["retrieved"] == 0
    assert [c.image_key for c in again.candidates] == [c.image_key for c in d.candidates]
    # A wider date range finds the 2019 study too; another salt gives other ids.
    monkeypatch.setenv("CXRFLOW_PHI_SALT", SALT[::-1])
    wide = engine_discover(_cfg(root, tmp_path / "wide", date_from="20180101"))
    assert wide.found == 5 and not {c.subject_id for c in wide.candidates} & {
        c.subject_id for c in d.candidates
    }


def test_a_retrieve_cleans_what_a_killed_one_left_in_its_study_folder(archive, tmp_path):
    """A kill mid-retrieve leaves a uniquely named temporary file beside the cached image (cxrio.atomic_path);
    the next retrieve into that study folder removes those of dead writers, so they do not pile up."""
    import subprocess
    import sys

    from cxrio import is_temp

    root, _ = archive
    engine_discover(_cfg(root, tmp_path))
    cached = sorted((tmp_path / "cache" / "dicomweb").rglob("*.dcm"))[0]
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale = cached.parent / f".{cached.name}.k2j4.tmp-{dead}"
    live = cached.parent / f".{cached.name}.p9x1.tmp-{os.getpid()}"  # a write in progress: kept
    stale.write_bytes(cached.read_bytes()[:100])
    live.write_bytes(b"")
    cached.unlink()  # the killed retrieve never renamed it in
    again = engine_discover(_cfg(root, tmp_path))
    assert again.notes["retrieved"] == 1 and cached.is_file()
    assert [p.name for p in cached.parent.iterdir() if is_temp(p)] == [live.name]


def test_refuses_without_salt_or_server_or_export(archive, tmp_path, monkeypatch):
    root, _ = archive
    monkeypatch.delenv("CXRFLOW_PHI_SALT", raising=False)
    with pytest.raises(SourceLayoutError, match="salt"):
        engine_discover(config("dicomweb", root, tmp_path))
    assert not (tmp_path / "cache").exists()  # refused before any work
    with pytest.raises(SourceLayoutError, match="unreachable"):
        ADAPTER.check(root, {"url": f"http://127.0.0.1:{free_port()}/dicom-web", "timeout_s": 2})
    with pytest.raises(SourceLayoutError, match="report export not found"):
        ADAPTER.check(root, {"reports": "missing.csv"})
    (root / "bad.csv").write_text("Accession,Body\nX,y\n")
    with pytest.raises(SourceLayoutError, match="missing column one of .*AccessionNumber"):
        ADAPTER.check(root, {"reports": "bad.csv"})
    # found in review: settings of the wrong kind crashed (ValueError, OverflowError, a list's update)
    for bad in ({"page_size": "abc"}, {"timeout_s": 1e999}, {"page_size": 0}, {"timeout_s": None}):
        with pytest.raises(SourceLayoutError, match="must be a positive number"):
            ADAPTER.check(root, bad)
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "dicomweb.json").write_text("[1, 2]")
    with pytest.raises(SourceLayoutError, match="one JSON object"):
        ADAPTER.check(tmp_path / "listed", {})


def _phi_patterns(planted: dict) -> list[re.Pattern]:
    words = planted["names"] + planted["institutions"] + planted["phones"] + planted["campaign"]
    ids = planted["birth_dates"] + planted["patient_ids"] + planted["accessions"] + planted["uids"]
    pats = [re.compile(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", re.IGNORECASE) for w in words]
    return pats + [re.compile(re.escape(i)) for i in ids]


def _leaks(text: str, patterns: list[re.Pattern]) -> list[str]:
    return [p.pattern for p in patterns if p.search(text)]


@pytest.mark.slow
def test_no_planted_phi_reaches_outputs_shards_or_logs(archive, tmp_path, caplog, capfd):
    from schemas.shards import ShardConfig, ValidateConfig
    from tasks.export_llava import export_llava
    from tasks.ingest import run_ingest
    from tasks.shard import write_shards
    from tasks.validate import assemble_samples

    root, info = archive
    patterns = _phi_patterns(info["planted"])
    out = tmp_path / "ingest"
    caplog.set_level(logging.DEBUG)
    summary = run_ingest(_cfg(root, out))
    assert_reconciles(summary)
    assert summary["kept"] == 2 and summary["found"] == 4
    samples, _ = assemble_samples(out, ValidateConfig())
    shard_dir = tmp_path / "shards"
    infos = write_shards(samples, out, shard_dir, ShardConfig())
    assert sum(i.nsamples for i in infos) == 2
    assert sum(export_llava(samples, shard_dir, data_dir=out).values()) == 2

    # Every parquet file the ingest wrote (manifest, quarantine, filtered, structured reports, ...): every value.
    parquets = sorted(out.rglob("*.parquet"))
    assert {"manifest.parquet", "quarantine.parquet", "filtered.parquet"} <= {p.name for p in parquets}
    for path in parquets:
        df = pl.read_parquet(path)
        text = "\n".join(str(v) for row in df.iter_rows() for v in row)
        assert not _leaks(text, patterns), (path.name, _leaks(text, patterns))
    # The LLaVA export (llava/train.json, ...): the text a model is trained on.
    exports = sorted((shard_dir / "llava").glob("*.json"))
    assert exports
    for path in exports:
        assert not _leaks(path.read_text(), patterns), (path.name, _leaks(path.read_text(), patterns))

    manifest = pl.read_parquet(out / "manifest.parquet")
    assert manifest["report_text"].str.contains("___", literal=True).all()  # the scrub ran
    assert manifest["findings"].str.contains("lungs are clear").all()  # clinical text kept
    # Every text file the ingest wrote (summary, sidecars, indexes).
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in {".json", ".txt", ".csv"}:
            assert not _leaks(p.read_text(errors="replace"), patterns), p
    # The cached DICOMs: only allow-listed attributes, no PHI in any element.
    cached = list((out / "cache" / "dicomweb").rglob("*.dcm"))
    assert len(cached) == 4
    for p in cached:
        ds = pydicom.dcmread(p)
        assert "PatientName" not in ds and "AccessionNumber" not in ds and "InstitutionName" not in ds
        header = "\n".join(str(el.value) for el in ds.iterall() if el.keyword != "PixelData")
        assert not _leaks(header, patterns), p
        assert ds.pixel_array.size > 0  # still decodable
    # Shards: every .json / .txt member.
    tars = sorted(shard_dir.glob("data/*.tar"))
    assert tars  # the shard layout: SHARDS/data/{split}-NNNNN-of-NNNNN.tar
    for tar_path in tars:
        with tarfile.open(tar_path) as tf:
            for member in tf.getmembers():
                if member.name.endswith((".json", ".txt")):
                    text = io.TextIOWrapper(tf.extractfile(member), encoding="utf-8").read()
                    assert not _leaks(text, patterns), (tar_path.name, member.name)
    # Logs (all loggers at DEBUG, including dicomweb-client's and urllib3's) and anything printed.
    # The hospital's UIDs too: dicomweb-client (INFO) and urllib3 (DEBUG) log them in request URLs.
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert not _leaks(text, patterns), _leaks(text, patterns)
    assert "dicomweb discover" in caplog.text  # the adapter did log (counts only)


def test_settings_from_options_only(archive, tmp_path):
    """No dicomweb.json: url and filters come from the ingest options; the engine's root-only pre-flight
    defers to discover, which checks them before any work."""
    root, info = archive
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "export.csv").write_text((root / "reports.csv").read_text())
    url = __import__("json").loads((root / "dicomweb.json").read_text())["url"]
    ADAPTER.check(bare)  # nothing to check yet: no error
    with pytest.raises(SourceLayoutError, match="no server url"):
        engine_discover(_cfg(bare, tmp_path / "o1", reports="export.csv"))
    d = engine_discover(_cfg(bare, tmp_path / "o2", url=url, reports="export.csv", date_from="20240101",
                              date_to="20241231", modalities="DX,CR"))  # fmt: skip
    assert d.found == info["expect"]["found"] and len(d.candidates) == 2


def test_no_hospital_uid_in_info_logs(archive, tmp_path, caplog):
    """dicomweb-client logs the study/series/instance UIDs it requests at INFO: they must not get through."""
    root, info = archive
    caplog.set_level(logging.INFO)
    d = engine_discover(_cfg(root, tmp_path))
    assert d.candidates and caplog.records  # it did log
    uids_only = {**dict.fromkeys(info["planted"], []), "uids": info["planted"]["uids"]}
    assert not _leaks(caplog.text, _phi_patterns(uids_only))
