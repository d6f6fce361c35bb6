"""Per input kind, each against its own floor in the same run: `python -m bench.bench_kinds [--films 4]`.

Kinds: uncompressed DICOM, RLE Lossless, JPEG 2000 Lossless, JPEG-LS Lossless, JPEG baseline DICOM (8-bit),
JPG file (8-bit), 16-bit PNG; every film 2544x3056 (MIMIC-CXR size), output 518 px JPEG q95.
Per film, each measure's fastest of --repeats tries, measures alternating film by film so load from other
processes biases none; each try is timed twice, wall clock and the CPU time of the measuring thread
(`time.thread_time`: user + system, so page-cache reads and file writes count). On a shared machine the wall
time moves with other processes' load and the CPU time much less; both ratios are printed. cv2 runs one thread
(tasks/images.py), so all the work is the measuring thread's. Output files are removed between tries, untimed.
  read        the file's bytes (page cache warm)
  full        full-resolution decode alone (pydicom dcmread + pixel_array with pydicom's own plugin choice;
              Pillow open + load for rasters)
  floor       the decode cxrflow does, alone: full resolution through the plugin cxrflow prefers, or the
              reduced-resolution decode where cxrflow uses one (JPEG 2000: OpenJPEG reduce; JPEG: libjpeg
              draft), frame extraction included
  cxrflow     the engine's whole per-image work (tasks.ingest.process_candidate: source sha256 of the file
              mapped once for decoding, decode, area reduction, LUT, bicubic, JPEG encode, image + sidecar
              write, manifest row), on a root without a SHA256SUMS.txt
  listed      the same with the film listed in the root's SHA256SUMS.txt, as PhysioNet releases are
              (tasks/source_hashes.py: the listed sha256 is the content address; ~1 in 64 films is verified)
Then the default fixture mix (MIMIC-CXR fixture at film size: 6 of 8 uncompressed, 1 RLE, 1 JPEG 2000) as a
whole ingest (run_ingest) on 2 workers against the naive single-process script, both marginal: the rate
between a small and a large run, so start-up costs cancel.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import pixel_array

from bench.bench_ingest import naive
from cxrio import sha256_file
from fixtures.dicom import SIZES, DXSpec, picture, uid, write_dx, write_encoded_dx
from schemas.config import ImageConfig, IngestConfig
from tasks.images import (
    first_frame,
    j2k_stored_values,
    jpeg_stored_values,
    power_of_two_scale,
    preferred_plugin,
    preprocess_params,
    process,
)
from tasks.ingest import BatchResult, process_candidate, run_ingest, worker_context
from tasks.source_hashes import SourceHasher
from tasks.sources.base import Candidate

CFG = ImageConfig()
KINDS = ["uncompressed", "rle", "jpeg2000", "jpeg-ls", "jpeg-baseline-dicom", "jpg", "png16"]


def write_film(path: Path, kind: str, seed: int) -> Path:
    rows, cols = SIZES["full"]
    pic = picture(rows, cols, seed=seed)
    ids = dict(
        patient_id="10000001", study_uid=uid(seed, "st"), series_uid=uid(seed, "se"), sop_uid=uid(seed, "sop")
    )
    ts = {
        "uncompressed": "1.2.840.10008.1.2.1",
        "rle": "1.2.840.10008.1.2.5",
        "jpeg2000": "1.2.840.10008.1.2.4.90",
    }
    if kind in ts:
        write_dx(path, pic, DXSpec(bits_stored=12, transfer_syntax=ts[kind]), **ids)
    elif kind == "jpeg-ls":
        write_encoded_dx(path, pic, DXSpec(bits_stored=12), "jpeg-ls", **ids)
    elif kind == "jpeg-baseline-dicom":
        write_encoded_dx(path, pic, DXSpec(), "jpeg-baseline", **ids)
    elif kind == "jpg":
        Image.fromarray(np.rint(pic * 255).astype(np.uint8)).save(path, quality=95)
    else:
        Image.fromarray(np.rint(pic * 65535).astype(np.uint16)).save(path)
    return path


def full_decode(path: Path, kind: str) -> object:
    if path.suffix == ".dcm":
        return pydicom.dcmread(path).pixel_array
    with Image.open(path) as im:
        im.load()
        return np.asarray(im)


def floor_decode(path: Path, kind: str) -> object:
    """The decode cxrflow itself does for this kind (reduced where it reduces)."""
    if kind == "jpeg2000":
        ds = pydicom.dcmread(path)
        scale = power_of_two_scale(int(ds.Rows), int(ds.Columns), CFG)
        return j2k_stored_values(ds, first_frame(ds), scale.bit_length() - 1)
    if kind == "jpeg-baseline-dicom":
        ds = pydicom.dcmread(path)
        return jpeg_stored_values(
            first_frame(ds), min(8, power_of_two_scale(int(ds.Rows), int(ds.Columns), CFG))
        )
    if kind == "jpg":
        with Image.open(path) as im:
            scale = min(8, power_of_two_scale(im.height, im.width, CFG))
            im.draft("L", (-(-im.width // scale), -(-im.height // scale)))
            im.load()
            return np.asarray(im)
    if path.suffix == ".dcm":  # the plugin cxrflow asks pydicom for (CharLS for JPEG-LS, C for RLE)
        ds = pydicom.dcmread(path)
        plugin = preferred_plugin(ds)
        return pixel_array(ds, decoding_plugin=plugin) if plugin else ds.pixel_array
    return full_decode(path, kind)


def engine(out: Path, listed: bool = False):
    cfg = IngestConfig(source="bench", root=out, out=out, image=CFG)
    params = preprocess_params(CFG)
    sums: dict[str, str] = {}

    def run(path: Path, kind: str) -> int:
        c = Candidate(
            source="bench",
            path=path,
            rel_path=path.name,
            image_id=path.stem,
            subject_id="1",
            study_id="1",
            split="train",
            kind="dicom" if path.suffix == ".dcm" else path.suffix[1:],
        )
        if listed and c.rel_path not in sums:  # the release's list, read before the clock (it is a lookup)
            sums[c.rel_path] = sha256_file(path)
        res = BatchResult()
        process_candidate(c, cfg, params, SourceHasher({}, sums, sums_mtime_ns=time.time_ns()), res)
        assert res.decoded == 1, res.quarantined
        return 1

    # Cold every time (no reuse), removed after each try outside the clock: deleting outputs is not the
    # engine's work (it was timed before, ~0.4-2 ms of ext4 unlinks per try). Each try then also pays the
    # two mkdirs of images/<xx>/, which a long run pays only for its first ~256 images.
    run.cleanup = lambda: shutil.rmtree(out / "images", ignore_errors=True)
    return run


def exact_error(films: list[tuple[Path, str]]) -> tuple[float, float, int] | None:
    """Output grey-level difference, reduced-resolution decode vs `exact` (full decode + area reduction):
    (mean |d|, 99th percentile |d|, max |d|) over all output pixels; None where the kind has no reduced path."""
    diffs = []
    for path, _ in films:
        kind = "dicom" if path.suffix == ".dcm" else path.suffix[1:]
        fast = process(path, kind, ImageConfig(format="png"))
        if not ("reduce" in fast[3] or "draft" in fast[3]):
            return None
        exact = process(path, kind, ImageConfig(format="png", exact=True))
        a, b = (np.asarray(Image.open(io.BytesIO(x[0])), dtype=np.int16) for x in (fast, exact))
        diffs.append(np.abs(a - b).ravel())
    d = np.concatenate(diffs)
    return float(d.mean()), float(np.percentile(d, 99)), int(d.max())


def per_film(fns: dict, films: list[tuple[Path, str]], repeats: int) -> dict[str, dict[str, float]]:
    """{"wall": {measure: seconds}, "cpu": {...}} per film: each film's fastest of `repeats` tries (wall and
    CPU minima taken separately), averaged over films. Measures alternate film by film; a measure's
    `cleanup` attribute, if any, runs after each try outside the clock."""
    for fn in fns.values():  # warm page cache and imports
        for film in films[:2]:
            fn(*film)
            getattr(fn, "cleanup", lambda: None)()
    best = {clock: {name: [float("inf")] * len(films) for name in fns} for clock in ("wall", "cpu")}
    for _ in range(repeats):
        for i, film in enumerate(films):
            for name, fn in fns.items():
                cpu, wall = time.thread_time(), time.perf_counter()
                fn(*film)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                getattr(fn, "cleanup", lambda: None)()
                best["wall"][name][i] = min(best["wall"][name][i], wall)
                best["cpu"][name][i] = min(best["cpu"][name][i], cpu)
    return {clock: {name: sum(v) / len(v) for name, v in by.items()} for clock, by in best.items()}


def mix_marginal(tmp: Path, small: int, large: int) -> dict:
    from fixtures.mimic_cxr import write_mimic_cxr

    root = tmp / "mix"
    write_mimic_cxr(
        root, studies=-(-large * 2 // 3) + 1, seed=0, size="full", defects=False
    )  # ~1.5 films a study
    files = sorted(root.rglob("*.dcm"))
    # The pool's fork server starts once per process, like the imports, which neither side pays in the timed
    # runs; the CLI starts it before discovery. Warm it here, or only the larger (pooled) run would pay it.
    with ProcessPoolExecutor(1, mp_context=worker_context()) as pool:
        pool.submit(int).result()
    out = {}
    for n in (small, large):
        t0 = time.perf_counter()
        for p in files[:n]:
            naive(p)
        out[("naive", n)] = time.perf_counter() - t0
        cfg = IngestConfig(root=root, out=tmp / f"o{n}", workers=2, limit=n, frontal_only=False, image=CFG)
        t0 = time.perf_counter()
        s = run_ingest(cfg)
        out[("cxrflow", n)] = time.perf_counter() - t0
        assert s["decoded"] == n, s
        shutil.rmtree(tmp / f"o{n}")
    rate = {k: (large - small) / (out[(k, large)] - out[(k, small)]) for k in ("naive", "cxrflow")}
    return {"times": out, "rate": rate, "n": (small, large)}


def steady_allocator() -> bool:
    """Every measure allocates from warm memory, whatever ran before it. pydicom's floor allocates two 15.5 MB
    buffers per uncompressed film; glibc either keeps such memory for reuse or hands it back to the kernel
    (and faults it in again, zeroed, next time) depending on what was freed before: its mmap threshold rises
    with the largest chunk freed so far. The same floor then measured 4-5 or 12-13 ms by what the other
    measures of the process had allocated (an engine that maps films instead of reading them left the
    threshold low). Fixed here: buffers up to 32 MB (glibc's most) from the heap, never trimmed, which is the
    floor's fast case. False where glibc's mallopt is not there (the figures may then carry that noise)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--films", type=int, default=4, help="films per kind")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=KINDS)
    ap.add_argument(
        "--mix",
        type=int,
        nargs=2,
        default=(48, 144),
        metavar=("SMALL", "LARGE"),
        # both at least two chunks: a one-chunk run is processed inline, not pooled (tasks.ingest.plan_chunks)
        help="images of the two fixture-mix runs, each at least 2 chunks (0 0: skip)",
    )
    args = ap.parse_args()
    steady = steady_allocator()
    with tempfile.TemporaryDirectory(prefix="bench-kinds-") as tmp:
        tmp = Path(tmp)
        rows = []
        for kind in args.kinds:
            ext = {"jpg": ".jpg", "png16": ".png"}.get(kind, ".dcm")
            films = [(write_film(tmp / f"{kind}-{i}{ext}", kind, i), kind) for i in range(args.films)]
            t = per_film(
                {
                    "read": lambda p, k: p.read_bytes(),
                    "full": full_decode,
                    "floor": floor_decode,
                    "cxrflow": engine(tmp / "out"),
                    "listed": engine(tmp / "out-listed", listed=True),
                },
                films,
                args.repeats,
            )
            rows.append((kind, films[0][0].stat().st_size, t, exact_error(films)))
            print(f"# {kind}: " + "; ".join(
                f"{clock} " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in by.items()) for clock, by in t.items()
            ), flush=True)
        print(
            f"\n{args.films} films per kind, 2544x3056 -> 518 px JPEG q95; fastest of {args.repeats} per film; "
            "ms wall (CPU time of the measuring thread); allocator "
            + ("steady (glibc mallopt: buffers <= 32 MB from the heap, never trimmed)" if steady else
               "NOT steady (no glibc mallopt): the uncompressed floor may move 3x with allocation history")
            + "\n"
        )
        print(
            "| kind | file MB | read ms | full decode ms | floor ms (decode cxrflow does) | cxrflow ms | listed ms | "
            "cxrflow / floor wall (CPU) | listed / floor wall (CPU) | cxrflow / full decode wall (CPU) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for kind, size, t, _ in rows:
            w, c = t["wall"], t["cpu"]
            ms = {k: f"{w[k] * 1e3:.1f} ({c[k] * 1e3:.1f})" for k in w}
            ratio = {k: f"{w[k] / w[ref]:.2f} ({c[k] / c[ref]:.2f})" for k, ref in
                     (("cxrflow", "floor"), ("listed", "floor"))}
            full = f"{w['cxrflow'] / w['full']:.2f} ({c['cxrflow'] / c['full']:.2f})"
            print(
                f"| {kind} | {size / 1e6:.1f} | {ms['read']} | {ms['full']} | {ms['floor']} | {ms['cxrflow']} | "
                f"{ms['listed']} | {ratio['cxrflow']} | **{ratio['listed']}** | {full} |"
            )
        print("\nissue 28 target: every kind <= 1.5x its floor (`listed`: the film in the release's SHA256SUMS.txt)")
        print("\nReduced-resolution decode vs `exact` (full decode + area reduction), output grey levels:\n")
        print("| kind | mean abs diff | 99th percentile | max |")
        print("|---|---|---|---|")
        for kind, _, _, err in rows:
            if err:
                print(f"| {kind} | {err[0]:.2f} | {err[1]:.0f} | {err[2]} |")
        if args.mix[1] > args.mix[0] > 0:
            m = mix_marginal(tmp, *args.mix)
            small, large = m["n"]
            print(
                f"\ndefault fixture mix (MIMIC-CXR fixture, film size), marginal images/s between {small} and "
                f"{large} images: naive single process {m['rate']['naive']:.2f}, cxrflow run_ingest on 2 workers "
                f"{m['rate']['cxrflow']:.2f} -> {m['rate']['cxrflow'] / m['rate']['naive']:.2f}x (target >= 4x)"
            )
            print("raw seconds:", {f"{k[0]}@{k[1]}": round(v, 2) for k, v in m["times"].items()})


if __name__ == "__main__":
    main()
