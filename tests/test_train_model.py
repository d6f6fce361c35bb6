"""Training unit tests: recipe defaults, exact trainable sets per stage, templates, transforms, data plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from schemas.train import TrainConfig, default_config
from training.data import DataPlan, ImageTransform
from training.model import build_model, build_tokenizer, configure_stage, n_image_tokens, trainable_names
from training.text import IGNORE, IMAGE_TOKEN, encode_example, prompt_text

PROJ = {f"model.multi_modal_projector.linear_{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}
LORA_TARGETS = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}


@pytest.fixture()
def tiny(tmp_path):
    cfg = default_config("tiny", tmp_path / "shards", tmp_path / "run")
    tok = build_tokenizer(cfg, tmp_path / "run")
    return cfg, tok, build_model(cfg, tok, tmp_path / "run")


def test_recipe_defaults():
    cfg = TrainConfig(shards=Path("s"), out=Path("o"))
    s1, s2 = cfg.stage1, cfg.stage2
    assert (s1.lr, s1.warmup_ratio, s1.scheduler, s1.weight_decay, s1.epochs, s1.global_batch_size) == \
        (1e-3, 0.03, "cosine", 0.0, 1, 256)
    assert (s2.lr, s2.epochs, s2.global_batch_size, s2.lora_r, s2.lora_alpha, s2.lora_dropout) == \
        (1e-4, 3, 64, 64, 128, 0.05)
    assert set(s2.lora_targets) == {t.split(".")[1] for t in LORA_TARGETS}
    with pytest.raises(ValueError, match="vision_path"):
        TrainConfig(shards=Path("s"), out=Path("o"), preset="llava-rad")


def test_stage1_trains_only_projector(tiny):
    cfg, _, model = tiny
    model = configure_stage(model, 1, cfg.stage1)
    assert trainable_names(model) == PROJ


def test_stage2_trains_lora_on_every_lm_linear_and_projector(tiny):
    cfg, _, model = tiny
    n_layers = model.config.text_config.num_hidden_layers
    model = configure_stage(model, 2, cfg.stage2)
    expected = {f"base_model.model.{p}" for p in PROJ} | {
        f"base_model.model.model.language_model.layers.{i}.{t}.lora_{ab}.default.weight"
        for i in range(n_layers) for t in LORA_TARGETS for ab in "AB"
    }
    assert trainable_names(model) == expected
    # vision tower and lm_head untouched by LoRA; ranks as configured
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora" in n and ("vision_tower" in n or "lm_head" in n) for n in names)
    q = model.base_model.model.model.language_model.layers[0].self_attn.q_proj
    assert q.r["default"] == 64 and q.scaling["default"] == pytest.approx(128 / 64)


def test_templates_mask_everything_but_the_answer(tiny):
    _, tok, model = tiny
    n_img = n_image_tokens(model)
    assert n_img == (32 // 8) ** 2
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    for stage in (1, 2):
        enc = encode_example(tok, stage, "The lungs are clear.", "Cough.", n_img, 256)
        assert enc.input_ids.count(image_id) == n_img
        answer = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]
        assert tok.decode(answer, skip_special_tokens=True).strip() == "The lungs are clear."
        assert answer[-1] == tok.eos_token_id
    assert prompt_text(1, "Cough.") == f"{IMAGE_TOKEN}\n"  # plain: no instruction, no indication
    assert "Cough." in prompt_text(2, "Cough.") and "indication" not in prompt_text(2, None)
    assert prompt_text(2, None).endswith("ASSISTANT:")
    # truncation cuts the answer, never the image tokens
    enc = encode_example(tok, 2, "word " * 500, None, n_img, 120)
    assert len(enc.input_ids) == 120 and enc.input_ids.count(image_id) == n_img


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_image_transform_grayscale_to_clip_tensor(mode):
    img = Image.new("L", (40, 64), 200)
    x = ImageTransform(32, mode)(img)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[0] * 0.26862954 + 0.48145466, x[1] * 0.26130258 + 0.4578275, atol=1e-4)
    corner = x[0, 0, 0].item() * 0.26862954 + 0.48145466
    # pad keeps the whole film and adds black borders; crop has no border
    assert (corner < 0.05) if mode == "pad" else (corner > 0.7)


def test_data_plan_is_a_function_of_seed_epoch_step():
    plan = DataPlan(n_examples=50, micro_batch=2, accum=3, world=1, rank=0, seed=5)
    assert plan.steps_per_epoch == 8
    full = plan.batches(epoch=1)
    assert plan.batches(epoch=1, start_step=3) == full[3 * 3:]
    assert full == DataPlan(50, 2, 3, 1, 0, 5).batches(1) and full != plan.batches(2)
    ranks = [DataPlan(50, 2, 3, 2, r, 5).batches(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])  # equal steps on every rank
    flat = [set(sum(b, [])) for b in ranks]
    assert not flat[0] & flat[1]


def test_llava_rad_preset_needs_local_dirs(tmp_path):
    from training.model import _build_llava_rad

    cfg = default_config("llava-rad", tmp_path, tmp_path / "run", vision_path=tmp_path / "nope",
                         lm_path=tmp_path / "nope2")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _build_llava_rad(cfg, None)


def test_gpu_bench_script_smoke():
    from bench.gpu_train_7b import main

    res = main(["--smoke", "--steps", "2"])
    assert set(res) == {"stage1", "stage2"}
    for r in res.values():
        assert r["step_time_s"] > 0 and r["model_flops_per_step"] > 0 and r["mfu"] is None  # no peak on CPU


def test_llava_rad_preset_builds_from_local_dirs_offline(tmp_path):
    """The real-preset path (HF CLIP vision dir + causal LM dir, local_files_only) on tiny stand-ins."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from training.model import TINY, _build_llava_rad
    from training.text import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    CLIPVisionModel(CLIPVisionConfig(**TINY["vision"])).save_pretrained(tmp_path / "vision")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok) - 1, **TINY["text"])).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    cfg = default_config("llava-rad", tmp_path, tmp_path / "run", vision_path=tmp_path / "vision",
                         lm_path=tmp_path / "lm", image_size=32)
    run_tok = build_tokenizer(cfg, tmp_path / "run")
    model = _build_llava_rad(cfg, run_tok)
    assert model.config.text_config.vocab_size == len(run_tok)
    model = configure_stage(model, 1, cfg.stage1)
    assert trainable_names(model) == PROJ
    enc = encode_example(run_tok, 1, "The lungs are clear.", None, n_image_tokens(model), 64)
    out = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]),
                pixel_values=ImageTransform(32)(Image.new("L", (40, 40), 128))[None])
    assert torch.isfinite(out.loss)


