"""A hospital's own archive over DICOMweb: QIDO-RS search + WADO-RS retrieve (dicomweb-client), reports
from an export keyed by accession number. Real PHI arrives here, so this adapter is where it stops.

Settings: `<root>/dicomweb.json` (url, reports, modalities, body_part, date_from, date_to: YYYYMMDD), each
overridable by the ingest options. Secrets never travel in options (they are flow parameters, stored in
Prefect's database): the salt comes from env CXRFLOW_PHI_SALT or a Prefect Secret (tasks.phi.resolve_salt) and
the adapter refuses to run without one; server credentials come from env CXRFLOW_DICOMWEB_USER and
CXRFLOW_DICOMWEB_PASSWORD (or the Prefect Secret block named by options["password_secret"]), and a url carrying
user:password@ is refused without being echoed.

PHI policy:
- ids: subject/study/image ids are HMAC-SHA256 pseudonyms of PatientID / StudyInstanceUID / SOPInstanceUID.
  Names, birth dates, accession numbers, institution names and UIDs never reach a Candidate or a Drop.
- images: each retrieved instance is rewritten by tasks.phi.strip_dataset (allow-list of pixel attributes,
  keyed-hash UIDs) BEFORE it touches disk, into `<out>/cache/dicomweb/<study>/<image>.dcm`. The cache
  therefore holds no PHI and is reused on the next run (only the header metadata is fetched again, to scrub
  the report). Raw retrieved bytes are never written anywhere.
- reports: scrubbed by tasks.phi.scrub_report with the names/ids/places of the study's own header.
- logs: counts and pseudonyms only.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import polars as pl
from pydicom.dataset import Dataset

from cxrio import atomic_path, clean_stale_temps
from schemas.config import IngestConfig
from schemas.labels import CHEXPERT_LABELS
from schemas.safe_load import load_json_text
from tasks.images import ALLOW_BURNED_IN, burned_in_reason
from tasks.phi import (
    PhiConfigError,
    context_from_dataset,
    pseudonym,
    resolve_salt,
    scrub_report,
    strip_dataset,
)
from tasks.secrets import has_userinfo, redact_url
from tasks.sources.base import (
    BaseAdapter,
    Candidate,
    Discovery,
    Drop,
    SourceLayoutError,
    hash_split,
    make_key,
    normalize_view,
)

log = logging.getLogger(__name__)

# DICOM UIDs (a root digit then 3+ dotted numbers) identify a hospital's studies and patients' images.
_UID = re.compile(r"(?<![\w.])[0-2](?:\.\d+){3,}(?![\w.])")


class _RedactUids(logging.Filter):
    """dicomweb-client logs every requested study/series/instance UID at INFO (and urllib3 each URL at
    DEBUG): replace them before any handler sees the record. Filters on a parent logger do not apply to
    its children's records, so this sits on the loggers that emit."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _UID.sub("<uid>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


for _name in ("dicomweb_client.web", "dicomweb_client.session_utils", "urllib3.connectionpool"):
    if not any(isinstance(f, _RedactUids) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_RedactUids())

DESCRIPTOR = "dicomweb.json"
USER_ENV, PASSWORD_ENV = "CXRFLOW_DICOMWEB_USER", "CXRFLOW_DICOMWEB_PASSWORD"
SETTINGS = ("url", "reports", "modalities", "body_part", "date_from", "date_to", "page_size", "timeout_s")
ACCESSION_COLUMNS = ("AccessionNumber", "accession_number", "Accession Number", "accession")
TEXT_COLUMNS = ("ReportText", "report_text", "Report", "report", "text")
CACHE_DIR = Path("cache") / "dicomweb"
_PIXEL_TAG = "7FE00010"


def settings(root: Path, options: dict | None = None) -> dict[str, Any]:
    root = Path(root)
    found: dict[str, Any] = {
        "modalities": ["DX", "CR"],
        "body_part": "CHEST",
        "page_size": 100,
        "timeout_s": 30,
    }
    if (root / DESCRIPTOR).is_file():
        try:
            described = load_json_text((root / DESCRIPTOR).read_text())
        except ValueError as exc:  # not JSON, or nested too deep
            raise SourceLayoutError(f"{root / DESCRIPTOR} is not usable JSON: {exc}") from None
        if not isinstance(described, dict):
            raise SourceLayoutError(f"{root / DESCRIPTOR} must hold one JSON object of settings")
        found.update(described)
    found.update({k: v for k, v in (options or {}).items() if k in SETTINGS})
    if isinstance(found["modalities"], str):
        found["modalities"] = [m.strip() for m in found["modalities"].split(",") if m.strip()]
    for name, kind in (("page_size", int), ("timeout_s", float)):  # a wrong one crashed a request, later
        try:
            value = kind(found[name])
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise SourceLayoutError(f"DICOMweb: {name} must be a positive number (got {found[name]!r})")
        found[name] = value
    return found


