"""The shuffle control: training samples keep their reports but see another sample's image."""

from __future__ import annotations

import torch

from fixtures.train_shards import write_train_shards
from training.data import (
    ExampleDataset,
    ImageTransform,
    build_examples,
    open_shards,
    read_index,
    shuffled_images,
)
from training.text import build_tiny_tokenizer


def _dataset(tmp_path, image_of=None):
    shards = write_train_shards(tmp_path / "shards", n=10, per_shard=4)
    ds = open_shards(read_index(shards, "train"), tmp_path / "wids")
    examples, _ = build_examples(ds, expand_targets=False)
    data = ExampleDataset(ds, examples, build_tiny_tokenizer(), 2, ImageTransform(32), 4, 256, image_of=image_of)
    return data, examples


def test_permutation_is_fixed_by_seed_and_covers_every_image_once(tmp_path):
    _, examples = _dataset(tmp_path)
    perm = shuffled_images(examples, seed=0)
    assert perm == shuffled_images(examples, seed=0)
    assert perm != shuffled_images(examples, seed=1)
    samples = sorted({e.index for e in examples})
    assert sorted(perm) == samples and sorted(perm.values()) == samples  # a permutation: each image used once
    assert sum(k != v for k, v in perm.items()) >= len(samples) // 2


def test_shuffled_dataset_pairs_own_report_with_other_image(tmp_path):
    plain, examples = _dataset(tmp_path)
    perm = shuffled_images(examples, seed=0)
    shuffled, _ = _dataset(tmp_path, perm)
    by_sample = {e.index: i for i, e in enumerate(examples)}
    moved = [i for i, e in enumerate(examples) if perm[e.index] != e.index]
    assert moved
    for i in moved:
        a, b = plain[i], shuffled[i]
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]  # the report stays
        other = plain[by_sample[perm[examples[i].index]]]
        assert torch.equal(b["pixel_values"], other["pixel_values"])  # the image is the other sample's
        assert not torch.equal(a["pixel_values"], b["pixel_values"])


def test_shuffle_option_changes_the_training_fingerprint(tmp_path):
    from schemas.pipeline import PipelineConfig
    from schemas.train import default_config

    a = default_config("tiny", tmp_path, tmp_path / "a")
    b = default_config("tiny", tmp_path, tmp_path / "b", shuffle_images=True)
    assert a.fingerprint() != b.fingerprint()
    base = {"data": {"root": str(tmp_path)}}
    plain = PipelineConfig.model_validate(base)
    control = PipelineConfig.model_validate({**base, "train": {"shuffle_images": True}})
    ha, hb = plain.stage_hashes(), control.stage_hashes()
    assert ha["shard"] == hb["shard"] and ha["train"] != hb["train"]  # the data stages are shared


def test_stage_configs_pass_the_option_to_training(tmp_path):
    from schemas.pipeline import PipelineConfig
    from tasks.plan import stage_configs

    cfg = PipelineConfig.model_validate({"data": {"root": str(tmp_path)}, "train": {"shuffle_images": True}})
    assert stage_configs(cfg).train.shuffle_images is True
