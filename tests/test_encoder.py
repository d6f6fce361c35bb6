"""The image encoder stage: what cxrflow hands open_clip_train, the exported open_clip dir as the LLaVA vision
tower, retrieval metrics and their chance level, lineage, and the stage inside the pipeline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest


def _write_mixed_shards(root: Path, n: int = 8, split: str = "train") -> Path:
    """Shard-contract tars whose samples come from two sources (K.json `source`), with distinct texts."""
    import webdataset as wds
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    name = f"{split}-000000.tar"
    with wds.TarWriter(str(root / name)) as tw:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((40, 40), 20 * i, np.uint8), "L").save(buf, format="PNG")
            source = "mimic-cxr" if i % 2 == 0 else "chexpert"
            meta = {"source": source, "label_cardiomegaly": i % 2, "label_edema": None}
            tw.write(
                {
                    "__key__": f"k{i:03d}",
                    "png": buf.getvalue(),
                    "txt": f"report number {i}.",
                    "json": json.dumps(meta),
                }
            )
    (root / f"{split}.index.json").write_text(
        json.dumps({"wids_version": 1, "shardlist": [{"url": name, "nsamples": n}]})
    )
    return root


def test_recall_counts_ties_against_the_query_and_chance_is_exact():
    from tasks.evaluate.retrieval import hits_and_chance

    sim = np.array([[0.9, 0.1, 0.2], [0.7, 0.6, 0.4], [0.3, 0.3, 0.3]])
    correct = np.eye(3, dtype=bool)
    hits, chance = hits_and_chance(sim, correct, ks=(1, 2))
    # query 0 ranks its item first; query 1 second; query 2 ties with both wrong items -> rank 3
    assert hits[1].tolist() == [True, False, False] and hits[2].tolist() == [True, True, False]
    assert chance[1] == pytest.approx(1 / 3) and chance[2] == pytest.approx(2 / 3)
    # two correct items (identical texts) among four: P(at least one in the top 1) = 1/2
    dup = np.array([[True, True, False, False]])
    assert hits_and_chance(np.zeros((1, 4)), dup, ks=(1,))[1][1] == pytest.approx(0.5)
    # a constant encoder is at or below chance, never at 100
    const = hits_and_chance(np.zeros((3, 3)), correct, ks=(1,))[0][1]
    assert not const.any()


def test_chance_with_repeated_texts_is_what_a_random_encoder_scores():
    """Identical texts get identical embeddings, so they rank as one block: 5 texts x 8 copies give i2t chance
    20% at R@1 and R@5 (the block formula), not 20% and 69% (the formula for distinct items). Checked against
    200 seeded random encoders, and against 1 - C(G-m, K)/C(G, K) where every item is distinct."""
    from math import comb

    from tasks.evaluate.retrieval import block_chance, hits_and_chance

    texts = np.repeat(np.arange(5), 8)
    same = texts[:, None] == texts[None, :]
    rng = np.random.default_rng(0)
    got = {1: [], 5: []}
    chance = None
    for _ in range(200):
        img = rng.normal(size=(40, 16))
        txt = rng.normal(size=(5, 16))[texts]  # one embedding per distinct text
        hits, chance = hits_and_chance(img @ txt.T, same, ks=(1, 5), blocks=texts)
        for k in got:
            got[k].append(hits[k].mean())
    assert chance[1] == pytest.approx(0.2) and chance[5] == pytest.approx(0.2)
    assert np.mean(got[1]) == pytest.approx(0.2, abs=0.03) and np.mean(got[5]) == pytest.approx(0.2, abs=0.03)
    assert 1 - comb(32, 5) / comb(40, 5) > 0.69  # what the distinct-items formula would have claimed
    for g, m, k in ((12, 3, 1), (12, 3, 5), (74, 2, 10)):
        assert block_chance([1] * g, [1] * m, k) == pytest.approx(1 - comb(g - m, k) / comb(g, k))


def test_block_chance_equals_brute_force_over_every_order_of_blocks():
    """block_chance against enumeration of every order of the blocks: mixed block sizes, one or several correct
    blocks, K below, within and above the sizes."""
    import itertools
    import random

    from tasks.evaluate.retrieval import block_chance

    rng = random.Random(1)
    for _ in range(25):
        sizes = [rng.randint(1, 4) for _ in range(rng.randint(1, 6))]
        correct = set(rng.sample(range(len(sizes)), rng.randint(1, min(3, len(sizes)))))
        for k in (1, 2, 3, 5, 8, 20):
            hits = total = 0
            for order in itertools.permutations(range(len(sizes))):
                above = 0
                for b in order:
                    if b in correct:
                        break
                    above += sizes[b]
                hits += above < k
                total += 1
            assert block_chance(sizes, [sizes[i] for i in correct], k) == pytest.approx(hits / total, abs=1e-12)
    # against the distinct-items formula, averaged over the queries (each text queries its own block): lower
    # with one large block at R@1 (never higher, there), higher with one large block among small ones at R@5
    from math import comb

    def both(sizes, k):
        g = sum(sizes)
        distinct = sum(s * (1 - comb(g - s, k) / comb(g, k)) for s in sizes) / g
        return sum(s * block_chance(sizes, [s], k) for s in sizes) / g, distinct

    low, high = both([20, 1, 1, 1], 1), both([1, 20, 3], 5)
    assert low[0] < low[1] and high[0] > high[1]


def test_paired_retrieval_comparison_by_query_key(tmp_path):
    import polars as pl

    from tasks.evaluate.retrieval import compare_retrieval

    keys = [f"k{i:02d}" for i in range(40)]
    for name, hits in (("a", [0.0] * 40), ("b", [1.0] * 30 + [0.0] * 10)):
        (tmp_path / name).mkdir()
        frame = pl.DataFrame({"id": keys, "source": ["s"] * 40, "retrieval_i2t_r5": hits})
        frame.reverse().write_parquet(
            tmp_path / name / "per_query.parquet"
        )  # order differs from keys: sorted
    c = compare_retrieval(tmp_path / "a", tmp_path / "b", n_resamples=200)["retrieval_i2t_r5"]
    assert c["diff"] == pytest.approx(75.0) and c["diff_ci"][0] > 50 and c["p_value"] < 0.01
    pl.DataFrame({"id": keys[:39], "source": ["s"] * 39, "retrieval_i2t_r5": [0.0] * 39}).write_parquet(
        tmp_path / "a" / "per_query.parquet"
    )
    with pytest.raises(ValueError, match="different queries"):
        compare_retrieval(tmp_path / "a", tmp_path / "b")


def test_source_selection_copies_only_the_selected_samples(tmp_path):
    from tasks.encoder.prepare import training_data
    from training.data import iter_tar_samples

    shards = _write_mixed_shards(tmp_path / "shards")
    everything = training_data(shards, None, tmp_path / "enc")
    assert everything.urls == [str(shards / "train-000000.tar")] and everything.samples == 8
    mimic = training_data(shards, ["mimic-cxr"], tmp_path / "enc")
    assert (
        mimic.samples == 4
        and mimic.by_source == {"mimic-cxr": 4}
        and mimic.excluded_by_source == {"chexpert": 4}
    )
    assert mimic.summary()["found"] == 8
    original = dict(iter_tar_samples(str(shards / "train-000000.tar")))
    subset = dict(iter_tar_samples(mimic.urls[0]))
    assert sorted(subset) == ["k000", "k002", "k004", "k006"]
    for key, members in subset.items():  # member bytes unchanged: open_clip reads the same image and text
        assert {e: m[1] for e, m in members.items()} == {e: m[1] for e, m in original[key].items()}
    with pytest.raises(ValueError, match="no train sample of these sources"):
        training_data(shards, ["padchest"], tmp_path / "enc2")


def test_shard_urls_are_absolute_and_checked(tmp_path, monkeypatch):
    """The engine runs in the stage dir: a relative SHARDS must not reach it; a missing tar fails up front."""
    from tasks.encoder.prepare import training_data

    _write_mixed_shards(tmp_path / "shards")
    monkeypatch.chdir(tmp_path)
    urls = training_data(Path("shards"), None, Path("enc")).urls
    assert urls == [str(tmp_path / "shards" / "train-000000.tar")]
    (tmp_path / "shards" / "train-000000.tar").unlink()
    with pytest.raises(FileNotFoundError, match="1 shard"):
        training_data(Path("shards"), None, Path("enc"))


def test_engine_arguments_single_process_and_torchrun(tmp_path):
    from schemas.encoder import EncoderConfig
    from tasks.encoder.prepare import TrainingData
    from tasks.encoder.train import command, engine_args

    cfg = EncoderConfig(shards=tmp_path, out=tmp_path / "enc", batch_size=64, epochs=2)
    args = engine_args(
        cfg, tmp_path / "m", TrainingData(["/a/train-000000.tar", "/a/train-000001.tar"], 10), False
    )
    a = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag.startswith("--")}
    assert a["--model"] == f"local-dir:{tmp_path / 'm'}" and a["--dataset-type"] == "webdataset"
    assert (
        a["--train-data"] == "/a/train-000000.tar::/a/train-000001.tar" and a["--train-num-samples"] == "10"
    )
    assert a["--batch-size"] == "10" and a["--precision"] == "fp32" and "--dataset-resampled" in args
    assert command(cfg, args)[1:3] == ["-m", "tasks.encoder.engine"]
    multi = cfg.model_copy(update={"nproc": 8})
    gpu = engine_args(multi, tmp_path / "m", TrainingData(["/a/x.tar"], 1000), True)
    assert (
        "--local-loss" in gpu
        and "--gather-with-grad" in gpu
        and gpu[gpu.index("--precision") + 1] == "amp_bf16"
    )
    assert "--nproc_per_node=8" in command(multi, gpu)


def test_pipeline_config_encoder_section_keys_and_errors(tmp_path):
    from pipeline_support import base_dict, tiny_config

    from schemas.pipeline import PipelineConfig, config_hash

    plain = tiny_config(tmp_path, tmp_path / "out")
    h = plain.stage_hashes()
    assert "encoder" not in h and h["train"] == config_hash(
        "train", h["shard"], plain.train
    )  # keys unchanged
    with_enc = PipelineConfig.model_validate({**base_dict(plain), "encoder": {"epochs": 1}})
    he = with_enc.stage_hashes()
    assert list(he) == ["ingest", "structure", "shard", "encoder", "train", "evaluate"]
    assert he["shard"] == h["shard"] and he["train"] != h["train"]
    other = PipelineConfig.model_validate({**base_dict(plain), "encoder": {"epochs": 2}})
    assert other.stage_hashes()["encoder"] != he["encoder"] and other.stage_hashes()["train"] != he["train"]
    with pytest.raises(ValueError, match="either an encoder section"):
        PipelineConfig.model_validate(
            {
                **base_dict(plain),
                "encoder": {},
                "train": {**base_dict(plain)["train"], "vision_path": str(tmp_path)},
            }
        )
    from schemas.encoder import EncoderConfig

    with pytest.raises(ValueError, match="no open_clip_config.json"):
        EncoderConfig(init=str(tmp_path / "nowhere"), shards=tmp_path, out=tmp_path)


def test_exported_encoder_is_the_tiny_llava_vision_tower_and_in_its_lineage(tmp_path):
    """epochs=0 exports the seeded random tiny encoder through the same path a trained one takes."""
    import torch

    from schemas.encoder import EncoderConfig
    from schemas.train import default_config
    from tasks.encoder.train import train_encoder
    from training.model import (
        OpenClipVisionTower,
        build_model,
        build_tokenizer,
        load_vision_tower,
        n_image_tokens,
    )
    from training.run import lineage

    shards = _write_mixed_shards(tmp_path / "shards")
    record = train_encoder(EncoderConfig(shards=shards, out=tmp_path / "enc", epochs=0, key="abc"))
    enc = Path(record["open_clip_dir"])
    assert (enc / "open_clip_config.json").exists() and (enc / "open_clip_pytorch_model.bin").exists()

    tower, vcfg = load_vision_tower(enc, 32, torch.float32)
    assert isinstance(tower, OpenClipVisionTower)
    out = tower(torch.zeros(2, 3, 32, 32))
    assert len(out.hidden_states) == 5 and out.hidden_states[-2].shape == (2, 17, 32)  # CLS + 16 patches
    assert (vcfg.hidden_size, vcfg.num_attention_heads, vcfg.patch_size) == (32, 2, 8)

    cfg = default_config("tiny", shards, tmp_path / "run", vision_path=enc)
    model = build_model(cfg, build_tokenizer(cfg, cfg.out), cfg.out)
    assert isinstance(model.model.vision_tower, OpenClipVisionTower) and n_image_tokens(model) == 16
    feats = model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32))
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    assert tuple(torch.cat(list(feats)).shape) == (16, 64)  # 16 image tokens projected to the LM width
    state = torch.load(enc / "open_clip_pytorch_model.bin")
    trunk_w = state["visual.trunk.blocks.0.attn.qkv.weight"]
    assert torch.equal(
        model.model.vision_tower.trunk.blocks[0].attn.qkv.weight, trunk_w
    )  # the exported weights

    lin = lineage(cfg)["encoder"]
    assert lin["encoder_key"] == "abc" and lin["weights_sha256"] == record["weights_sha256"]
    assert lin["index_sha256"] == record["index_sha256"] and "train.index.json" in lin["index_sha256"]


@pytest.mark.slow
def test_pipeline_with_an_encoder_section_trains_it_with_open_clip_train_and_reuses_it(
    prefect_server, tmp_path
):
    from pipeline_support import base_dict, tiny_config, write_fixture

    from flows.pipeline import pipeline
    from schemas.pipeline import PipelineConfig

    root = write_fixture(tmp_path / "mimic")
    cfg = PipelineConfig.model_validate(
        {
            **base_dict(tiny_config(root, tmp_path / "out", name="enc")),
            "encoder": {"epochs": 1, "batch_size": 4, "samples_per_epoch": 8, "n_bootstrap": 20},
        }
    )
    first = pipeline(cfg)
    assert list(first["stages"]) == ["ingest", "structure", "shard", "encoder", "train", "evaluate"]
    enc_dir = Path(first["stages"]["encoder"]["dir"])
    log = (enc_dir / "engine" / "run" / "out.log").read_text()
    assert "Train Epoch: 0" in log  # open_clip_train's own training loop ran
    assert (enc_dir / "engine" / "run" / "checkpoints" / "epoch_1.pt").exists()
    record = json.loads((enc_dir / "encoder-run.json").read_text())
    assert record["key"] == first["stages"]["encoder"]["key"] and record["engine"]["last_loss"] > 0
    metrics = json.loads(Path(first["metrics_json"]).read_text())["metrics"]
    r5 = metrics["retrieval_i2t_r5"]
    assert r5["value"] is not None and r5["ci"][0] <= r5["value"] <= r5["ci"][1]
    assert "rule_f1_micro_14" in metrics  # beside the report metrics
    train_dir = Path(first["stages"]["train"]["dir"])
    lin = json.loads((train_dir / "lineage.json").read_text())["encoder"]
    assert lin["encoder_key"] == record["key"] and lin["vision_path"] == str(
        (enc_dir / "open_clip").resolve()
    )
    config = json.loads((train_dir / "config.json").read_text())
    assert Path(config["vision_path"]) == enc_dir / "open_clip"

    again = pipeline(cfg)
    assert {s["status"] for s in again["stages"].values()} == {"reused"}


def test_engine_failure_is_one_error_naming_the_cause(tmp_path):
    """open_clip_train exiting non-zero becomes EncoderTrainingError with the engine's own message."""
    from schemas.encoder import EncoderConfig
    from tasks.encoder.prepare import tiny_open_clip_config
    from tasks.encoder.train import EncoderTrainingError, train_encoder

    init = tmp_path / "init"
    init.mkdir()
    cfg_json = tiny_open_clip_config()
    cfg_json["model_cfg"]["vision_cfg"]["timm_model_name"] = "no_such_timm_vit"
    (init / "open_clip_config.json").write_text(json.dumps(cfg_json))
    shards = _write_mixed_shards(tmp_path / "shards")
    with pytest.raises(EncoderTrainingError, match="no_such_timm_vit"):
        train_encoder(
            EncoderConfig(init=str(init), shards=shards, out=tmp_path / "enc", epochs=1, batch_size=4)
        )


