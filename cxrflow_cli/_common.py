"""Option types shared by the commands: fixed choices shown in --help (Enums), and the source names."""

from __future__ import annotations

from enum import StrEnum


class Resize(StrEnum):
    crop = "crop"
    pad = "pad"


class ImageFormat(StrEnum):
    jpeg = "jpeg"
    png = "png"


class Backend(StrEnum):
    rules = "rules"
    openai = "openai"
    azure = "azure"


class JudgeBackend(StrEnum):
    rules = "rules"
    openai = "openai"
    azure = "azure"
    openai_compatible = "openai-compatible"


class Protocol(StrEnum):  # tasks.evaluate.chexprompt.PROTOCOLS
    json = "json"
    original = "original"
    fewshot_own = "fewshot-own"


class BootstrapScheme(StrEnum):  # tasks.evaluate.resampling.SCHEMES
    cxrflow = "cxrflow"
    reference = "reference"


class PairBy(StrEnum):
    id = "id"
    study = "study"


class FixtureSize(StrEnum):
    small = "small"
    full = "full"


class Operation(StrEnum):
    structure = "structure"
    translate = "translate"
    synthesize = "synthesize"


class Preset(StrEnum):
    tiny = "tiny"
    llava_rad = "llava-rad"


class Stage(StrEnum):
    one = "1"
    two = "2"
    both = "both"


# Listed for --help without importing the adapters (that imports polars/pydicom); the registry in
# tasks/sources is the authority, and preflight rejects an unknown name with a suggestion.
SOURCE_HELP = (
    "source adapter: mimic-cxr, chexpert, chexpert-plus, padchest, chestxray14, brax, vindr-cxr, "
    "candid-ptx, openi, dicomweb"
)


def value(choice):
    """An Enum option's string (None passes through)."""
    return None if choice is None else getattr(choice, "value", choice)


def out_folder(out):
    """Option callback: an output folder, checked as the arguments are parsed (a file there was a traceback
    after the writer started)."""
    if out is not None:
        from tasks.preflight import check_out_dir

        check_out_dir(out)
    return out


def load_yaml_mapping(path, flag: str) -> dict:
    """A YAML file holding a mapping (schemas.pipeline.load_yaml), or a one-line UserError naming the flag."""
    from schemas.errors import UserError
    from schemas.pipeline import load_yaml

    try:
        return load_yaml(path)
    except UserError as e:
        raise UserError(f"{flag} {e.message}", e.hint) from None