def load_reports(path: Path) -> dict[str, str]:
    """Report export (CSV or JSON: a list of records, or an {accession: text} object) -> {accession: text}."""
    if not path.is_file():
        raise SourceLayoutError(f"report export not found: {path}")
    if path.suffix.lower() == ".json":
        data = load_json_text(path.read_text())
        if isinstance(data, dict):
            return {str(k).strip(): str(v) for k, v in data.items() if v}
        if not data:
            return {}
        df = pl.DataFrame(data).cast(pl.Utf8)
    else:
        df = pl.read_csv(path, infer_schema=False)
    acc = next((c for c in ACCESSION_COLUMNS if c in df.columns), None)
    text = next((c for c in TEXT_COLUMNS if c in df.columns), None)
    missing = [
        f"one of {cols}" for col, cols in ((acc, ACCESSION_COLUMNS), (text, TEXT_COLUMNS)) if col is None
    ]
    if missing:
        raise SourceLayoutError(f"{path.name}: missing column {' and '.join(missing)}")
    out: dict[str, str] = {}
    for a, t in df.select(acc, text).iter_rows():
        if a and t and t.strip():
            out[a.strip()] = t  # a later export row for the same accession (an amended report) wins
    return out


def _session(options: dict | None):
    """A requests session with HTTP basic auth from the environment (or a Prefect Secret), else None."""
    user = os.environ.get(USER_ENV)
    password = os.environ.get(PASSWORD_ENV)
    if not password and (options or {}).get("password_secret"):
        from prefect.blocks.system import Secret

        password = str(Secret.load(options["password_secret"]).get())
    if not (user or password):
        return None
    import requests

    session = requests.Session()
    session.auth = (user or "", password or "")
    return session


def _client(url: str, timeout_s: float, retry: bool = True, options: dict | None = None):
    from dicomweb_client.api import DICOMwebClient

    if has_userinfo(url):  # from dicomweb.json (options are refused earlier, by the config)
        raise SourceLayoutError(
            f"DICOMweb: the server url must not carry user:password@; set {USER_ENV} and {PASSWORD_ENV} "
            "(or options.password_secret, a Prefect Secret block)"
        )
    client = DICOMwebClient(url=url, timeout=timeout_s, session=_session(options))
    # The library's own backoff retries 429/503/504; a reachability probe must fail fast instead.
    client.set_http_retry_params(retry=retry, max_attempts=3)
    return client