def test_a_real_start_model_is_dispatched_to_the_gpu_pool_with_absolute_paths(tmp_path, monkeypatch):
    import prefect.deployments

    from flows.encoder import encoder
    from schemas.encoder import EncoderConfig

    init = tmp_path / "models" / "biomedclip"
    init.mkdir(parents=True)
    (init / "open_clip_config.json").write_text("{}")
    sent = {}

    class _Run:
        id, state_name = "run-id", "Completed"

    def fake_run_deployment(name, parameters, **kw):
        sent.update(name=name, **parameters)
        enc = Path(parameters["cfg"]["out"])  # what the GPU worker leaves on shared storage
        enc.mkdir(parents=True)
        (enc / "encoder-run.json").write_text(
            json.dumps({"open_clip_dir": str(enc / "open_clip"), "engine": {}, "data": {}})
        )
        return _Run()

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    monkeypatch.chdir(tmp_path)
    cfg = EncoderConfig(init="models/biomedclip", shards=Path("shards"), out=Path("enc"), nproc=8)
    out = encoder.fn(cfg, experiment="x")
    assert (
        out["dispatched"] == "encoder/encoder-gpu" and sent["name"] == "encoder/encoder-gpu" and sent["dispatch"] == "local"
    )
    assert sent["cfg"]["init"] == str(init) and sent["cfg"]["shards"] == str(tmp_path / "shards")
    assert sent["cfg"]["out"] == str(tmp_path / "enc") and sent["cfg"]["nproc"] == 8
