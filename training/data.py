"""Shards -> training examples.

Reading: wids (webdataset's indexed reader) over the `{split}.index.json` shard list, so any sample can be
fetched by index. Order: a permutation that is a pure function of (seed, epoch); each optimizer step takes the
next global batch of it, cut into the same micro-batches at every world size, and rank r takes every world-th
micro-batch, so a step sees the one-process run's samples, each once (docs/training.md, multi-process). Every
rank gets exactly steps_per_epoch steps (the tail that does not fill a global batch is dropped). The data position is therefore just the optimizer step, and resuming at step s
replays nothing and skips nothing (see DataPlan.batches).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from cxrio import quiet_wids
from training.text import IGNORE, encode_example

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
IMAGE_MEMBERS = tuple(e[1:] for e in IMAGE_EXTS)  # the same as tar member extensions (iter_tar_samples)


def read_index(shards: Path, split: str) -> list[dict]:
    """The wids shard list of one split with absolute paths."""
    from schemas.shards import index_name

    index = shards / index_name(split)
    if not index.exists():
        raise FileNotFoundError(f"{index} not found: shards must follow the shard contract")
    spec = json.loads(index.read_text())
    out = []
    for s in spec.get("shardlist", []):
        if int(s["nsamples"]) == 0:
            continue
        url = Path(s["url"])
        out.append({"url": str(url if url.is_absolute() else shards / url), "nsamples": int(s["nsamples"])})
    if not out or sum(s["nsamples"] for s in out) == 0:
        raise ValueError(f"{index} lists no samples")
    return out


def iter_tar_samples(tar_path: str):
    """(key, {ext: (TarInfo, bytes)}) per sample of a shard tar read with tarfile, in tar order (members of a
    key are adjacent): the encoder stage copies whole members, the retrieval evaluation reads them."""
    with tarfile.open(tar_path) as tf:
        key, members = None, {}
        for info in tf:
            if not info.isfile():
                continue
            k, _, ext = info.name.partition(".")
            if k != key and key is not None:
                yield key, members
                members = {}
            key = k
            members[ext] = (info, tf.extractfile(info).read())
        if key is not None:
            yield key, members


def open_shards(shardlist: list[dict], cache_dir: Path):
    """wids dataset returning raw members. Local shards are opened through symlinks in cache_dir, so wids'
    lock files never land in the (possibly read-only) shards directory and nothing is copied."""
    import wids

    cache_dir.mkdir(parents=True, exist_ok=True)

    def localname(url: str) -> str:
        link = cache_dir / Path(url).name
        # Absolute target: a relative one would resolve against cache_dir and dangle.
        target = os.path.abspath(url)
        # Re-point a dangling link, or one to other shards of the same name (a relative --shards resolved
        # from another working directory on resume).
        if not link.exists() or (link.is_symlink() and os.readlink(link) != target):
            link.unlink(missing_ok=True)
            try:
                os.symlink(target, link)
            except FileExistsError:
                pass
        return str(link)

    with quiet_wids():
        return wids.ShardListDataset(shardlist, transformations=[], localname=localname, lru_size=8)


def _member(sample: dict, ext: str) -> bytes | None:
    v = sample.get(ext)
    if v is None:
        return None
    return v.getvalue() if hasattr(v, "getvalue") else bytes(v)


def sample_meta(sample: dict) -> dict:
    """K.json as the manifest has it (None for absent text: the LLaVA-Rad prompt tests `indication is None`)."""
    from schemas.sample_json import decode_sample_json

    raw = _member(sample, ".json")
    return decode_sample_json(json.loads(raw)) if raw else {}


@dataclass(frozen=True)
class Example:
    index: int  # sample index in the split
    target: int  # index into K.json "targets", or -1 for K.txt
    study: str | None = None  # the sample's study_id (the shuffle control never pairs a study with itself)


def build_examples(ds, expand_targets: bool) -> tuple[list[Example], dict]:
    """One example per sample (K.txt) or per findings version (K.json targets). Samples with no usable
    findings are counted, never silently lost: found = kept + dropped_by_reason."""
    examples: list[Example] = []
    dropped: dict[str, int] = {}
    for i in range(len(ds)):
        sample = ds[i]
        if not any(ext in sample for ext in IMAGE_EXTS):
            dropped["no image member"] = dropped.get("no image member", 0) + 1
            continue
        meta = sample_meta(sample)
        study = meta.get("study_id")
        study = None if study is None else str(study)
        if expand_targets:
            targets = meta.get("targets") or []
            idx = [t for t, tg in enumerate(targets) if (tg.get("findings") or "").strip()]
            if idx:
                examples += [Example(i, t, study) for t in idx]
                continue
        if (_member(sample, ".txt") or b"").strip():
            examples.append(Example(i, -1, study))
        else:
            dropped["empty findings"] = dropped.get("empty findings", 0) + 1
    summary = {"samples_found": len(ds), "examples": len(examples), "samples_dropped_by_reason": dropped}
    return examples, summary


def make_image_processor(size: int):
    """CLIP preprocessing: shortest side to `size` (bicubic), center crop, CLIP mean/std, RGB."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


