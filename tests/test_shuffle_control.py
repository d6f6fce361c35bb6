"""The shuffle control: training samples keep their reports but see another sample's image."""

from __future__ import annotations

import json

import pytest
import torch

from fixtures.train_shards import write_train_shards
from training.data import (
    Example,
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
    assert all(k != v for k, v in perm.items())  # no sample keeps its own image


def _studies(sizes: list[int], targets: int = 2) -> list[Example]:
    """Examples of studies with `sizes` samples each (e.g. PA + lateral), `targets` findings versions each."""
    out, i = [], 0
    for s, size in enumerate(sizes):
        for _ in range(size):
            out += [Example(i, t, f"5{s:07d}") for t in range(targets)]
            i += 1
    return out


def test_no_sample_gets_an_image_of_its_own_study():
    for sizes in ([1] * 9, [2, 1, 3, 1, 1, 2], [3, 3], [4, 1, 1, 1, 1]):
        examples = _studies(sizes)
        study = {e.index: e.study for e in examples}
        for seed in range(20):
            perm = shuffled_images(examples, seed)
            assert sorted(perm) == sorted(perm.values()) == sorted(study)
            assert all(study[k] != study[v] for k, v in perm.items()), (sizes, seed, perm)


def test_samples_without_a_study_id_never_keep_their_own_image():
    """A sample whose shard row has no study_id counts as a study of its own: it never keeps its image, and a
    study holding exactly half the samples still gets only other samples' images."""
    for sizes, loose in (([], 2), ([2], 2), ([3, 1], 4), ([1], 5)):
        examples = _studies(sizes)
        first = max((e.index for e in examples), default=-1) + 1
        examples += [Example(first + j, -1, None) for j in range(loose)]
        study = {e.index: e.study or f"none-{e.index}" for e in examples}
        for seed in range(20):
            perm = shuffled_images(examples, seed)
            assert sorted(perm) == sorted(perm.values()) == sorted(study)
            assert all(study[k] != study[v] for k, v in perm.items()), (sizes, loose, seed, perm)


def test_a_study_holding_most_samples_cannot_be_shuffled_and_says_so():
    from schemas.errors import UserError

    with pytest.raises(UserError, match="one study holds 3 of the 5 training samples"):
        shuffled_images(_studies([3, 1, 1]), seed=0)


def test_examples_carry_the_study_id_of_the_shard_json():
    """The shard contract's .json member is the manifest row, study_id included (schemas/manifest.py)."""
    class Fake:
        def __init__(self, metas):
            self.samples = [{".jpg": b"x", ".json": json.dumps(m).encode(), ".txt": b"f"} for m in metas]

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            return self.samples[i]

    metas = [{"study_id": "50000001", "targets": [{"findings": "a"}, {"findings": "b"}]},
             {"study_id": 50000001, "targets": [{"findings": "c"}]}, {"targets": []}]
    examples, _ = build_examples(Fake(metas), expand_targets=True)
    assert [(e.index, e.target, e.study) for e in examples] == [
        (0, 0, "50000001"), (0, 1, "50000001"), (1, 0, "50000001"), (2, -1, None)]


def test_shuffled_dataset_pairs_own_report_with_other_image(tmp_path):
    plain, examples = _dataset(tmp_path)
    perm = shuffled_images(examples, seed=0)
    shuffled, _ = _dataset(tmp_path, perm)
    by_sample = {e.index: i for i, e in enumerate(examples)}
    assert all(perm[e.index] != e.index for e in examples)
    for i in range(len(examples)):
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


def test_the_cached_example_list_keeps_the_study(tmp_path, monkeypatch):
    """A resumed run reads its examples from RUN/examples-train.json: the shuffle control must draw the same
    derangement from them as the first run did."""
    import training.run as run
    from schemas.train import default_config

    shards = write_train_shards(tmp_path / "shards", n=6, per_shard=3)
    cfg = default_config("tiny", shards, tmp_path / "run")
    built = [Example(i, -1, f"5000000{i // 2}") for i in range(6)]
    monkeypatch.setattr(run, "build_examples", lambda ds, expand: (built, {"examples": 6}))
    (tmp_path / "run").mkdir()
    _, first, _ = run.prepare_data(cfg, tmp_path / "run")
    monkeypatch.setattr(run, "build_examples", lambda ds, expand: pytest.fail("the cache was not used"))
    _, cached, _ = run.prepare_data(cfg, tmp_path / "run")
    assert cached == first == built
    assert shuffled_images(cached, 0) == shuffled_images(built, 0)
