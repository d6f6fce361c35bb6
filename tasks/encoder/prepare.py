"""What cxrflow hands open_clip_train: the starting model directory and the training shard URLs.

Text: open_clip's WebDataset reader pairs member `K.jpg|png` (image) with `K.txt` (text). Our shards already
carry `K.txt` = the sample's primary findings, chosen by the shard stage's preference (rule-based report
sections, then an LLM version such as PadChest's translation, then the report written from labels for
label-only sources): that is the text policy of docs/encoder.md, so the shards are used as they are.

Sources: with `sources` unset every train shard is handed over by path (nothing copied). With a selection
(e.g. MIMIC-CXR only), the selected samples are copied into subset tars under the stage dir, member bytes
unchanged, since open_clip's reader cannot filter by a field of `K.json`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cxrio import atomic_write_json
from schemas.encoder import TINY
from schemas.shards import TAR_GROUP, TAR_MODE, TAR_MTIME, TAR_USER
from training.data import CLIP_MEAN, CLIP_STD, IMAGE_MEMBERS, iter_tar_samples, read_index
from training.openclip import TINY_TIMM_VIT, TINY_VIT_ARGS

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_pytorch_model.bin"
SUBSET_PER_SHARD = 10_000


def tiny_open_clip_config() -> dict:
    """BiomedCLIP's layout (timm ViT trunk, CLS token, linear projection) at the tiny LLaVA preset's shape,
    with open_clip's own small text transformer (its BPE tokenizer ships with the package)."""
    return {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {
                "timm_model_name": TINY_TIMM_VIT,
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": TINY_VIT_ARGS["img_size"],
            },
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        # the LLaVA image processor's normalization and geometry (training/data.py), so the encoder sees
        # during contrastive training what it will see inside LLaVA
        "preprocess_cfg": {
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def init_model_dir(init: str, out: Path) -> Path:
    """`tiny`: a config-only open_clip dir (random weights, seeded by the engine); else the given dir."""
    if init != TINY:
        return Path(init).resolve()
    d = out / "init-tiny"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / CONFIG, tiny_open_clip_config())
    return d.resolve()


@dataclass
class TrainingData:
    urls: list[str]
    samples: int
    by_source: dict[str, int] = field(default_factory=dict)
    excluded_by_source: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "shards": len(self.urls),
            "samples": self.samples,
            "samples_by_source": self.by_source,
            "excluded_by_source": self.excluded_by_source,
            "found": self.samples + sum(self.excluded_by_source.values()),
        }


def _add(tw: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
    info.uname, info.gname = TAR_USER, TAR_GROUP
    tw.addfile(info, io.BytesIO(data))


def training_data(shards: Path, sources: list[str] | None, out: Path, split: str = "train") -> TrainingData:
    """The shard URLs open_clip_train reads, and how many samples of which source they hold."""
    shardlist = read_index(shards, split)
    # absolute: the engine runs in the stage dir; and checked here, because open_clip's reader logs a missing
    # shard and keeps drawing (forever, with resampled shards) instead of failing
    missing = [s["url"] for s in shardlist if not Path(s["url"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) of {shards}/{split}.index.json not found, e.g. {missing[0]}"
        )
    if not sources:
        return TrainingData(
            [str(Path(s["url"]).resolve()) for s in shardlist], sum(s["nsamples"] for s in shardlist)
        )
    subset = out / "subset"
    if subset.exists():
        shutil.rmtree(subset)  # rebuilt whole: the stage dir is keyed by the selection already
    subset.mkdir(parents=True)
    keep, kept, excluded = set(sources), {}, {}
    urls: list[str] = []
    tw, n_in_shard = None, 0
    for s in shardlist:
        for key, members in iter_tar_samples(s["url"]):
            meta = json.loads(members["json"][1]) if "json" in members else {}
            src = str(meta.get("source", "unknown"))
            if src not in keep:
                excluded[src] = excluded.get(src, 0) + 1
                continue
            if tw is None or n_in_shard >= SUBSET_PER_SHARD:
                if tw is not None:
                    tw.close()
                urls.append(str((subset / f"{split}-{len(urls):06d}.tar").resolve()))
                tw, n_in_shard = tarfile.open(urls[-1], "w", format=tarfile.USTAR_FORMAT), 0
            for ext in (*IMAGE_MEMBERS, "txt", "json"):
                if ext in members:
                    _add(tw, f"{key}.{ext}", members[ext][1])
            kept[src] = kept.get(src, 0) + 1
            n_in_shard += 1
    if tw is not None:
        tw.close()
    if not urls:
        raise ValueError(
            f"encoder.sources {sources}: no {split} sample of these sources in {shards} "
            f"(sources there: {sorted(excluded)})"
        )
    return TrainingData(urls, sum(kept.values()), kept, excluded)
