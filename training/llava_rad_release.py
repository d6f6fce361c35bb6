"""Convert the released LLaVA-Rad checkpoint (microsoft/llava-rad) into a cxrflow run dir of the llava-rad preset.

The release is what LLaVA-Rad's training script saves after LoRA fine-tuning (llava/train/train.py) plus the
BiomedCLIP-CXR encoder, on top of Vicuna-7B v1.5 (not part of the release):
- `adapter_config.json` + `adapter_model.safetensors|.bin`: the PEFT LoRA adapter, keys
  `base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>.weight`;
- `non_lora_trainables.bin`: the other trainable weights, i.e. the mlp2x_gelu projector,
  `base_model.model.model.mm_projector.<0|2>.<weight|bias>` (Linear, GELU, Linear);
- `config.json`: the LLaVA config (mm_projector_type, mm_vision_select_layer, ...);
- `biomedclipcxr_518.json` + `biomedclipcxr_518_checkpoint.pt`: the open_clip model config and the open_clip
  training checkpoint (`{"state_dict": {"module.visual.trunk.*", "module.text.*", ...}, ...}`).

The run dir holds what `ReportGenerator.from_run` (cxrflow generate / evaluate) reads: config.json (preset
llava-rad, lm_path = the Vicuna dir), vision/ (an open_clip local dir), tokenizer/ (the LM's, with <image>),
final/stage1-projector.safetensors and final/stage2-trainable.safetensors (LoRA + projector under the names
of the PEFT wrapping the preset builds), and import.json (sources, hashes, key counts). Every expected file is
checked and any key left unmatched on either side is an error naming it (ReleaseFormatError, one line).
See docs/metrics.md ("Reference model").
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA = "non_lora_trainables.bin"
LLAVA_CONFIG = "config.json"
VISION_CONFIG = "biomedclipcxr_518.json"
VISION_CHECKPOINT = "biomedclipcxr_518_checkpoint.pt"

_LORA_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$"
)
_PROJ_KEY = re.compile(r"^model\.mm_projector\.(0|2)\.(weight|bias)$")
_PROJ_NAME = {"0": "linear_1", "2": "linear_2"}
# What the release's config.json must say for the preset's architecture to be the same model.
_LLAVA_EXPECT = {
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": False,
    "mm_use_im_patch_token": False,
}


class ReleaseFormatError(ValueError):
    """The directory is not the LLaVA-Rad release layout (or not the Vicuna it goes on); one-line message."""


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with non-tensor objects, or a truncated file
        raise ReleaseFormatError(
            f"{path.name}: cannot be read as a tensor file ({type(e).__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise ReleaseFormatError(f"{path.name}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _load_adapter(src: Path) -> tuple[dict[str, torch.Tensor], str]:
    for name in ADAPTER_WEIGHTS:
        if (src / name).is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(src / name)), name
            return _load_bin(src / name), name
    raise ReleaseFormatError(f"{src}: no LoRA adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReleaseFormatError(f"{path.name}: not readable JSON ({type(e).__name__})") from None


def check_layout(src: Path, lm_path: Path) -> None:
    if not src.is_dir():
        raise ReleaseFormatError(f"{src} is not a directory")
    missing = [
        n
        for n in (ADAPTER_CONFIG, NON_LORA, LLAVA_CONFIG, VISION_CONFIG, VISION_CHECKPOINT)
        if not (src / n).is_file()
    ]
    if not any((src / n).is_file() for n in ADAPTER_WEIGHTS):
        missing.append(" or ".join(ADAPTER_WEIGHTS))
    if missing:
        raise ReleaseFormatError(f"{src} lacks release file(s): {', '.join(missing)}")
    from training.text import lm_dir_problem

    problem = lm_dir_problem(Path(lm_path))  # the tokenizer too: before anything is written
    if problem:
        raise ReleaseFormatError(f"--lm-path {problem}")


def lora_settings(adapter_cfg: dict[str, Any]) -> dict[str, Any]:
    """The adapter's LoRA hyperparameters, refusing variants the preset's PEFT wrapping would not reproduce."""
    if str(adapter_cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ReleaseFormatError(f"{ADAPTER_CONFIG}: peft_type {adapter_cfg.get('peft_type')!r} is not LORA")
    for key, allowed in (
        ("bias", "none"),
        ("use_rslora", False),
        ("use_dora", False),
        ("fan_in_fan_out", False),
    ):
        if adapter_cfg.get(key, allowed) != allowed:
            raise ReleaseFormatError(
                f"{ADAPTER_CONFIG}: {key}={adapter_cfg[key]!r} is not supported (need {allowed!r})"
            )
    for key in ("rank_pattern", "alpha_pattern"):  # the preset gives every module one r and one alpha
        if adapter_cfg.get(key):
            raise ReleaseFormatError(
                f"{ADAPTER_CONFIG}: per-module {key} is not supported ({adapter_cfg[key]!r})"
            )
    if adapter_cfg.get("modules_to_save"):
        raise ReleaseFormatError(
            f"{ADAPTER_CONFIG}: modules_to_save={adapter_cfg['modules_to_save']!r} is not supported"
        )
    targets = adapter_cfg.get("target_modules")
    if not isinstance(targets, list) or not targets:
        raise ReleaseFormatError(f"{ADAPTER_CONFIG}: target_modules must be a list of module names")
    try:
        return {
            "lora_r": int(adapter_cfg["r"]),
            "lora_alpha": int(adapter_cfg["lora_alpha"]),
            "lora_dropout": float(adapter_cfg.get("lora_dropout", 0.0)),
            "lora_targets": sorted(targets),
        }
    except KeyError as e:
        raise ReleaseFormatError(f"{ADAPTER_CONFIG}: missing {e.args[0]!r}") from None


def open_clip_model_cfg(raw: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config (the release file is a bare model config; a local-dir file wraps it)."""
    cfg = json.loads(json.dumps(raw.get("model_cfg", raw)))
    if "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ReleaseFormatError(f"{VISION_CONFIG}: not an open_clip model config (no vision_cfg/text_cfg)")
    text = cfg["text_cfg"]
    # Older open_clip names (LLaVA-Rad's encoder README documents the same renaming).
    for old, new in (("proj", "hf_proj_type"), ("pooler_type", "hf_pooler_type")):
        if old in text and new not in text:
            text[new] = text.pop(old)
    if text.get("hf_pooler_type") == "cls_pooler":
        text["hf_pooler_type"] = "cls_last_hidden_state_pooler"
    # Weights come from the checkpoint: never let open_clip/timm/transformers fetch pretrained ones.
    cfg["vision_cfg"]["timm_model_pretrained"] = False
    if text.get("hf_model_name"):
        text["hf_model_pretrained"] = False
    return cfg


