"""The `K.json` member of a shard sample: the manifest row with no nulls, so any one sample shows every type.

Readers that infer a schema from a few samples (Hugging Face `datasets`' webdataset builder reads five) take a
field that is null in all of them as type null and fail on the first sample holding a value. So absence is
written as a typed value (docs/shards.md):

- text fields (report sections, `indication`, `view`, ...): `""` for absent;
- `has_addendum`: false when the report had none or there was no report to parse;
- `source_labels`: one string, the labels joined by `|` (ChestX-ray14's own separator), `""` for none;
- the 14 CheXpert labels: `chexpert_labels`, {observation: "positive" | "negative" | "uncertain" |
  "unmentioned"} (1 / 0 / -1 / not mentioned; the LLaVA-Rad release writes 1.0 / 0.0 / -1.0 / NaN);
- `absent`: the names of the fields that were null, joined by `|` (`""` for none), so a text a source wrote
  as `""` stays apart from an absent one (a released record's empty `reason` is an indication to the
  LLaVA-Rad prompt, a missing one is not), as do `has_addendum` unknown vs false and `source_labels` none vs `[]`.

`decode_sample_json` gives back the manifest's view exactly (None for absent, `label_*` = 1 / 0 / -1 / None).
A source label that is empty or holds `|` cannot be joined back apart: validation quarantines such a row
(tasks/validate.py), and encoding refuses it.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.manifest import MANIFEST_SCHEMA

LABEL_STATES: dict[int | None, str] = {1: "positive", 0: "negative", -1: "uncertain", None: "unmentioned"}
LABEL_VALUES: dict[str, int | None] = {v: k for k, v in LABEL_STATES.items()}
SOURCE_LABEL_SEP = "|"
ABSENT = "absent"  # field names (no `|` in any) of the nulls the encoding replaced
_LABEL_COLUMNS = {label_column(n): n for n in CHEXPERT_LABELS}
# Text beside the manifest fields: absent is "" as well.
_EXTRA_TEXT = ("indication",)


def _absent(name: str, typ: pa.DataType):
    if pa.types.is_string(typ):
        return ""
    if pa.types.is_boolean(typ):
        return False
    # Every other manifest type is non-nullable today; a new nullable one needs its own typed absence here.
    raise ValueError(f"manifest field {name!r} ({typ}) is null and has no null-free encoding in K.json")


def encode_sample_json(row: dict, targets: list[dict], indication: str | None, primary_method: str) -> dict:
    """K.json for one validated manifest row (see the module doc); raises on a value it cannot encode."""
    meta: dict = {}
    absent: list[str] = []
    for f in MANIFEST_SCHEMA:
        if f.name in _LABEL_COLUMNS:
            continue
        v = row.get(f.name)
        if v is None:
            absent.append(f.name)
        if pa.types.is_list(f.type):  # source_labels
            items = [str(x) for x in v or []]
            if not source_labels_joinable(items):
                raise ValueError(
                    f"{row.get('image_key')}: a source label is empty or holds {SOURCE_LABEL_SEP!r}: {items}"
                )
            v = SOURCE_LABEL_SEP.join(items)
        elif v is None:
            v = _absent(f.name, f.type)
        meta[f.name] = v
    labels = {}
    for col, name in _LABEL_COLUMNS.items():
        v = row.get(col)
        labels[name] = LABEL_STATES[None if v is None else int(v)]
    meta["chexpert_labels"] = labels
    meta["targets"] = targets
    # `indication` here is the validated one (indication_text), written over the manifest's section of that name
    absent = [n for n in absent if n not in _EXTRA_TEXT] + [n for n in _EXTRA_TEXT if indication is None]
    meta["indication"] = "" if indication is None else indication
    meta["primary_method"] = primary_method
    meta[ABSENT] = SOURCE_LABEL_SEP.join(sorted(absent))
    return meta


def source_labels_joinable(items: list[str]) -> bool:
    """Whether the labels come back apart from their `|`-joined string (none empty, none holding `|`)."""
    return all(x and SOURCE_LABEL_SEP not in x for x in items)


def decode_sample_json(meta: dict) -> dict:
    """The manifest's view of a K.json: None where `absent` names the field, `label_*` columns, `source_labels`
    a list. A K.json written before `absent` (layout 4) reads "" as absent; one written before the null-free
    layout (nulls, `label_*` keys) passes through unchanged."""
    out = dict(meta)
    labels = out.pop("chexpert_labels", None)
    if isinstance(labels, dict):
        for col, name in _LABEL_COLUMNS.items():
            out[col] = LABEL_VALUES[labels.get(name, LABEL_STATES[None])]
    if isinstance(out.get("source_labels"), str):
        out["source_labels"] = out["source_labels"].split(SOURCE_LABEL_SEP) if out["source_labels"] else None
    absent = out.pop(ABSENT, None)
    if isinstance(absent, str):
        names = set(absent.split(SOURCE_LABEL_SEP)) if absent else set()
        if "source_labels" not in names and out.get("source_labels") is None and "source_labels" in meta:
            out["source_labels"] = []
        for name in names:
            out[name] = None
        return out
    for f in MANIFEST_SCHEMA:  # layout 4 (no `absent`): "" was absent
        if pa.types.is_string(f.type) and out.get(f.name) == "":
            out[f.name] = None
    for name in _EXTRA_TEXT:
        if out.get(name) == "":
            out[name] = None
    return out