def test_shards_given_by_relative_paths_are_readable(tmp_path, monkeypatch):
    """Configs name folders relative to the working directory (configs/demo.yaml): the shard links in the
    run's cache must not dangle."""
    from fixtures.train_shards import write_train_shards
    from training.data import open_shards, read_index

    monkeypatch.chdir(tmp_path)
    write_train_shards(Path("shards"), n=6, per_shard=3)
    ds = open_shards(read_index(Path("shards"), "train"), Path("run") / ".wids")
    assert len(ds) == 6
    assert ds[5][".txt"] is not None
    ds2 = open_shards(read_index(Path("shards"), "train"), Path("run") / ".wids")  # links reused on a rerun
    assert len(ds2) == 6 and ds2[0][".json"] is not None


def test_shard_links_follow_a_relative_shards_dir_resolved_from_another_cwd(tmp_path, monkeypatch):
    """The same relative --shards from another working directory names other shards: the run's cached
    links must point at those, not at the shards of the first directory."""
    from fixtures.train_shards import write_train_shards
    from training.data import open_shards, read_index

    cache = tmp_path / "run" / ".wids"
    for cwd, seed in ((tmp_path / "a", 0), (tmp_path / "b", 1)):
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        write_train_shards(Path("shards"), n=3, per_shard=3, seed=seed)
        ds = open_shards(read_index(Path("shards"), "train"), cache)
        assert ds[0][".json"] is not None  # links are made on first access
        want = (cwd / "shards" / "data" / "train-00000-of-00001.tar").resolve()
        assert (cache / "train-00000-of-00001.tar").resolve() == want
        ds.close()