def vision_state(ck: Any) -> dict[str, torch.Tensor]:
    """open_clip training checkpoint -> CLIP state dict: `module.` stripped, and the text pooler dropped, which
    current open_clip does not build for the cls_last_hidden_state pooler (LLaVA-Rad drops it the same way)."""
    state = ck.get("state_dict", ck) if isinstance(ck, dict) else None
    if not isinstance(state, dict) or not state:
        raise ReleaseFormatError(f"{VISION_CHECKPOINT}: no state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith("visual.trunk.") for k in state):
        raise ReleaseFormatError(
            f"{VISION_CHECKPOINT}: no visual.trunk.* weights (not a BiomedCLIP checkpoint)"
        )
    return {k: v for k, v in state.items() if not k.startswith("text.transformer.pooler.")}


def release_projector(non_lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`non_lora_trainables.bin` -> projector weights keyed `linear_1.weight` ... (the preset's projector)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in non_lora.items():
        k = key.removeprefix("base_model.")  # the same normalisation as LLaVA's model builder
        if k.startswith("model.model."):
            k = k.removeprefix("model.")
        m = _PROJ_KEY.match(k)
        if m is None:
            raise ReleaseFormatError(
                f"{NON_LORA}: unexpected key {key} (only the mm_projector.0/.2 weights map)"
            )
        out[f"{_PROJ_NAME[m.group(1)]}.{m.group(2)}"] = t
    need = {f"{n}.{p}" for n in _PROJ_NAME.values() for p in ("weight", "bias")}
    if need - out.keys():
        raise ReleaseFormatError(f"{NON_LORA}: missing projector weight(s) {sorted(need - out.keys())}")
    return out


def release_lora(adapter: dict[str, torch.Tensor], adapter_name: str) -> dict[str, torch.Tensor]:
    """Adapter keys -> names of the preset's PEFT wrapping (LM under model.language_model, adapter `default`)."""
    out = {}
    for key, t in adapter.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise ReleaseFormatError(
                f"{adapter_name}: unexpected key {key} (not a LoRA A/B weight of an LM layer)"
            )
        layer, block, proj, ab = m.groups()
        out[
            f"base_model.model.model.language_model.layers.{layer}.{block}.{proj}.lora_{ab}.default.weight"
        ] = t
    return out


def expected_trainable(
    lm_config: dict[str, Any], vision_width: int, image_size: int, patch_size: int, stage2
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the preset's stage-2 trainable weights (LoRA + projector), built on the meta device."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, CLIPVisionConfig, LlavaForConditionalGeneration

    from training.model import _llava_config, configure_stage

    text = AutoConfig.for_model(**lm_config)
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        image_size=image_size,
        patch_size=patch_size,
        num_attention_heads=1,
        num_hidden_layers=1,
    )  # only the width matters here
    with init_empty_weights():
        model = configure_stage(LlavaForConditionalGeneration(_llava_config(vision, text, 0)), 2, stage2)
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}


def _match(release: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    extra = sorted(release.keys() - expected.keys())
    if extra:
        raise ReleaseFormatError(
            f"release weight {extra[0]} has no counterpart in the llava-rad preset ({len(extra)} unmatched)"
        )
    missing = sorted(expected.keys() - release.keys())
    if missing:
        raise ReleaseFormatError(
            f"llava-rad preset weight {missing[0]} is not in the release ({len(missing)} missing)"
        )
    for k, shape in expected.items():
        if tuple(release[k].shape) != shape:
            raise ReleaseFormatError(f"{k}: release shape {tuple(release[k].shape)} != preset shape {shape}")


def _check_vision_dir(vision: Path) -> None:
    """Build the open_clip model from the written dir (a strict load): a checkpoint key without a place in
    the model, or a model weight the checkpoint lacks, is named here rather than at the first generate."""
    from training.model import OpenClipVisionTower

    try:
        OpenClipVisionTower.from_dir(vision)
    except RuntimeError as e:
        found = re.search(r"(Missing|Unexpected) key\(s\) in state_dict: \"([^\"]+)\"", str(e))
        if found and found.group(1) == "Missing":
            raise ReleaseFormatError(f"{found.group(2)} is missing from {VISION_CHECKPOINT}") from None
        if found:
            raise ReleaseFormatError(
                f"{VISION_CHECKPOINT} key {found.group(2)} has no place in {VISION_CONFIG}'s model"
            ) from None
        raise ReleaseFormatError(
            f"{VISION_CHECKPOINT} does not load into {VISION_CONFIG}'s model: {str(e).splitlines()[0][:200]}"
        ) from None
    except OSError as e:  # transformers: the text tower's config is neither local nor in the HF cache
        raise ReleaseFormatError(
            f"{VISION_CONFIG}'s text tower config is not available offline "
            f"({str(e).splitlines()[0][:120]}); pass --text-model-dir"
        ) from None


def convert_release(
    src: Path, lm_path: Path, out: Path, text_model_dir: Path | None = None, allow_pickle: bool = False
) -> dict[str, Any]:
    """Write the run dir `out` (replacing nothing: `out` must not exist). Returns the import receipt.
    `allow_pickle`: read the open_clip training checkpoint with full unpickling when it holds objects beyond
    tensors and plain containers (only for a checkpoint from a trusted source)."""
    from safetensors.torch import save_file

    from cxrio import atomic_dir, sha256_file
    from schemas.train import TrainConfig, stage2_defaults
    from training.model import build_tokenizer

    src, lm_path, out = Path(src), Path(lm_path), Path(out)
    if out.exists():
        raise ReleaseFormatError(f"--out {out} already exists; choose a new run dir")
    check_layout(src, lm_path)
    llava_cfg = _read_json(src / LLAVA_CONFIG)
    for key, want in _LLAVA_EXPECT.items():
        if key in llava_cfg and llava_cfg[key] != want:
            raise ReleaseFormatError(
                f"{LLAVA_CONFIG}: {key}={llava_cfg[key]!r}, the llava-rad preset needs {want!r}"
            )
    lora = lora_settings(_read_json(src / ADAPTER_CONFIG))
    lm_config = _read_json(lm_path / "config.json")
    model_cfg = open_clip_model_cfg(_read_json(src / VISION_CONFIG))
    if text_model_dir is not None:
        if not (Path(text_model_dir) / "config.json").is_file():
            raise ReleaseFormatError(f"--text-model-dir {text_model_dir}: no config.json")
        model_cfg["text_cfg"]["hf_model_name"] = model_cfg["text_cfg"]["hf_tokenizer_name"] = str(
            Path(text_model_dir).resolve()
        )
    try:
        ck = torch.load(str(src / VISION_CHECKPOINT), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError:
        raise ReleaseFormatError(
            f"{VISION_CHECKPOINT} holds objects beyond tensors; if it comes from a source "
            "you trust, rerun with --allow-pickle"
        ) from None
    except Exception as e:
        raise ReleaseFormatError(f"{VISION_CHECKPOINT}: cannot be read ({type(e).__name__})") from None
    vstate = vision_state(ck)
    patch_w = vstate.get("visual.trunk.patch_embed.proj.weight")
    if patch_w is None:
        raise ReleaseFormatError(f"{VISION_CHECKPOINT}: no visual.trunk.patch_embed.proj.weight")
    vision_width, patch_size = int(patch_w.shape[0]), int(patch_w.shape[-1])
    image_size = int(model_cfg["vision_cfg"].get("image_size", 0))
    if not image_size or image_size % patch_size:
        raise ReleaseFormatError(
            f"{VISION_CONFIG}: image_size {image_size} is not a multiple of patch {patch_size}"
        )

    stage2 = stage2_defaults(**lora)
    projector = release_projector(_load_bin(src / NON_LORA))
    adapter, adapter_name = _load_adapter(src)
    trainable = release_lora(adapter, adapter_name)
    trainable.update({f"base_model.model.model.multi_modal_projector.{k}": v for k, v in projector.items()})
    _match(trainable, expected_trainable(lm_config, vision_width, image_size, patch_size, stage2))

    with atomic_dir(out, if_exists="fail") as tmp:  # nothing half-written is left behind
        (tmp / "final").mkdir(parents=True)
        (tmp / "vision").mkdir()
        (tmp / "vision" / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}, indent=2)
        )
        save_file(
            {k: v.contiguous() for k, v in vstate.items()},
            str(tmp / "vision" / "open_clip_model.safetensors"),
        )
        _check_vision_dir(tmp / "vision")
        fp32 = {k: v.float().contiguous() for k, v in projector.items()}  # trainable weights are kept in fp32
        save_file(fp32, str(tmp / "final" / "stage1-projector.safetensors"))
        save_file(
            {k: v.float().contiguous() for k, v in trainable.items()},
            str(tmp / "final" / "stage2-trainable.safetensors"),
        )
        cfg = TrainConfig(
            shards=src,
            out=out,
            preset="llava-rad",
            stages=[1, 2],
            stage2=stage2,
            image_size=image_size,
            vision_path=(out / "vision").resolve(),
            lm_path=lm_path.resolve(),
        )
        (tmp / "config.json").write_text(cfg.model_dump_json(indent=2))
        build_tokenizer(cfg, tmp)  # the LM's tokenizer with <image>, saved into the run
        receipt = {
            "source": str(src.resolve()),
            "lm_path": str(lm_path.resolve()),
            "files": {
                p.name: sha256_file(p)
                for p in sorted(src.iterdir())
                if p.name
                in (
                    ADAPTER_CONFIG,
                    NON_LORA,
                    LLAVA_CONFIG,
                    VISION_CONFIG,
                    VISION_CHECKPOINT,
                    *ADAPTER_WEIGHTS,
                )
            },
            "lora": lora,
            "lora_tensors": len(trainable) - len(projector),
            "projector_tensors": len(projector),
            "vision_tensors": len(vstate),
            "vision": {"width": vision_width, "patch_size": patch_size, "image_size": image_size},
            "dropped": "text.transformer.pooler.* of the open_clip checkpoint (not built by current open_clip)",
        }
        (tmp / "import.json").write_text(json.dumps(receipt, indent=2))
    return receipt
