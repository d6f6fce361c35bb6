"""The manifest contract: one row per kept image, plus the quarantine/filter rows that account for the rest.

Every source adapter maps onto this schema; validation, sharding, training and evaluation read it.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.labels import LABEL_COLUMNS

REPORT_SECTIONS: tuple[str, ...] = (
    "examination",
    "indication",
    "history",
    "technique",
    "comparison",
    "findings",
    "impression",
)

# The `view` column: the film's view as its release states it (AP, PA, LATERAL, LL, ...), FRONTAL where the
# release says frontal without naming AP or PA, null where it does not say. A frontal film is one whose view
# is in FRONTAL_VIEWS; a null view is not known to be frontal (docs/datasets.md, the view policy).
FRONTAL_UNSPECIFIED = "FRONTAL"
FRONTAL_VIEWS = ("AP", "PA", FRONTAL_UNSPECIFIED)

_ID_FIELDS = [
    # Unique, dot-free sample key ("<source>_<image id>"), safe as a WebDataset key.
    pa.field("image_key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("subject_id", pa.string(), nullable=False),
    pa.field("study_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("view", pa.string()),
    pa.field("orientation", pa.string()),
]

_LABEL_FIELDS = [pa.field(c, pa.int8()) for c in LABEL_COLUMNS]

_REPORT_FIELDS = [
    # Original report text, as found (de-identified sources) or after the PHI scrub (hospital archives).
    pa.field("report_text", pa.string()),
    # "report" (free text parsed), "labels" (label-only source; text comes from the synthesize step), "none".
    pa.field("report_origin", pa.string(), nullable=False),
    # How the section fields were produced ("rule-based" at ingest).
    pa.field("report_method", pa.string()),
    pa.field("has_addendum", pa.bool_()),
    # ISO 639-1 code when the report is not in English ("es" for PadChest): the structure stage translates it.
    pa.field("report_language", pa.string()),
    # The source's own labels, verbatim (PadChest Labels + Localizations, ChestX-ray14 findings, VinDr-CXR
    # consensus findings): reports synthesized by an LLM are written from these, not only the 14 CheXpert ones.
    pa.field("source_labels", pa.list_(pa.string())),
    *[pa.field(s, pa.string()) for s in REPORT_SECTIONS],
]

_IMAGE_FIELDS = [
    # Relative to the ingest output directory.
    pa.field("image_path", pa.string(), nullable=False),
    pa.field("image_format", pa.string(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("image_sha256", pa.string(), nullable=False),
]

_LINEAGE_FIELDS = [
    # Relative to the source root.
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("source_sha256", pa.string(), nullable=False),
    pa.field("decoder", pa.string(), nullable=False),
    # JSON of the preprocessing parameters that produced the image.
    pa.field("preprocess", pa.string(), nullable=False),
    pa.field("cxrflow_version", pa.string(), nullable=False),
]

MANIFEST_SCHEMA = pa.schema(_ID_FIELDS + _LABEL_FIELDS + _REPORT_FIELDS + _IMAGE_FIELDS + _LINEAGE_FIELDS)

# Rows that did not make it, with a reason a person can act on. The same shape serves the filtered list
# (policy decisions such as "not frontal") and the quarantine (defects such as "truncated DICOM").
DROP_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("image_key", pa.string()),
    ]
)


def table_from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table that must match the schema exactly (missing keys become null; extra keys are errors)."""
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"fields not in schema: {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)
