"""LLaVA-style model on transformers' LlavaForConditionalGeneration: vision tower (frozen), projector
mlp2x_gelu (Linear -> GELU -> Linear, transformers' LlavaMultiModalProjector), causal LM.

Presets: `tiny` (random weights from configs, saved once into RUN/base so every stage and inference see the
same base) and `llava-rad` (vision encoder + Vicuna-7B v1.5 from local directories, local_files_only)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from training.checkpoint import save_pretrained_atomically
from training.seeds import derive
from training.text import IMAGE_TOKEN, build_tiny_tokenizer, load_lm_tokenizer

# Tiny really is tiny: 32 px / patch 8 -> 16 image tokens; 2-layer encoder and LM.
TINY = {
    "vision": dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, projection_dim=32),
    "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512,
                 # wide init: with 0.02 a 64-wide random lm_head cannot express confident logits, so even
                 # a perfectly fit adapter could not lower the loss much (overfit test)
                 initializer_range=0.2),
    "max_length": 256,
}
LLAVA_RAD = {"image_size": 518, "patch_size": 14, "max_length": 2048}
PROJECTOR = "multi_modal_projector"


def image_size_for(cfg) -> int:
    native = TINY["vision"]["image_size"] if cfg.preset == "tiny" else LLAVA_RAD["image_size"]
    return cfg.image_size or native


def max_length_for(cfg) -> int:
    return cfg.max_length or (TINY["max_length"] if cfg.preset == "tiny" else LLAVA_RAD["max_length"])


def n_image_tokens(model) -> int:
    """Patches the encoder yields with CLS dropped ("default" strategy) = image tokens in the text."""
    v = model.config.vision_config
    return (v.image_size // v.patch_size) ** 2


def build_tokenizer(cfg, run_dir: Path):
    """Tokenizer saved into RUN/tokenizer on first use, reloaded from there afterwards."""
    from transformers import PreTrainedTokenizerFast

    path = run_dir / "tokenizer"
    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    tok = build_tiny_tokenizer() if cfg.preset == "tiny" else load_lm_tokenizer(cfg.lm_path)
    save_pretrained_atomically(tok, path)
    return tok


def _llava_config(vision_config, text_config, image_token_id: int):
    from transformers import LlavaConfig

    v = vision_config
    return LlavaConfig(
        vision_config=v, text_config=text_config, image_token_index=image_token_id,
        projector_hidden_act="gelu",  # mlp2x_gelu
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(v.image_size // v.patch_size) ** 2,
    )


def tiny_config(tok, image_size: int = 32, vision=None):
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = vision or CLIPVisionConfig(**{**TINY["vision"], "image_size": image_size})
    text = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, **TINY["text"])
    return _llava_config(vision, text, tok.convert_tokens_to_ids(IMAGE_TOKEN))


def build_model(cfg, tok, run_dir: Path):
    """The base model (before any stage's trainable weights are loaded)."""
    from transformers import LlavaForConditionalGeneration

    if cfg.preset == "tiny":
        # tiny + vision_path: the tiny LM on a trained (open_clip) encoder; the base keeps a random tower of
        # the same shape, swapped for the loaded one every time the model is built
        tower, vision_config = (load_vision_tower(Path(cfg.vision_path), image_size_for(cfg), torch.float32)
                                if cfg.vision_path is not None else (None, None))
        base = run_dir / "base"
        if (base / "config.json").exists():
            model = LlavaForConditionalGeneration.from_pretrained(str(base))
        else:
            torch.manual_seed(derive(cfg.seed, "init"))
            model = LlavaForConditionalGeneration(tiny_config(tok, image_size_for(cfg), vision_config))
            save_pretrained_atomically(model, base)
        if tower is not None:
            model.model.vision_tower = tower
        return model
    return _build_llava_rad(cfg, tok)


def _build_llava_rad(cfg, tok):
    """Vision encoder + LM from local directories; the projector starts random (stage 1 trains it)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    for p in (cfg.vision_path, cfg.lm_path):
        if not Path(p).is_dir():
            raise FileNotFoundError(f"llava-rad preset: local model directory {p} does not exist "
                                    "(weights are never downloaded at run time)")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    vision, vision_config = load_vision_tower(Path(cfg.vision_path), image_size_for(cfg), dtype)
    lm = AutoModelForCausalLM.from_pretrained(str(cfg.lm_path), local_files_only=True, dtype=dtype)
    n_vocab = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(len(tok), mean_resizing=False)  # room for <image>
    with torch.no_grad():  # added rows are zero, not random: the same model at every load (the embedding row is
        lm.get_input_embeddings().weight[n_vocab:] = 0  # replaced by image features; generation suppresses
        lm.get_output_embeddings().weight[n_vocab:] = 0  # the token)
    config = _llava_config(vision_config, lm.config, tok.convert_tokens_to_ids(IMAGE_TOKEN))
    with init_empty_weights():
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).float()
    return model


def load_vision_tower(path: Path, image_size: int, dtype):
    """A transformers CLIP vision dir, or an open_clip dir (BiomedCLIP-CXR) adapted to the same outputs."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if (path / "open_clip_config.json").exists():
        tower = OpenClipVisionTower.from_dir(path)
        t = tower.trunk
        config = CLIPVisionConfig(image_size=image_size, patch_size=t.patch_embed.patch_size[0],
                                  hidden_size=t.embed_dim, num_hidden_layers=len(t.blocks),
                                  num_attention_heads=t.blocks[0].attn.num_heads,
                                  intermediate_size=t.blocks[0].mlp.fc1.out_features)
        return tower.to(dtype), config
    # the whole CLIPVisionModel: Llava asks it for hidden states through transformers' output capturing
    model = CLIPVisionModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return model, model.config


def _import_open_clip():
    """open_clip through training.openclip's importer (it makes open_clip importable on hosts whose torchvision
    build cannot load its compiled ops)."""
    from training.openclip import import_open_clip

    try:
        return import_open_clip()
    except ImportError as e:
        raise ImportError("an open_clip (BiomedCLIP-CXR) vision dir needs the `open_clip_torch` and `timm` "
                          "packages (`make install` puts them in)") from e


class OpenClipVisionTower(nn.Module):
    """open_clip timm ViT (BiomedCLIP) exposing transformers-style `hidden_states` (embeddings + each
    block), so Llava's vision_feature_layer=-2 / "default" picks the second-to-last block without CLS.
    Exercised on a tiny twin of the LLaVA-Rad release (tests/test_llava_rad_import.py) and on CPU with the
    encoder stage's tiny open_clip dir (same timm ViT class as BiomedCLIP's)."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    @classmethod
    def from_dir(cls, path: Path) -> OpenClipVisionTower:
        open_clip = _import_open_clip()
        # open_clip only logs a warning when a dir has no weights file it recognises, then builds random towers
        # (and would fetch the text tower's base weights). A vision tower must fail instead: check for the file,
        # never fetch base weights, and require the checkpoint to load (strictly).
        path = Path(path)
        if not any(p.suffix in (".safetensors", ".bin", ".pth") for p in path.iterdir()):
            raise ValueError(f"{path}: no open_clip weights were loaded (expected open_clip_model.safetensors "
                             "or open_clip_pytorch_model.bin beside open_clip_config.json)")
        model = open_clip.create_model(f"local-dir:{path}", pretrained_text=False, require_pretrained=True)
        trunk = getattr(model.visual, "trunk", None)
        if trunk is None or not hasattr(trunk, "blocks"):
            raise ValueError(f"{path}: expected an open_clip model with a timm ViT trunk (BiomedCLIP)")
        return cls(trunk)

    def forward(self, pixel_values, return_dict=True, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        t = self.trunk
        x = t.norm_pre(t.patch_drop(t._pos_embed(t.patch_embed(pixel_values))))
        hidden = [x]
        for block in t.blocks:
            x = block(x)
            hidden.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden))


def lora_target_regex(targets: list[str]) -> str:
    """Every named linear layer of the language model only: the vision tower has q/k/v_proj too, and
    lm_head is excluded by the recipe."""
    return rf"model\.language_model\..*\.({'|'.join(map(re.escape, targets))})"


def configure_stage(model, stage: int, stage_cfg):
    """Freeze per the recipe. Stage 1: projector only. Stage 2: LoRA on the LM + projector; vision frozen.
    Returns the model to train (a peft wrapper in stage 2)."""
    for p in model.parameters():
        p.requires_grad_(False)
    if stage == 2:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=stage_cfg.lora_r, lora_alpha=stage_cfg.lora_alpha,
                          lora_dropout=stage_cfg.lora_dropout, bias="none",
                          target_modules=lora_target_regex(stage_cfg.lora_targets))
        model = get_peft_model(model, lora)  # in place on the base (docs/pitfalls.md)
    for name, p in model.named_parameters():
        if f".{PROJECTOR}." in f".{name}":
            p.data = p.data.float()  # trainable weights kept in fp32 (bf16 autocast on GPU)
            p.requires_grad_(True)
    return model


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Load exactly the trainable set; any missing or unexpected name is an error, not a silent skip."""
    params = dict(model.named_parameters())
    expected = trainable_names(model)
    missing, extra = expected - state.keys(), state.keys() - params.keys()
    if missing or extra:
        raise ValueError(f"trainable weights do not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(extra)[:5]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].dtype))


def projector_state(model) -> dict[str, torch.Tensor]:
    """Projector weights keyed relative to the projector (independent of peft wrapping)."""
    out = {}
    for n, p in model.named_parameters():
        if f".{PROJECTOR}." in f".{n}":
            out[n.split(f"{PROJECTOR}.", 1)[1]] = p.detach().cpu().contiguous().clone()
    return out


def load_projector(model, state: dict[str, torch.Tensor]) -> None:
    proj = model.get_base_model().model.multi_modal_projector if hasattr(model, "get_base_model") \
        else model.model.multi_modal_projector
    proj.load_state_dict(state, strict=True)
