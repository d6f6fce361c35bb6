"""`cxrflow import-llava-rad` on a tiny twin of the microsoft/llava-rad release (exact file and key names):
convert, generate, evaluate; the converted model's logits equal those of the same weights assembled by hand;
every missing file or unmatched key is a one-line error; the open_clip loader refuses a dir without weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from llava_rad_support import ensure_open_clip
from PIL import Image
from typer.testing import CliRunner

from fixtures.llava_rad_release import LORA_ALPHA, LORA_R, write_lm_dir, write_release

# building the twin imports open_clip/timm and writes three small models (~10 s on a free core)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    ensure_open_clip()
    root = tmp_path_factory.mktemp("llava-rad")
    lm = write_lm_dir(root / "vicuna")
    src = write_release(root / "release", lm, root / "bert")
    return root, src, lm


@pytest.fixture(scope="module")
def run(twin):
    from training.llava_rad_release import convert_release

    root, src, lm = twin
    convert_release(src, lm, root / "run")
    return root / "run"


def _image(seed=0, size=40):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size)) * 255).astype("uint8")).convert("RGB")


def _direct_assembly(src, lm_dir, image_token_id: int, vocab: int):
    """The release's weights put together by hand, without the converter: Vicuna + LoRA merged as
    W + (alpha/r) B A, projector from mm_projector.0/.2, the timm trunk from module.visual.trunk.*."""
    import timm
    from transformers import AutoConfig, CLIPVisionConfig, LlamaForCausalLM, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from training.model import OpenClipVisionTower, _llava_config

    lm = LlamaForCausalLM.from_pretrained(str(lm_dir))
    adapter = torch.load(src / "adapter_model.bin", weights_only=True)
    params = dict(lm.named_parameters())
    with torch.no_grad():
        for key, a in adapter.items():
            if key.endswith("lora_A.weight"):
                stem = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                b = adapter[key.replace("lora_A", "lora_B")]
                params[f"{stem}.weight"] += (LORA_ALPHA / LORA_R) * (b @ a)
        lm.resize_token_embeddings(vocab + 1, mean_resizing=False)
    ck = torch.load(src / "biomedclipcxr_518_checkpoint.pt", weights_only=True)["state_dict"]
    name = json.loads((src / "biomedclipcxr_518.json").read_text())["vision_cfg"]["timm_model_name"]
    trunk = timm.create_model(name, num_classes=0)
    trunk.load_state_dict(
        {
            k.removeprefix("module.visual.trunk."): v
            for k, v in ck.items()
            if k.startswith("module.visual.trunk.")
        }
    )
    vision_cfg = CLIPVisionConfig(
        image_size=28, patch_size=14, hidden_size=32, num_attention_heads=2, num_hidden_layers=2
    )
    config = _llava_config(vision_cfg, AutoConfig.from_pretrained(str(lm_dir)), image_token_id)
    config.text_config.vocab_size = vocab + 1
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = OpenClipVisionTower(trunk)
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    proj = LlavaMultiModalProjector(config)
    non_lora = torch.load(src / "non_lora_trainables.bin", weights_only=True)
    proj.load_state_dict(
        {
            f"linear_{1 if i == '0' else 2}.{p}": non_lora[f"base_model.model.model.mm_projector.{i}.{p}"]
            for i in ("0", "2")
            for p in ("weight", "bias")
        }
    )
    model.model.multi_modal_projector = proj
    return model.eval()


def test_converted_logits_equal_direct_assembly_and_generate(twin, run):
    from training.inference import ReportGenerator
    from training.text import IMAGE_TOKEN, encode_prompt, prompt_text

    root, src, lm = twin
    gen = ReportGenerator.from_run(run)
    tok = gen.tok
    vocab = json.loads((lm / "config.json").read_text())["vocab_size"]
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_id == vocab  # <image> added after the LM's own vocabulary
    direct = _direct_assembly(src, lm, image_id, vocab)
    ids = torch.tensor([encode_prompt(tok, prompt_text(2, "cough"), gen.n_image_tokens)])
    pixels = gen.preprocess_image(_image()).unsqueeze(0)
    with torch.no_grad():
        ours = gen.model(input_ids=ids, pixel_values=pixels).logits[..., :vocab]
        ref = direct(input_ids=ids, pixel_values=pixels).logits[..., :vocab]
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # the weights really came from the release: a model without the LoRA merge differs
    assert not torch.allclose(ours, _plain_lm_logits(lm, ids, image_id, vocab), atol=1e-3)
    out = gen.generate([_image(1)], [None], max_new_tokens=6)
    assert len(out) == 1 and isinstance(out[0], str)
    receipt = json.loads((run / "import.json").read_text())
    assert receipt["lora_tensors"] == 2 * 7 * 2 and receipt["projector_tensors"] == 4


def _plain_lm_logits(lm_dir, ids, image_id, vocab):
    from transformers import LlamaForCausalLM

    lm = LlamaForCausalLM.from_pretrained(str(lm_dir)).eval()
    with torch.no_grad():
        return lm(input_ids=torch.where(ids == image_id, 0, ids)).logits[..., :vocab]


def test_image_tokens_are_the_reference_vision_features(twin, run):
    """Independent of cxrflow's vision wrapper and of transformers' Llava feature selection (both shared by
    the direct assembly above): LLaVA-Rad's encoder takes the timm trunk's hidden states after norm_pre and
    each block, picks hidden_states[-2] (mm_vision_select_layer), drops the CLS token ("patch") and applies
    Linear-GELU-Linear (mlp2x_gelu). Computed here by hand from the release files."""
    import timm
    import torch.nn.functional as F

    from training.inference import ReportGenerator

    root, src, lm = twin
    gen = ReportGenerator.from_run(run)
    pixels = gen.preprocess_image(_image(3)).unsqueeze(0)
    ck = torch.load(src / "biomedclipcxr_518_checkpoint.pt", weights_only=True)["state_dict"]
    name = json.loads((src / "biomedclipcxr_518.json").read_text())["vision_cfg"]["timm_model_name"]
    trunk = timm.create_model(name, num_classes=0)
    trunk.load_state_dict(
        {
            k.removeprefix("module.visual.trunk."): v
            for k, v in ck.items()
            if k.startswith("module.visual.trunk.")
        }
    )
    trunk.eval()
    p = torch.load(src / "non_lora_trainables.bin", weights_only=True)
    w = {k.removeprefix("base_model.model.model.mm_projector."): v for k, v in p.items()}
    captured = []
    hook = gen.model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        x = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels)))
        states = [x]
        for block in trunk.blocks:
            x = block(x)
            states.append(x)
        feats = states[-2][:, 1:]
        want = F.linear(F.gelu(F.linear(feats, w["0.weight"], w["0.bias"])), w["2.weight"], w["2.bias"])
        ids = torch.tensor([encode_prompt_for(gen)])
        gen.model(input_ids=ids, pixel_values=pixels)
    hook.remove()
    (got,) = captured
    assert got.shape == want.shape == (1, gen.n_image_tokens, want.shape[-1])
    assert torch.allclose(got.float(), want, atol=1e-5), (got - want).abs().max()


def encode_prompt_for(gen):
    from training.text import encode_prompt, prompt_text

    return encode_prompt(gen.tok, prompt_text(2, None, "llava-rad"), gen.n_image_tokens)


def test_cli_import_then_generate(twin, tmp_path):
    from cxrflow_cli.main import app

    root, src, lm = twin
    res = CliRunner().invoke(
        app, ["import-llava-rad", "--from", str(src), "--lm-path", str(lm), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 0, res.output
    image = tmp_path / "cxr.png"
    _image(2, 64).convert("L").save(image)
    res = CliRunner().invoke(
        app, ["generate", "--run", str(tmp_path / "run"), "--image", str(image), "--max-new-tokens", "5"]
    )
    assert res.exit_code == 0, res.output
    again = CliRunner().invoke(
        app, ["import-llava-rad", "--from", str(src), "--lm-path", str(lm), "--out", str(tmp_path / "run")]
    )
    assert again.exit_code == 2 and "already exists" in again.output


def test_import_then_evaluate(run, tmp_path):
    from fixtures.train_shards import write_train_shards
    from schemas.evaluation import OptionalModelPaths
    from tasks.evaluate.inference import generate_predictions, read_predictions
    from tasks.evaluate.scoring import score_records
    from training.inference import ReportGenerator

    shards = write_train_shards(tmp_path / "shards", n=3, per_shard=3, seed=4, split="test")
    summary = generate_predictions(
        ReportGenerator.from_run(run), shards, tmp_path / "p.jsonl", max_new_tokens=4
    )
    assert summary.generated == 3
    metrics, _, _ = score_records(
        read_predictions(tmp_path / "p.jsonl"), paths=OptionalModelPaths(), n_bootstrap=10
    )
    assert metrics.n_reports == 3 and metrics.metrics["rouge_l"].value is not None


def _broken_copy(src, tmp_path, edit):
    dst = tmp_path / "release"
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def _drop_file(name):
    return lambda d: (d / name).unlink()


def _edit_bin(name, fn):
    def edit(d):
        state = torch.load(d / name, weights_only=True)
        fn(state)
        torch.save(state, d / name)

    return edit


def _edit_ckpt(fn):
    def edit(d):
        ck = torch.load(d / "biomedclipcxr_518_checkpoint.pt", weights_only=True)
        fn(ck["state_dict"])
        torch.save(ck, d / "biomedclipcxr_518_checkpoint.pt")

    return edit


def _edit_json(name, fn):
    def edit(d):
        data = json.loads((d / name).read_text())
        fn(data)
        (d / name).write_text(json.dumps(data))

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_file("non_lora_trainables.bin"), "lacks release file(s): non_lora_trainables.bin"),
        (_drop_file("adapter_model.bin"), "adapter_model.safetensors or adapter_model.bin"),
        (_drop_file("biomedclipcxr_518_checkpoint.pt"), "biomedclipcxr_518_checkpoint.pt"),
        (
            _edit_bin(
                "non_lora_trainables.bin",
                lambda s: s.__setitem__("base_model.model.model.embed_tokens.weight", torch.zeros(2, 2)),
            ),
            "unexpected key base_model.model.model.embed_tokens.weight",
        ),
        (
            _edit_bin(
                "non_lora_trainables.bin", lambda s: s.pop("base_model.model.model.mm_projector.2.bias")
            ),
            "missing projector weight(s) ['linear_2.bias']",
        ),
        (
            _edit_bin(
                "adapter_model.bin",
                lambda s: s.pop("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
            ),
            "llava-rad preset weight base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.default.weight "
            "is not in the release",
        ),
        (
            _edit_bin(
                "adapter_model.bin",
                lambda s: s.__setitem__(
                    "base_model.model.model.layers.9.mlp.up_proj.lora_A.weight", torch.zeros(4, 64)
                ),
            ),
            "release weight base_model.model.model.language_model.layers.9.mlp.up_proj.lora_A.default.weight has no "
            "counterpart",
        ),
        (
            _edit_bin(
                "adapter_model.bin",
                lambda s: s.__setitem__("base_model.model.lm_head.lora_A.weight", torch.zeros(1)),
            ),
            "unexpected key base_model.model.lm_head.lora_A.weight",
        ),
        (
            _edit_json("adapter_config.json", lambda c: c.__setitem__("use_dora", True)),
            "use_dora=True is not supported",
        ),
        (
            _edit_json("config.json", lambda c: c.__setitem__("mm_projector_type", "linear")),
            "mm_projector_type='linear'",
        ),
        (
            _edit_ckpt(lambda s: s.__setitem__("module.visual.trunk.extra.weight", torch.zeros(2))),
            "biomedclipcxr_518_checkpoint.pt key visual.trunk.extra.weight has no place in biomedclipcxr_518.json's model",
        ),
        (
            _edit_ckpt(lambda s: s.pop("module.visual.trunk.norm.weight")),
            "visual.trunk.norm.weight is missing from biomedclipcxr_518_checkpoint.pt",
        ),
    ],
)
def test_wrong_or_missing_release_content_is_a_one_line_error(twin, tmp_path, edit, message):
    from cxrflow_cli.main import app

    root, src, lm = twin
    bad = _broken_copy(src, tmp_path, edit)
    res = CliRunner().invoke(
        app, ["import-llava-rad", "--from", str(bad), "--lm-path", str(lm), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.importing").exists()


def test_open_clip_loader_fails_loudly_without_weights(run, tmp_path):
    from training.model import OpenClipVisionTower

    empty = tmp_path / "vision"
    empty.mkdir()
    shutil.copy(run / "vision" / "open_clip_config.json", empty)
    with pytest.raises(ValueError, match="no open_clip weights were loaded"):
        OpenClipVisionTower.from_dir(empty)
    tower = OpenClipVisionTower.from_dir(run / "vision")  # the converted dir loads (strictly)
    assert len(tower.trunk.blocks) == 2


def test_vision_checkpoint_with_pickled_objects_needs_allow_pickle(twin, tmp_path):
    import argparse

    from cxrflow_cli.main import app

    root, src, lm = twin

    def add_args(d):
        ck = torch.load(d / "biomedclipcxr_518_checkpoint.pt", weights_only=True)
        ck["args"] = argparse.Namespace(model="biomedclip")  # open_clip training scripts may store their args
        torch.save(ck, d / "biomedclipcxr_518_checkpoint.pt")

    bad = _broken_copy(src, tmp_path, add_args)
    base = ["import-llava-rad", "--from", str(bad), "--lm-path", str(lm), "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "--allow-pickle" in res.output
    assert CliRunner().invoke(app, [*base, "--allow-pickle"]).exit_code == 0


def test_lm_tokenizer_is_vicunas_sentencepiece_model(twin):
    """The twin's LM ships what lmsys/vicuna-7b-v1.5 ships (a sentencepiece tokenizer.model, `legacy: false`,
    no tokenizer.json), so the import above went through the real conversion."""
    _, _, lm = twin
    assert (lm / "tokenizer.model").is_file() and not (lm / "tokenizer.json").exists()
    assert json.loads((lm / "tokenizer_config.json").read_text())["legacy"] is False


def _lm_copy(lm, tmp_path, drop=()):
    copy = tmp_path / "vicuna"
    shutil.copytree(lm, copy)
    for name in drop:
        (copy / name).unlink()
    return copy


@pytest.mark.parametrize(
    ("drop", "absent", "message"),
    [
        (("tokenizer.model",), (), "no tokenizer (tokenizer.json or tokenizer.model)"),
        ((), ("sentencepiece",), "tokenizer.model needs the sentencepiece package(s)"),
        ((), ("sentencepiece", "google.protobuf"), "needs the sentencepiece and protobuf package(s)"),
        (("model.safetensors",), (), "no weights"),
    ],
)
def test_lm_dir_is_checked_before_anything_is_written(twin, tmp_path, monkeypatch, drop, absent, message):
    """A Vicuna dir the import cannot use (no tokenizer, or the packages its tokenizer.model needs missing) is one
    line naming what is missing, before any file of the run is written."""
    import importlib.util

    from cxrflow_cli.main import app

    _, src, lm = twin
    bad = _lm_copy(lm, tmp_path, drop)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    res = CliRunner().invoke(
        app, ["import-llava-rad", "--from", str(src), "--lm-path", str(bad), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "tiktoken" not in lines[0], res.output
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.importing").exists()


def test_llava_rad_training_checks_the_lm_dir_first(twin, tmp_path):
    from schemas.errors import UserError
    from schemas.train import TrainConfig
    from tasks.preflight import check_train_config

    _, _, lm = twin
    bad = _lm_copy(lm, tmp_path, ("tokenizer.model",))
    shards = tmp_path / "shards"
    cfg = TrainConfig.model_construct(
        shards=shards, out=tmp_path / "out", preset="llava-rad", split="train", vision_path=tmp_path, lm_path=bad
    )
    import tasks.preflight as preflight

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preflight, "check_shards", lambda *a: None)
        with pytest.raises(UserError, match="no tokenizer"):
            check_train_config(cfg)
    assert not (tmp_path / "out").exists()
