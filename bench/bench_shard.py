"""Shard writing and read-back throughput, each beside a reference in the same process.

Write: `tasks.shard.write_shards` (planning, JSON/txt members, tar headers, md5 for the wids index,
rename) against two plain copies of the same image bytes: (1) read every image and append it to one file,
(2) copy every image file into a folder. All run warm (page cache), alternating, best of --repeats.
Read: samples/s through a torch DataLoader (2 workers) decoding every JPEG from the shards with
webdataset, against the same DataLoader decoding the same JPEGs from the individual files.

    python -m bench.bench_shard [--images 1500] [--size 518] [--max-samples 250] [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fixtures.shard_manifest import manifest_row, write_dataset
from schemas.shards import SPLITS, ShardConfig, ValidateConfig
from tasks.shard import write_shards
from tasks.shard_index import write_wids_index
from tasks.validate import ROW_INDEX, assemble_samples


def cxr_like_jpegs(n_distinct: int, size: int, seed: int = 0) -> list[bytes]:
    """Smooth body-like gradients + noise: JPEG q95 sizes similar to processed chest films."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n_distinct):
        base = 140 + 60 * np.sin(3 * x + rng.uniform(0, 3)) * np.cos(2 * y + rng.uniform(0, 3))
        img = np.clip(base + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def copy_files(paths: list[Path], dst: Path) -> None:
    """Reference 2: copy every image file into a folder (what one does without shards)."""
    dst.mkdir()
    for p in paths:
        shutil.copyfile(p, dst / p.name)


def plain_copy(paths: list[Path], dst: Path) -> int:
    """Reference 1: read every image and append its bytes to one file (the I/O a shard writer must do)."""
    total = 0
    with open(dst, "wb") as f:
        for p in paths:
            data = p.read_bytes()
            f.write(data)
            total += len(data)
    return total


def _decode(data: bytes):
    import torch

    img = Image.open(io.BytesIO(data)).convert("L")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


class _Files:
    """Map-style dataset over the individual image files (the read reference)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return _decode(Path(self.paths[i]).read_bytes())


def _tar_sample(sample):
    return _decode(sample["jpg"])


def read_rates(shard_urls: list[str], paths: list[Path], workers: int = 2) -> dict:
    import torch
    import webdataset as wds

    def run(ds, **kw):
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, **kw)
        t = time.perf_counter()
        n = sum(1 for _ in loader)
        return n, time.perf_counter() - t

    shards = wds.WebDataset(shard_urls, shardshuffle=False, empty_check=False).map(_tar_sample)
    n_wds, t_wds = run(shards)
    n_files, t_files = run(_Files([str(p) for p in paths]))
    return {
        "webdataset_samples": n_wds,
        "webdataset_samples_per_s": round(n_wds / t_wds, 1),
        "files_samples": n_files,
        "files_samples_per_s": round(n_files / t_files, 1),
        "ratio": round((n_wds / t_wds) / (n_files / t_files), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--max-samples", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="shard-writing threads (default min(4, cores))")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    try:
        jpegs = cxr_like_jpegs(64, args.size)
        rows = [manifest_row(i) for i in range(args.images)]
        for r in rows:
            r["width"] = r["height"] = args.size
        data = write_dataset(tmp / "data", rows, image=lambda i: jpegs[i % len(jpegs)])
        accepted = assemble_samples(data, ValidateConfig())[0].drop(ROW_INDEX)
        paths = [data / r["image_path"] for r in rows]
        image_bytes = sum(p.stat().st_size for p in paths)
        cfg = ShardConfig(max_samples=args.max_samples, workers=args.workers or min(4, os.cpu_count() or 1))

        plain_copy(paths, tmp / "warm.bin")  # warm the page cache for both contenders
        copy_t, files_t, shard_t = [], [], []
        for k in range(args.repeats):
            t = time.perf_counter()
            plain_copy(paths, tmp / f"copy{k}.bin")
            copy_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            copy_files(paths, tmp / f"files{k}")
            files_t.append(time.perf_counter() - t)
            out = tmp / f"shards{k}"
            t = time.perf_counter()
            infos = write_shards(accepted, data, out, cfg)
            shard_t.append(time.perf_counter() - t)
            (tmp / f"copy{k}.bin").unlink()
            shutil.rmtree(tmp / f"files{k}")
            if k < args.repeats - 1:
                shutil.rmtree(out)
        tar_bytes = sum(i.filesize for i in infos)
        for s in SPLITS:
            write_wids_index(out, s, infos)
        mb = image_bytes / 1e6
        result = {
            "images": args.images,
            "image_MB": round(mb, 1),
            "tar_MB": round(tar_bytes / 1e6, 1),
            "shards": len(infos),
            "workers": cfg.workers,
            "page_cache": "warm",
            "concat_copy_MB_per_s": round(mb / min(copy_t), 1),
            "file_copy_MB_per_s": round(mb / min(files_t), 1),
            "shard_MB_per_s": round(mb / min(shard_t), 1),
            "shard_vs_concat_copy": round(min(copy_t) / min(shard_t), 3),
            "shard_vs_file_copy": round(min(files_t) / min(shard_t), 3),
            "read": read_rates([str(out / i.name) for i in infos], paths),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
