"""PHI protections for data that arrive un-de-identified (a hospital's own archive).

Three tools, used by the DICOMweb source before anything is written or logged:
- `pseudonym`: keyed, salted hash (HMAC-SHA256) of an identifier. The salt is a secret: the same salt gives
  the same ids across runs (so re-ingests join), and without it ids cannot be linked back to patients.
- `scrub_report`: removes the names, ids and institution of the study's own DICOM header (each part of
  compound names), then everything the allow-list engine (tasks/phi_engine.py) does not know to be safe: names,
  dates, phones, e-mail addresses, URLs, street addresses, ids and ages of 90+ in any shape, writing `___` as
  MIMIC-CXR does.
- `strip_dataset`: copies only an allow-list of pixel/geometry attributes into a new dataset with
  pseudonymous UIDs. An allow-list, not a deny-list, because private tags and free-text attributes can
  carry PHI that no deny-list anticipates.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset

from tasks.phi_engine import PARTICLES, REDACTED, scrub_text

SALT_ENV = "CXRFLOW_PHI_SALT"
MIN_SALT_CHARS = 16


class PhiConfigError(ValueError):
    """PHI protection cannot be guaranteed with this configuration (e.g. no salt)."""


def resolve_salt(options: dict) -> str:
    """Salt from env CXRFLOW_PHI_SALT, else the Prefect Secret block named by options["salt_secret"]. Refuses
    to run without one (an unkeyed hash of an MRN is reversible by enumeration), and refuses options["salt"]:
    options are flow parameters, stored in plaintext in Prefect's database."""
    if options.get("salt"):
        raise PhiConfigError(
            f"options['salt'] is refused (options are stored with the run's parameters): set env {SALT_ENV} or "
            "options['salt_secret'] (a Prefect Secret block name)"
        )
    salt = os.environ.get(SALT_ENV)
    if not salt and options.get("salt_secret"):
        from prefect.blocks.system import Secret

        salt = Secret.load(options["salt_secret"]).get()
    if not salt:
        raise PhiConfigError(
            f"no pseudonymisation salt: set env {SALT_ENV} or options['salt_secret'] (a Prefect Secret block name)"
        )
    if len(str(salt)) < MIN_SALT_CHARS:
        raise PhiConfigError(f"pseudonymisation salt too short (< {MIN_SALT_CHARS} characters)")
    return str(salt)


def pseudonym(salt: str, kind: str, value: str, length: int = 20) -> str:
    """Stable pseudonymous id for `value` of a given kind (patient/study/image); hex, dot-free."""
    mac = hmac.new(salt.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return mac[:length]


def pseudonymous_uid(salt: str, kind: str, value: str) -> str:
    """A valid DICOM UID (2.25 + integer) derived from the keyed hash, for the PHI-stripped cache files."""
    return "2.25." + str(int(pseudonym(salt, kind, value, 32), 16))


# ------------------------------------------------------------------------------------------------ text

_NAME_KEYWORDS = (
    "PatientName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "PatientMotherBirthName",
    "OtherPatientNames",
)
_ID_KEYWORDS = ("AccessionNumber", "PatientID", "OtherPatientIDs", "StudyID", "IssuerOfPatientID")
_PLACE_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName")


@dataclass
class PhiContext:
    """Strings known to be PHI for one study (from its DICOM header)."""

    names: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)
    places: set[str] = field(default_factory=set)

    def merge(self, other: PhiContext) -> PhiContext:
        return PhiContext(
            self.names | other.names, self.identifiers | other.identifiers, self.places | other.places
        )


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) or getattr(value, "is_multi", False) else [value]
    try:
        return [str(v) for v in items if str(v).strip()]
    except TypeError:
        return [str(value)]


def context_from_dataset(ds: Dataset) -> PhiContext:
    ctx = PhiContext()
    for kw in _NAME_KEYWORDS:
        for person in _values(ds, kw):
            # DICOM PN: family^given^middle^prefix^suffix (and '=' for ideographic groups).
            # each part of a compound name too ("Garcia-Lopez" -> "Garcia", "Lopez"; "O'Brien" -> "Brien")
            # A particle inside a compound component ("de" in "de la Cruz") is redacted only with the whole
            # component: on its own it would wipe ordinary words ("de novo"). A component that is one word
            # stays, particle-like or not (Le, Do are surnames).
            components = [c.strip(". ") for c in re.split(r"[\^=]+", person)]
            parts = re.split(r"[\^=,\s]+", person) + re.split(r"[\^=,\s'-]+", person)
            particles = {
                p.lower()
                for c in components
                if len(c.split()) > 1
                for p in c.split()
                if p.lower() in PARTICLES
            }
            for part in components + parts:
                part = part.strip(". ")
                if len(part) < 2 or (part.lower() in particles and part not in components):
                    continue
                if part.upper() not in {"DR", "MR", "MRS", "MS", "MD", "PHD", "JR", "SR"}:
                    ctx.names.add(part)
    for kw in _ID_KEYWORDS:
        ctx.identifiers.update(v.strip() for v in _values(ds, kw) if len(v.strip()) >= 3)
    for kw in _PLACE_KEYWORDS:
        ctx.places.update(v.strip() for v in _values(ds, kw) if len(v.strip()) >= 3)
    return ctx