def _value(item: dict, tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _paged(search, page_size: int, **kwargs) -> list[dict]:
    """QIDO results across pages (servers cap responses; limit/offset walks them)."""
    results: list[dict] = []
    while True:
        page = search(limit=page_size, offset=len(results), **kwargs)
        results.extend(page)
        if len(page) < page_size:
            return results


class DicomwebAdapter(BaseAdapter):
    name = "dicomweb"
    may_leave_premises = False  # a hospital's own patients: nothing leaves the premises
    licence = "institutional data: governed by the hospital's data-use approval"

    def check_layout(self, root: Path, options: dict | None) -> None:
        """Server reachable and report export readable. Without options and without a dicomweb.json (a
        pre-flight that has only the root), there is nothing more to check yet."""
        if options is None and not (Path(root) / DESCRIPTOR).is_file():
            return
        cfg = settings(root, options)
        if not cfg.get("url"):
            raise SourceLayoutError(
                f"DICOMweb: no server url (set 'url' in {Path(root) / DESCRIPTOR} or options)"
            )
        if not cfg.get("reports"):
            raise SourceLayoutError("DICOMweb: no report export named (set 'reports')")
        load_reports(Path(root) / cfg["reports"])
        client = _client(cfg["url"], float(cfg["timeout_s"]), retry=False, options=options)
        try:
            client.search_for_studies(limit=1)
        except Exception as exc:  # connection refused, DNS, HTTP errors: all mean "cannot start"
            raise SourceLayoutError(
                f"DICOMweb server unreachable at {redact_url(cfg['url'])}: {type(exc).__name__}"
            ) from None  # the chained error may quote the request (and its credentials)

    def discover(self, cfg: IngestConfig) -> Discovery:
        try:
            salt = resolve_salt(cfg.options)
        except PhiConfigError as exc:
            raise SourceLayoutError(f"DICOMweb: {exc}") from exc
        root = Path(cfg.root)
        s = settings(root, cfg.options)
        reports = load_reports(root / s["reports"])
        client = _client(s["url"], float(s["timeout_s"]), options=cfg.options)
        cache = Path(cfg.out) / CACHE_DIR
        filters: dict[str, str] = {}
        if s.get("date_from") or s.get("date_to"):
            filters["StudyDate"] = f"{s.get('date_from') or ''}-{s.get('date_to') or ''}"
        out = Discovery(notes={"studies": 0, "series": 0, "cache_hits": 0, "retrieved": 0})
        studies = _paged(client.search_for_studies, int(s["page_size"]), search_filters=filters)
        out.notes["studies"] = len(studies)
        for study in studies:
            study_uid = _value(study, "0020000D")
            if not study_uid:
                continue
            for series in self._series(client, study_uid, s):
                out.notes["series"] += 1
                self._series_instances(client, study_uid, series, s, salt, reports, cache, cfg, out)
        log.info(
            "dicomweb discover: %d studies, %d series, %d candidates, %d filtered, %d quarantined, %d cached",
            out.notes["studies"], out.notes["series"], len(out.candidates), len(out.filtered),
            len(out.quarantined), out.notes["cache_hits"],
        )  # fmt: skip
        return out

    def _series(self, client, study_uid: str, s: dict) -> list[dict]:
        found: dict[str, dict] = {}
        for modality in s["modalities"] or [None]:
            filters = {
                k: v for k, v in (("Modality", modality), ("BodyPartExamined", s.get("body_part"))) if v
            }
            for series in _paged(
                client.search_for_series,
                int(s["page_size"]),
                study_instance_uid=study_uid,
                search_filters=filters,
            ):
                uid = _value(series, "0020000E")
                if uid:
                    found.setdefault(uid, series)
        return list(found.values())

    def _series_instances(
        self, client, study_uid, series, s, salt, reports, cache, cfg, out: Discovery
    ) -> None:
        series_uid = _value(series, "0020000E")
        instances = _paged(
            client.search_for_instances, int(s["page_size"]), study_instance_uid=study_uid,
            series_instance_uid=series_uid,
        )  # fmt: skip
        for inst in instances:
            sop_uid = _value(inst, "00080018")
            if not sop_uid:
                continue
            study_p = pseudonym(salt, "study", study_uid)
            image_p = pseudonym(salt, "image", sop_uid)
            rel = f"dicomweb/{study_p}/{image_p}.dcm"
            key = make_key(self.name, image_p)
            target = cache / study_p / f"{image_p}.dcm"
            try:
                header = self._header(client, study_uid, series_uid, sop_uid, target, salt, out)
            except Exception as exc:  # a failed retrieve or an undecodable part: quarantine, never crash
                out.quarantined.append(
                    Drop(self.name, rel, "retrieve", f"WADO-RS retrieve failed: {type(exc).__name__}", key)
                )
                continue
            reason = self._filter_reason(header, s, cfg)
            if reason:
                self.filter(out, rel, reason, key)
                continue
            burned = None if cfg.options.get(ALLOW_BURNED_IN) else burned_in_reason(header)
            if burned:  # judged on the full header (the cache keeps BurnedInAnnotation too, for decode)
                self.quarantine(out, rel, burned, key)
                continue
            accession = str(header.get("AccessionNumber") or "").strip()
            text = reports.get(accession) if accession else None
            if not text:
                why = (
                    "study has no accession number"
                    if not accession
                    else "no report in the export for this study"
                )
                self.quarantine(out, rel, why, key)
                continue
            subject_p = pseudonym(salt, "patient", str(header.get("PatientID") or study_uid))
            out.candidates.append(
                Candidate(
                    source=self.name,
                    path=target,
                    rel_path=rel,
                    image_id=image_p,
                    subject_id=subject_p,
                    study_id=study_p,
                    split=hash_split(subject_p, cfg.split_ratios),
                    kind="dicom",
                    view=normalize_view(header.get("ViewPosition")),
                    labels={name: None for name in CHEXPERT_LABELS},
                    report_text=scrub_report(text, context_from_dataset(header)),
                    report_origin="report",
                )
            )

    def _header(
        self, client, study_uid, series_uid, sop_uid, target: Path, salt: str, out: Discovery
    ) -> Dataset:
        """The instance's full header (PHI, kept in memory only); pixels go to the PHI-stripped cache."""
        if target.is_file():
            meta = client.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
            meta.pop(_PIXEL_TAG, None)
            out.notes["cache_hits"] += 1
            return Dataset.from_json(meta)
        ds = client.retrieve_instance(
            study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
        )  # "*": the stored transfer syntax, no server-side transcoding
        stripped = strip_dataset(ds, salt)
        clean_stale_temps(target.parent)  # what a killed retrieve left here (a few files: one study's images)
        with atomic_path(target) as tmp:
            stripped.save_as(tmp, enforce_file_format=True)
        out.notes["retrieved"] += 1
        return ds

    @staticmethod
    def _filter_reason(ds: Dataset, s: dict, cfg: IngestConfig) -> str | None:
        """Client-side re-check of the search filters (a server may ignore some); the view policy is the
        engine's (tasks/sources/base.py `view_filter`)."""
        modality = str(ds.get("Modality") or "")
        if s["modalities"] and modality not in s["modalities"]:
            return f"modality {modality or 'missing'} not in {','.join(s['modalities'])}"
        body = str(ds.get("BodyPartExamined") or "")
        if s.get("body_part") and body.upper() != str(s["body_part"]).upper():
            return f"body part {body or 'missing'} is not {s['body_part']}"
        date = str(ds.get("StudyDate") or "")
        if (s.get("date_from") and date < str(s["date_from"])) or (
            s.get("date_to") and date > str(s["date_to"])
        ):
            return "study date outside the requested range"  # the date itself is PHI: not in the reason
        return None


ADAPTER = DicomwebAdapter()
