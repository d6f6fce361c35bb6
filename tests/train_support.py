"""Synthetic shards in exactly the shard contract (BRIEF.md) so training tests do not depend on issue 4."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

_PHRASES = [
    "The lungs are clear.",
    "There is no pleural effusion or pneumothorax.",
    "The heart size is normal.",
    "Mild cardiomegaly is present.",
    "There is a small left pleural effusion.",
    "Patchy opacity at the right base may reflect atelectasis.",
    "No focal consolidation is seen.",
    "The mediastinal contours are unremarkable.",
]


def write_train_shards(root: Path, n: int = 12, per_shard: int = 5, seed: int = 0, size: int = 40,
                       split: str = "train") -> Path:
    """Write `n` samples as {split}-NNNNNN.tar + {split}.index.json (wids) under root; returns root."""
    import webdataset as wds

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    shardlist = []
    for s, start in enumerate(range(0, n, per_shard)):
        name = f"{split}-{s:06d}.tar"
        count = 0
        with wds.TarWriter(str(root / name)) as tw:
            for i in range(start, min(n, start + per_shard)):
                key = f"s{i:05d}"
                h, w = size + rng.randint(0, 8), size  # tall films, like real ones
                arr = np.random.default_rng(seed * 1000 + i).integers(0, 255, (h, w), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr, "L").save(buf, format="PNG" if i % 3 == 0 else "JPEG")
                findings = " ".join(rng.sample(_PHRASES, 2))
                targets = [{"method": "rule-based", "findings": findings}]
                if i % 2 == 0:  # some samples also have an LLM-structured version
                    llm = findings.replace("There is", "Has")
                    targets.append({"method": "openai:gpt-4o", "findings": llm})
                meta = {"key": key, "split": split, "view": "PA", "targets": targets,
                        "indication": "Cough and fever." if i % 2 else None}
                ext = "png" if i % 3 == 0 else "jpg"
                tw.write({"__key__": key, ext: buf.getvalue(), "txt": findings, "json": json.dumps(meta)})
                count += 1
        shardlist.append({"url": name, "nsamples": count})
    (root / f"{split}.index.json").write_text(
        json.dumps({"wids_version": 1, "name": f"synthetic-{split}", "shardlist": shardlist})
    )
    return root