# Words of an institution name too common to redact on their own ("General", "Hospital"...).
_PLACE_WORDS = {
    "st", "saint", "general", "hospital", "medical", "center", "centre", "clinic", "university", "of", "the",
    "and", "memorial", "regional", "health", "department", "radiology", "imaging", "community", "county",
}  # fmt: skip


def _phrase(value: str) -> str:
    """A literal that tolerates punctuation/spacing differences between its words ("St." vs "St")."""
    return r"\W+".join(re.escape(w) for w in re.findall(r"\w+", value))


def _literal(values: set[str]) -> re.Pattern | None:
    alts = [_phrase(v) for v in sorted(values, key=len, reverse=True) if re.search(r"\w", v)]
    if not alts:
        return None
    return re.compile(rf"(?<!\w)(?:{'|'.join(alts)})(?!\w)", re.IGNORECASE)


def _place_words(places: set[str]) -> set[str]:
    words = {w for p in places for w in re.findall(r"\w+", p)}
    return {w for w in words if w.lower() not in _PLACE_WORDS and len(w) >= 3 and not w.isdigit()}


def scrub_report(text: str, ctx: PhiContext | None = None) -> str:
    """Replace PHI in report text with `___`: first the strings of the study's own header (exact,
    case-insensitive, each part of a compound name), then the allow-list engine (tasks/phi_engine.py), which
    keeps only clinical and common words and clinical numbers."""
    ctx = ctx or PhiContext()
    places = (_literal(ctx.places), _literal(_place_words(ctx.places)))
    for pattern in (*places, _literal(ctx.identifiers), _literal(ctx.names)):
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
    return scrub_text(text)


# ------------------------------------------------------------------------------------------------ DICOM

# What the decoder needs (pixel module, LUTs, geometry, view); nothing that names a person, place or time.
PIXEL_KEYWORDS = (
    "SOPClassUID", "Modality", "BodyPartExamined", "ViewPosition", "PatientOrientation", "ImageLaterality",
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames", "PixelSpacing",
    "ImagerPixelSpacing", "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "VOILUTSequence", "ModalityLUTSequence", "PresentationLUTShape",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "PixelData",
    "BurnedInAnnotation",  # YES/NO, no PHI itself: decode judges the cached film by it (tasks/images.py)
)  # fmt: skip


# Sequences are rebuilt item by item from their own allow-lists: a copied sequence would bring along whatever
# an item holds (PatientName, PatientID, a LUTExplanation naming the patient have all been seen in the wild).
SEQUENCE_ITEM_KEYWORDS: dict[str, tuple[str, ...]] = {
    "VOILUTSequence": ("LUTDescriptor", "LUTData"),
    "ModalityLUTSequence": ("LUTDescriptor", "ModalityLUTType", "LUTData"),
}


def _copy_allowed(src: Dataset, keywords: tuple[str, ...]) -> Dataset:
    """A new dataset with only `keywords` of `src`; sequences recursively through SEQUENCE_ITEM_KEYWORDS."""
    out = Dataset()
    for kw in keywords:
        if kw not in src:
            continue
        element = src[kw]
        if element.VR == "SQ":
            allowed = SEQUENCE_ITEM_KEYWORDS.get(kw)
            if allowed is None:
                continue  # a sequence with no item allow-list is dropped whole
            from pydicom.sequence import Sequence

            setattr(out, kw, Sequence([_copy_allowed(item, allowed) for item in element.value]))
        else:
            out[kw] = element
    return out


def strip_dataset(ds: Dataset, salt: str) -> Dataset:
    """A new dataset holding only PIXEL_KEYWORDS (sequences filtered item by item), with UIDs replaced by
    keyed-hash UIDs."""
    out = _copy_allowed(ds, PIXEL_KEYWORDS)
    out.SOPInstanceUID = pseudonymous_uid(salt, "image", str(ds.SOPInstanceUID))
    out.StudyInstanceUID = pseudonymous_uid(salt, "study", str(ds.StudyInstanceUID))
    out.SeriesInstanceUID = pseudonymous_uid(salt, "series", str(ds.get("SeriesInstanceUID", "")))
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "cxrflow allow-list copy of pixel attributes; keyed-hash UIDs"
    meta = FileMetaDataset()
    src_meta = getattr(ds, "file_meta", None)
    if src_meta is None or "TransferSyntaxUID" not in src_meta:
        raise ValueError("retrieved instance has no transfer syntax in its file meta")
    meta.TransferSyntaxUID = src_meta.TransferSyntaxUID
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.file_meta = meta
    return out