class ImageTransform:
    """PIL image -> (3, size, size) tensor. `pad` pads to square first (black, like the film border), so the
    crop cuts nothing; `crop` is LLaVA-Rad's behaviour (cuts apices/angles of tall films)."""

    def __init__(self, size: int, resize: str = "crop"):
        self.size, self.resize = size, resize
        self.processor = make_image_processor(size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("L").convert("RGB")  # grayscale copied to 3 channels
        if self.resize == "pad":
            side = max(img.size)
            img = ImageOps.pad(img, (side, side), color=(0, 0, 0))
        return self.processor(images=[img], return_tensors="pt")["pixel_values"][0]


def shuffled_images(examples: list[Example], seed: int) -> dict[int, int]:
    """The shuffle control: sample index -> index of the sample whose image it is shown with. A fixed (by
    `seed`) permutation of the samples that have examples, in which no sample keeps its own image or gets an
    image of its own study (a lateral of the same study would still show its findings). Every target of a
    sample gets the same wrong image, and every image goes to exactly one other sample (so it is seen as often
    as before when samples have equally many targets).

    Construction: studies in random order, each study's samples contiguous and in random order, then every
    sample takes the image `k` places further round the cycle, k = the largest study's sample count. A study
    occupies at most k consecutive places, so the image k places on is another study's whenever k <= n - k."""
    study_of: dict[int, str] = {}
    for e in examples:
        study_of.setdefault(e.index, e.study if e.study is not None else f"\0sample-{e.index}")
    groups: dict[str, list[int]] = {}
    for s in sorted(study_of):
        groups.setdefault(study_of[s], []).append(s)
    n, k = len(study_of), max((len(g) for g in groups.values()), default=0)
    if n and 2 * k > n:
        from schemas.errors import UserError

        raise UserError(f"shuffle control: one study holds {k} of the {n} training samples, so not every "
                        "sample can get another study's image; the split needs more studies")
    g = torch.Generator().manual_seed(seed * 7_919 + 17)
    names = sorted(groups)
    order = []
    for j in torch.randperm(len(names), generator=g).tolist():
        members = groups[names[j]]
        order += [members[m] for m in torch.randperm(len(members), generator=g).tolist()]
    return {order[i]: order[(i + k) % n] for i in range(n)}


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, ds, examples: list[Example], tok, stage: int, transform: ImageTransform,
                 n_image_tokens: int, max_length: int, prompt_format: str = "tiny",
                 image_of: dict[int, int] | None = None):
        """`image_of`: sample index -> the sample whose image to use (the shuffle control); None = its own."""
        self.ds, self.examples, self.tok, self.stage = ds, examples, tok, stage
        self.prompt_format = prompt_format
        self.transform, self.n_image_tokens, self.max_length = transform, n_image_tokens, max_length
        self.image_of = image_of
        # Decoded+preprocessed pixels and token ids are pure functions of the index: keep them for the next
        # epoch (at tiny size the per-sample data path costs more than the step). Bounded in bytes, so a large
        # or high-resolution set caches only its first items.
        self._cache: dict[int, dict] = {}
        self._cache_left = self.CACHE_BYTES

    CACHE_BYTES = 256 * 2**20

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        item = self._load(i)
        size = item["pixel_values"].numel() * item["pixel_values"].element_size()
        if size <= self._cache_left:
            self._cache[i] = item
            self._cache_left -= size
        return item

    def _load(self, i: int) -> dict:
        ex = self.examples[i]
        sample = self.ds[ex.index]
        meta = sample_meta(sample)
        pictured = self.ds[self.image_of[ex.index]] if self.image_of is not None else sample
        raw = next(_member(pictured, e) for e in IMAGE_EXTS if e in pictured)
        with Image.open(io.BytesIO(raw)) as img:
            pixels = self.transform(img)
        if ex.target >= 0:
            findings = meta["targets"][ex.target]["findings"]
        else:
            findings = _member(sample, ".txt").decode("utf-8")
        enc = encode_example(self.tok, self.stage, findings, meta.get("indication"), self.n_image_tokens,
                             self.max_length, self.prompt_format)
        return {"pixel_values": pixels, "input_ids": enc.input_ids, "labels": enc.labels}


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right padding for training (labels -100 on padding)."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for r, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[r, :k] = torch.tensor(b["input_ids"])
        labels[r, :k] = torch.tensor(b["labels"])
        mask[r, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pixel_values": torch.stack([b["pixel_values"] for b in batch])}


@dataclass(frozen=True)
class DataPlan:
    """Sample order as a pure function of (seed, epoch, step)."""

    n_examples: int
    micro_batch: int
    accum: int
    world: int
    rank: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.n_examples // (self.micro_batch * self.accum * self.world)

    def batches(self, epoch: int, start_step: int = 0) -> list[list[int]]:
        """This rank's micro-batches (example indices) of `epoch`, from optimizer step `start_step` on."""
        # Own sampler rather than DistributedSampler: it must start mid-epoch at an exact step.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_examples, generator=g).tolist()
        per_step = self.micro_batch * self.accum * self.world
        out = []
        for step in range(start_step, self.steps_per_epoch):
            chunk = order[step * per_step:(step + 1) * per_step]
            # The step's micro-batches are the same for every world size (consecutive runs of the order);
            # rank r takes every world-th one, so the averaged gradient is the one-process run's.
            micro = [chunk[m:m + self.micro_batch] for m in range(0, per_step, self.micro_batch)]
            out += micro[self.rank::self.world]
        return out
