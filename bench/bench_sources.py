"""Ingest throughput per source on its fixture layout: `python -m bench.bench_sources [--images N] [--size PX]`.

Loops over every registered adapter that has a fixture writer (FIXTURE_WRITERS below, extended by any
fixtures module that defines BENCH_FIXTURES = {label: (adapter name, writer(root, images, seed, size))}),
writes the fixture (no planted defects), then times `run_ingest` (discover + decode + preprocess + encode +
manifest) with one worker. Each source is timed as the best of N cold runs (empty output), reported as images/s and as a
ratio against the CheXpert 8-bit JPEG run in the same process. 16-bit PNG (PadChest) and JPEG 2000 DICOM
(BRAX/VinDr-CXR with jpeg2000=True) are separate rows. Sources whose fixtures have a fixed pixel size say so.
Prints a Markdown table; no assertions.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Writer = Callable[[Path, int, int, int], object]


def _chexpert(plus: bool) -> Writer:
    def write(root, n, seed, size):
        from fixtures.chexpert import write_chexpert

        return write_chexpert(root, patients=max(2, n // 2), seed=seed, size=size, plus=plus, quirks=False)

    return write


def _padchest(root, n, seed, size):
    from fixtures.padchest import write_padchest

    return write_padchest(root, images=n * 2, seed=seed, size=size, quirks=False)  # ~half are not frontal


def _cxr14(root, n, seed, size):
    from fixtures.chestxray14 import write_chestxray14

    return write_chestxray14(root, images=n, seed=seed, size=size, quirks=False)


def _openi(root, n, seed, size):
    from fixtures.openi import write_openi

    return write_openi(root, reports=n, seed=seed, size=size, quirks=False)


def _brax(j2k: bool) -> Writer:
    def write(root, n, seed, size):
        from fixtures.brax import write_brax

        return write_brax(root, patients=max(2, n // 2), seed=seed, jpeg2000=j2k, size=size)

    return write


def _vindr(j2k: bool) -> Writer:
    def write(root, n, seed, size):
        from fixtures.vindr_cxr import write_vindr_cxr

        return write_vindr_cxr(root, train=n, test=max(1, n // 4), seed=seed, jpeg2000=j2k, size=size)

    return write


def _candid(root, n, seed, size):
    from fixtures.candid_ptx import write_candid_ptx

    return write_candid_ptx(root, images=n, seed=seed, size=size)


def _mimic(root, n, seed, size):
    from fixtures.mimic_cxr import write_mimic_cxr

    return write_mimic_cxr(root, studies=max(2, n // 2), seed=seed, jpg=False, size="small", defects=False)


# label -> (adapter name, writer, what the pixels are). The first row is the reference.
FIXTURE_WRITERS: dict[str, tuple[str, Writer, str]] = {
    "chexpert": ("chexpert", _chexpert(False), "8-bit JPEG"),
    "chexpert-plus": ("chexpert-plus", _chexpert(True), "8-bit JPEG + report CSV join"),
    "padchest": ("padchest", _padchest, "16-bit PNG"),
    "chestxray14": ("chestxray14", _cxr14, "8-bit PNG (some RGBA)"),
    "openi": ("openi", _openi, "8-bit PNG + XML reports"),
    "mimic-cxr": ("mimic-cxr", _mimic, "DICOM (uncompressed, fixture 'small' size)"),
    "brax": ("brax", _brax(False), "DICOM, 12-bit"),
    "brax-j2k": ("brax", _brax(True), "JPEG 2000 DICOM, 12-bit"),
    "vindr-cxr": ("vindr-cxr", _vindr(False), "DICOM .dicom, 12/14-bit, LUTs"),
    "vindr-cxr-j2k": ("vindr-cxr", _vindr(True), "JPEG 2000 DICOM .dicom"),
    "candid-ptx": ("candid-ptx", _candid, "DICOM, 12-bit + report CSV"),
}


def writers() -> dict[str, tuple[str, Writer, str]]:
    """The table above plus BENCH_FIXTURES contributed by fixture modules, limited to registered adapters."""
    import fixtures
    from tasks.sources import adapters

    table = dict(FIXTURE_WRITERS)
    for info in pkgutil.iter_modules(fixtures.__path__):
        extra = getattr(importlib.import_module(f"fixtures.{info.name}"), "BENCH_FIXTURES", None)
        for label, (adapter, writer) in (extra or {}).items():
            table.setdefault(label, (adapter, writer, "fixture-defined"))
    known = adapters()
    return {k: v for k, v in table.items() if v[0] in known}


def source_pixels(disc) -> str:
    """Median source image size (rows x cols) read from headers, for context."""
    from PIL import Image

    dims = []
    for c in disc.candidates[:8]:
        try:
            if c.kind == "dicom":
                import pydicom

                ds = pydicom.dcmread(c.path, stop_before_pixels=True)
                dims.append((int(ds.Rows), int(ds.Columns)))
            else:
                with Image.open(c.path) as im:
                    dims.append((im.height, im.width))
        except Exception:  # a header we cannot read just leaves the column blank
            continue
    if not dims:
        return "?"
    h, w = np.median(np.array(dims), axis=0).astype(int)
    return f"{h}x{w}"


def bench_one(label: str, adapter: str, writer: Writer, images: int, size: int, seed: int, work: Path,
              repeats: int = 3) -> dict:
    from schemas.config import ImageConfig, IngestConfig
    from tasks.ingest import discover, run_ingest

    root, out = work / f"{label}-src", work / f"{label}-out"
    writer(root, images, seed, size)
    # Open-I's XML form states no view: under frontal_only it would keep nothing (docs/datasets.md, view policy)
    cfg = IngestConfig(source=adapter, root=root, out=out, workers=1, image=ImageConfig(size=min(size, 518)),
                       frontal_only=adapter != "openi")
    pixels = source_pixels(discover(cfg))
    times = []
    for _ in range(repeats):  # best of N cold runs: the first also pays imports and first-call setup
        t0 = time.perf_counter()
        summary = run_ingest(cfg)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(out, ignore_errors=True)
    elapsed = min(times)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "label": label, "found": summary["found"], "kept": summary["kept"], "seconds": elapsed,
        "images_per_s": summary["kept"] / elapsed if elapsed else float("nan"), "pixels": pixels,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48, help="about this many images per source")
    ap.add_argument("--repeats", type=int, default=3, help="cold runs per source; the best is reported")
    ap.add_argument("--size", type=int, default=512, help="source side in px where the fixture takes one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = ap.parse_args()
    table = writers()
    from tasks.sources import adapters

    missing = sorted(set(adapters()) - {v[0] for v in table.values()})
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        for label, (adapter, writer, what) in table.items():
            if args.only and label not in args.only:
                continue
            r = bench_one(label, adapter, writer, args.images, args.size, args.seed, Path(tmp), args.repeats)
            r["what"] = what
            results.append(r)
            print(f"# {label}: {r['kept']}/{r['found']} kept in {r['seconds']:.2f}s", flush=True)
    ref = next((r for r in results if r["label"] == "chexpert"), results[0] if results else None)
    print(f"\nsource px: fixture source image size (median rows x cols); output {min(args.size, 518)} px JPEG, "
          f"1 worker, cold output dir, best of {args.repeats} runs\n")
    print("| source | pixels | source px | found | kept | s | images/s | x chexpert JPEG |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["images_per_s"] / ref["images_per_s"] if ref and ref["images_per_s"] else float("nan")
        print(f"| {r['label']} | {r['what']} | {r['pixels']} | {r['found']} | {r['kept']} | {r['seconds']:.2f} | "
              f"{r['images_per_s']:.1f} | {ratio:.2f} |")
    if missing:
        print(f"\nno fixture writer (not benchmarked): {', '.join(missing)}")


if __name__ == "__main__":
    main()
