"""Option types shared by the commands: fixed choices shown in --help (Enums), and the source names; how a
command runs a flow (run_flow)."""

from __future__ import annotations

import typing
from enum import StrEnum

from schemas.config import ImageConfig
from schemas.llm import Backend as _Backend
from schemas.llm import OperationName
from schemas.train import TrainConfig

T = typing.TypeVar("T")


def literal_choices(name: str, literal) -> type[StrEnum]:
    """An option's choices generated from the schema's Literal, so --help and the schema cannot drift."""
    return StrEnum(name, {str(v).replace("-", "_"): str(v) for v in typing.get_args(literal)})


def default(model, field: str):
    """An option's default read from the schema (the one place it is written)."""
    return model.model_fields[field].default


Resize = literal_choices("Resize", ImageConfig.model_fields["resize"].annotation)
ImageFormat = literal_choices("ImageFormat", ImageConfig.model_fields["format"].annotation)
Backend = literal_choices("Backend", _Backend)
Operation = literal_choices("Operation", OperationName)
Preset = literal_choices("Preset", TrainConfig.model_fields["preset"].annotation)
IMAGE_SIZE = default(ImageConfig, "size")  # 518: LLaVA-Rad's side, written once in schemas/config.py


def given(**options) -> dict:
    """The options the user gave (None: not given), so an unset option takes the schema's default."""
    return {k: v for k, v in options.items() if v is not None}


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


Stage = StrEnum("Stage", {"one": "1", "two": "2", "both": "both"})  # schemas/train.py STAGE_CHOICES


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


def run_flow(flow: typing.Callable[..., T], /, *args, **kwargs) -> T:
    """flow(*args, **kwargs), a flow or a function that starts one, run in this process as every command runs
    one: without flow-run heartbeats (flows/runners.py cli_run_settings: up to 1 s per flow run). Prefect is
    imported here, when a command runs a flow, not at the CLI's start-up."""
    from flows.runners import cli_run_settings

    with cli_run_settings():
        return flow(*args, **kwargs)
