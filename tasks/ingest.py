"""The ingest engine: a source's Discovery -> processed images, manifest, quarantine and reconciliation.

Work is content-addressed: an image's output lives at images/<key[:2]>/<key>.<ext>, where the key hashes the
source file's sha256 and the preprocessing parameters. A rerun on unchanged input and parameters finds
every output in place and decodes nothing; changing a parameter that alters pixels changes the key, so only
the images it affects are redone (report or filter changes redo no pixel work at all).

Plain functions, no Prefect. The plan (`ingest`: discover -> chunks -> process -> assemble) is written once
and run by a `Runner`: `PoolRunner` here (a local process pool: CLI without a server, tests, benchmarks) or
flows/ingest.py's Prefect runner (a task run per step and per chunk).

Grain (issue 16): the candidates are cut into a few large chunks (about CHUNKS_PER_WORKER per worker, at most
MAX_CHUNK images), one task run each, so orchestration costs the same at 1K and 700K images. A chunk reads
only its own entries of the source-hash cache, writes its manifest rows and hashes to part files and returns
counts; progress travels through small files in the run folder, not through the orchestrator.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxrio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
    sha256_bytes,
    sha256_json,
)
from schemas.config import IngestConfig
from schemas.errors import UserError
from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.manifest import DROP_SCHEMA, MANIFEST_SCHEMA, REPORT_SECTIONS, table_from_rows
from tasks import __version__
from tasks.candidates import Spill, SpillWriter, duplicated_keys, split_by_keys, tail_drops
from tasks.images import ALLOW_BURNED_IN, ImageDecodeError, extension, preprocess_params, process
from tasks.lock import holds_output_lock
from tasks.parquet_merge import merge_sorted, write_sorted_part
from tasks.reports.sections import PARSER_METHOD, parse_report
from tasks.source_hashes import (
    ChecksumMismatch,
    SourceHasher,
    hash_table,
    prepare_sums,
    save_hash_cache,
)
from tasks.sources import get_adapter
from tasks.sources.base import (
    Candidate,
    Discovery,
    Drop,
    SourceLayoutError,
    in_batches,
    quarantine_key_collisions,
    quarantine_unusable,
    reason_category,
    view_filter,
    view_notes,
)

RUNS = Path(".cache") / "runs"  # per-run part files and progress counters, removed by assemble
CHUNKS_PER_WORKER = 4  # enough to balance cheap and costly films across workers
MAX_CHUNK = 4096  # images per task run: bounds a worker's memory and the work a failed chunk repeats
PROGRESS_EVERY_S = 0.5
T = TypeVar("T")


@dataclass
class BatchResult:
    rows: list[dict] = field(default_factory=list)
    quarantined: list[Drop] = field(default_factory=list)
    decoded: int = 0
    reused: int = 0


# ------------------------------------------------------------------------------------------ discovery


def discover(cfg: IngestConfig) -> Discovery:
    """Check the layout and the output folder (fails before any work, naming what is wrong), then find and
    join inputs: every candidate in `candidates` (tests, tools). The ingest plan keeps them spilled instead
    (`discover_spilled`); this is the same code, read back whole."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cxrflow-discover-") as tmp:
        discovery = discover_spilled(cfg, Path(tmp))
        discovery.candidates, discovery.spill = discovery.spill.read(), None
    return discovery


def discover_spilled(cfg: IngestConfig, run_dir: Path | None = None) -> Discovery:
    """discover() with the candidates spilled to run_dir/candidates.parquet in bounded batches
    (tasks/candidates.py) as `discovery.spill`; run_dir defaults to a new run folder (new_run_dir)."""
    from tasks.preflight import check_out_dir

    check_out_dir(cfg.out, "out")
    adapter = get_adapter(cfg.source)
    adapter.check(Path(cfg.root), cfg.options or None)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(Path(cfg.out))
    writer = SpillWriter(run_dir / "candidates.parquet")
    unknown = total = 0
    try:
        if hasattr(adapter, "discover_batches"):
            discovery, batches = adapter.discover_batches(cfg)
        else:  # an adapter with discover() alone
            discovery, batches = in_batches(adapter.discover(cfg))
        for found in batches:
            # control characters, empty-key ids, absurd reports: quarantine rows, never crashes
            batch = quarantine_unusable(discovery, found)
            unknown += sum(c.view is None for c in batch)  # one meaning of frontal_only for every source
            total += len(batch)
            writer.write(view_filter(discovery, batch, cfg.frontal_only))
    except OSError as exc:  # adapters quarantine what they expect; anything else is one line naming the path
        raise SourceLayoutError(
            f"{cfg.source}: cannot read {exc.filename or cfg.root}: {exc.strerror or exc}"
        ) from exc
    spill = writer.close()
    view_notes(discovery, unknown, total, len(spill), cfg.frontal_only)
    # The release's SHA256SUMS.txt, parsed once per version into the output's cache for the chunks to read.
    discovery.notes["sums_file"] = prepare_sums(Path(cfg.root), Path(cfg.out))
    discovery.spill = _quarantine_collisions(discovery, spill, run_dir)
    if cfg.annotations:  # the LLaVA-Rad texts join on the whole list (an ablation's input, not archive scale)
        from tasks.reports.annotations import join_annotations

        discovery.candidates = discovery.spill.read()
        discovery.annotations = join_annotations(discovery, cfg.annotations)
        writer = SpillWriter(run_dir / "candidates-annotated.parquet")
        writer.write(discovery.candidates)
        discovery.candidates, discovery.spill = [], writer.close()
    if cfg.limit is not None and len(discovery.spill) > cfg.limit:
        reason = f"over the source cap: limit={cfg.limit}"
        discovery.filtered += tail_drops(discovery.spill, cfg.limit, "discover", reason)
        discovery.spill = Spill(discovery.spill.path, cfg.limit)
    return discovery


def _quarantine_collisions(discovery: Discovery, spill: Spill, run_dir: Path) -> Spill:
    """Keys are unique, or the inputs are quarantined (never merged): base.quarantine_key_collisions on the
    colliding rows, the spill rewritten without them."""
    keys = duplicated_keys(spill)
    if not keys:
        return spill
    spill, clashing = split_by_keys(spill, keys, run_dir / "candidates-unique.parquet")
    clashes = Discovery(candidates=clashing)
    quarantine_key_collisions(clashes)
    discovery.quarantined += clashes.quarantined
    return spill


def plan_chunks(n: int, workers: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of about equal size: CHUNKS_PER_WORKER per worker, none under `batch_size`
    images (unless there are fewer) nor over MAX_CHUNK."""
    if n == 0:
        return []
    count = min(workers * CHUNKS_PER_WORKER, -(-n // batch_size))
    count = max(count, -(-n // MAX_CHUNK), 1)
    edges = [round(i * n / count) for i in range(count + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


# ------------------------------------------------------------------------------------------ per image


def _report_fields(c: Candidate) -> dict:
    fields: dict = {
        "report_text": c.report_text,
        "report_origin": c.report_origin,
        "report_method": None,
        "has_addendum": None,
        "report_language": c.report_language,
        "source_labels": c.source_labels,
        **dict.fromkeys(REPORT_SECTIONS),
    }
    if c.sections is not None:
        fields.update({s: c.sections.get(s) for s in REPORT_SECTIONS})
        fields["report_method"] = c.report_method or "source-sections"
    elif c.report_origin == "report" and c.report_text:
        # MIMIC-CXR study ids select the reference parser's per-study corrections; other sources have none.
        parsed = parse_report(c.report_text, study_id=c.study_id if c.source == "mimic-cxr" else None)
        fields.update(parsed.sections)
        fields["has_addendum"] = parsed.has_addendum
        fields["report_method"] = PARSER_METHOD
    return fields


def process_candidate(
    c: Candidate, cfg: IngestConfig, params: str, hasher: SourceHasher, result: BatchResult
) -> None:
    out = Path(cfg.out)
    try:
        source_sha, data = hasher.resolve(c.path, c.rel_path)
    except OSError as exc:
        result.quarantined.append(
            Drop(c.source, c.rel_path, "read", f"unreadable file: {exc.strerror}", c.image_key)
        )
        return
    except ChecksumMismatch as exc:
        result.quarantined.append(Drop(c.source, c.rel_path, "read", str(exc), c.image_key))
        return
    key = sha256_json([source_sha, params])
    rel_image = f"images/{key[:2]}/{key}.{extension(cfg.image)}"
    sidecar = out / f"images/{key[:2]}/{key}.json"
    if sidecar.exists() and (out / rel_image).exists():
        meta = read_json(sidecar)
        result.reused += 1
    else:
        try:
            encoded, width, height, decoder = process(
                c.path, c.kind, cfg.image, c.expected_size, bool(cfg.options.get(ALLOW_BURNED_IN)), data=data
            )
        except ImageDecodeError as exc:
            result.quarantined.append(Drop(c.source, c.rel_path, "decode", str(exc), c.image_key))
            return
        except Exception as exc:  # one bad image never stops the run
            reason = f"unexpected decode error: {type(exc).__name__}: {exc}"
            result.quarantined.append(Drop(c.source, c.rel_path, "decode", reason, c.image_key))
            return
        atomic_write_bytes(out / rel_image, encoded)
        meta = {"width": width, "height": height, "decoder": decoder, "sha256": sha256_bytes(encoded)}
        atomic_write_json(sidecar, meta)  # written last: its presence means the image is complete
        result.decoded += 1
    row = {
        "image_key": c.image_key,
        "source": c.source,
        "subject_id": c.subject_id,
        "study_id": c.study_id,
        "image_id": c.image_id,
        "split": c.split,
        "view": c.view,
        "orientation": c.orientation,
        **{label_column(n): c.labels.get(n) for n in CHEXPERT_LABELS},
        **_report_fields(c),
        "image_path": rel_image,
        "image_format": cfg.image.format,
        "width": meta["width"],
        "height": meta["height"],
        "image_sha256": meta["sha256"],
        "source_path": c.rel_path,
        "source_sha256": source_sha,
        "decoder": meta["decoder"],
        "preprocess": params,
        "cxrflow_version": __version__,
    }
    result.rows.append(row)


# ------------------------------------------------------------------------------------------ chunks


@dataclass
class ChunkResult:
    """What a chunk sends back: counts and quarantine rows; manifest rows and hashes stay in part files."""

    index: int
    rows_part: str | None  # parquet of manifest rows under the run folder (None: no row kept)
    hashes_part: str | None
    quarantined: list[Drop] = field(default_factory=list)
    kept: int = 0
    decoded: int = 0
    reused: int = 0
    hashing: dict[str, int] = field(default_factory=dict)  # SourceHasher.counts: where each sha256 came from


class Sealed(Generic[T]):
    """One value in an opaque container: task runners that walk task parameters (Prefect looks for upstream
    futures in every list and dataclass; Dask for keys) see one object, not one per image."""

    __slots__ = ("value",)

    def __init__(self, value: T):
        self.value = value


def new_run_dir(out: Path) -> Path:
    """A fresh folder for this run's part files. Callers hold the output lock (tasks/lock.py), so any other
    run folder was left by a run that died before assemble (killed, or a failed chunk): removed here."""
    runs = Path(out) / RUNS
    if runs.is_dir():
        for stale in runs.iterdir():
            shutil.rmtree(stale, ignore_errors=True)
    run_dir = runs / uuid.uuid4().hex
    run_dir.mkdir(parents=True)
    return run_dir


def process_chunk(
    index: int, chunk: Sealed[tuple[Spill, int, int]], cfg: IngestConfig, run_dir: Path
) -> ChunkResult:
    """One task run's work: the images of rows [start, stop) of the spilled candidates, progress written to
    the run folder every batch_size images (at most every PROGRESS_EVERY_S) and at the end."""
    spill, start, stop = chunk.value
    run_dir, candidates = Path(run_dir), spill.read(start, stop)
    hasher = SourceHasher.for_chunk(
        Path(cfg.out), [str(c.path) for c in candidates], [c.rel_path for c in candidates], cfg.verify_checksums
    )
    params = preprocess_params(cfg.image, bool(cfg.options.get(ALLOW_BURNED_IN)))
    total = BatchResult()
    last = time.monotonic()
    for done, c in enumerate(candidates, 1):
        process_candidate(c, cfg, params, hasher, total)
        due = done % cfg.batch_size == 0 and time.monotonic() - last >= PROGRESS_EVERY_S
        if due or done == len(candidates):
            atomic_write_bytes(run_dir / f"progress-{index:06d}", str(done).encode())
            last = time.monotonic()
    rows_part = hashes_part = None
    if total.rows:
        rows_part = f"rows-{index:06d}.parquet"
        # sorted here, so that assemble merges the parts without holding them (tasks/parquet_merge.py)
        write_sorted_part(run_dir / rows_part, table_from_rows(total.rows, MANIFEST_SCHEMA), "image_key")
    if hasher.hashes:
        hashes_part = f"hashes-{index:06d}.parquet"
        write_sorted_part(run_dir / hashes_part, hash_table(hasher.hashes), "path")  # merged by path
    return ChunkResult(
        index, rows_part, hashes_part, total.quarantined, len(total.rows), total.decoded, total.reused,
        dict(hasher.counts),
    )


def progress_done(run_dir: Path) -> int:
    """Images finished so far across all chunks of a run (read from their progress files)."""
    done = 0
    for p in Path(run_dir).glob("progress-*"):
        try:
            done += int(p.read_bytes() or 0)
        except (OSError, ValueError):  # being replaced right now: the next poll reads it
            continue
    return done


# ------------------------------------------------------------------------------------------ assembly


def _by_reason(drops: Iterable[Drop]) -> dict[str, int]:
    """Counts per reason category (the text before the first colon)."""
    return dict(sorted(Counter(reason_category(d.reason) for d in drops).items()))


def assemble(
    cfg: IngestConfig,
    sealed_discovery: Sealed[Discovery],
    sealed_results: Sealed[list[ChunkResult]],
    run_dir: Path,
    elapsed_s: float,
) -> dict:
    """Write manifest (the chunks' row parts, sorted by image_key), quarantine, filtered list, hash cache and
    summary; remove the run folder; return the summary."""
    discovery, results = sealed_discovery.value, sealed_results.value
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(run_dir)
    results = sorted(results, key=lambda r: r.index)
    # The chunks' parts, each sorted by image_key, merged block by block: never the whole manifest in memory.
    parts = [run_dir / r.rows_part for r in results if r.rows_part]
    keys = merge_sorted(parts, out / "manifest.parquet", "image_key", MANIFEST_SCHEMA).column("image_key")
    quarantined = discovery.quarantined + [d for res in results for d in res.quarantined]
    filtered = discovery.filtered
    atomic_write_parquet(out / "quarantine.parquet", table_from_rows(_drop_rows(quarantined), DROP_SCHEMA))
    atomic_write_parquet(out / "filtered.parquet", table_from_rows(_drop_rows(filtered), DROP_SCHEMA))
    _write_annotations(out, discovery, keys)
    save_hash_cache(out, [run_dir / r.hashes_part for r in results if r.hashes_part])
    splits = pc.value_counts(pq.ParquetFile(out / "manifest.parquet").read(columns=["split"]).column("split"))
    splits = dict(zip(splits.field("values").to_pylist(), splits.field("counts").to_pylist(), strict=True))
    summary = {
        "source": cfg.source,
        "found": discovery.found,
        "kept": len(keys),
        "filtered": len(filtered),
        "quarantined": len(quarantined),
        "filtered_by_reason": _by_reason(filtered),
        "quarantined_by_reason": _by_reason(quarantined),
        "decoded": sum(r.decoded for r in results),
        "reused": sum(r.reused for r in results),
        "source_hashes": _hashing_summary(discovery, results),
        "splits": dict(sorted(splits.items())),
        "notes": discovery.notes,
        "image": json.loads(preprocess_params(cfg.image, bool(cfg.options.get(ALLOW_BURNED_IN)))),  # as keyed
        "frontal_only": cfg.frontal_only,
        "cxrflow_version": __version__,
        "elapsed_s": round(elapsed_s, 3),
    }
    if summary["found"] != summary["kept"] + summary["filtered"] + summary["quarantined"]:
        raise AssertionError(f"reconciliation failed: {summary}")  # a bug, never bad input
    atomic_write_json(out / "summary.json", summary)
    shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def _hashing_summary(discovery: Discovery, results: list[ChunkResult]) -> dict:
    """Where each source sha256 came from (tasks/source_hashes.py): cached, listed (the release's sums file,
    trusted), verified (listed and hashed), hashed (not listed), mismatched (quarantined). notes["sums_file"]
    says whether the root had a sums file."""
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r.hashing)
    return dict(sorted(counts.items()))


def _write_annotations(out: Path, discovery: Discovery, kept_keys) -> None:
    """annotations.parquet for the kept images, or no such file (a stale one would feed the structure stage)."""
    from tasks.reports.annotations import ANNOTATIONS_SCHEMA, FILE_NAME

    path = out / FILE_NAME
    if discovery.annotations is None:
        path.unlink(missing_ok=True)
        return
    kept = set(kept_keys.to_pylist())
    rows = [r for r in discovery.annotations if r["image_key"] in kept]
    atomic_write_parquet(path, table_from_rows(rows, ANNOTATIONS_SCHEMA))


def _drop_rows(drops: list[Drop]) -> list[dict]:
    return sorted((d.as_row() for d in drops), key=lambda r: (r["source_path"], r["reason"]))


# ------------------------------------------------------------------------------------------ the plan


class Runner(Protocol):
    """Where the plan's steps run: `PoolRunner` below (a local process pool), or flows/ingest.py's Prefect
    runner (task runs on the flow's task runner: a process pool or Dask)."""

    def workers(self, cfg: IngestConfig) -> int:
        """The parallelism the chunks are cut for."""

    def step(self, name: str, fn: Callable[..., T], *args) -> T:
        """Run one step (discover, assemble) and return its value."""

    def map_chunks(
        self, fn: Callable[..., ChunkResult], calls: list[tuple], run_dir: Path, total: int
    ) -> list[ChunkResult]:
        """fn(*call) for every call, in parallel, results in call order; progress from `progress_done(run_dir)`
        out of `total` images. A failed call fails the whole map once the others have stopped."""


def ingest(cfg: IngestConfig, runner: Runner) -> dict:
    """The ingest plan, written once: discover -> chunks -> process them -> assemble; returns the summary."""
    start = time.perf_counter()
    discovery = runner.step("discover", discover_spilled, cfg)
    spill = discovery.spill
    run_dir = spill.path.parent  # the run folder discovery made: chunk parts go beside the spilled candidates
    plan = plan_chunks(len(spill), runner.workers(cfg), cfg.batch_size)
    calls = [(i, Sealed((spill, a, b)), cfg, run_dir) for i, (a, b) in enumerate(plan)]
    try:
        results = runner.map_chunks(process_chunk, calls, run_dir, len(spill))
    except BaseException as exc:  # a failed chunk fails the run; the finished chunks' part files go with it
        shutil.rmtree(run_dir, ignore_errors=True)
        # A worker killed (OOM killer, kill -9): both runners' pools raise BrokenProcessPool.
        if isinstance(exc, BrokenProcessPool):
            raise UserError(
                "an ingest worker process died abruptly (killed, e.g. out of memory); no manifest was written",
                "rerun with fewer --workers (or more memory); images already processed are reused",
            ) from exc
        raise
    return runner.step(
        "assemble", assemble, cfg, Sealed(discovery), Sealed(results), run_dir, time.perf_counter() - start
    )


# ------------------------------------------------------------------------------------------ local runner

# Imported once by the fork server, so a forked worker starts with them (pyarrow's from_pylist imports pandas).
WORKER_PRELOAD = ("tasks.ingest", "pandas")


def worker_context(preload: Iterable[str] = ()) -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading WORKER_PRELOAD (+ `preload`). The fork server runs no Prefect threads
    and no polars thread pool (its only other threads, measured: jemalloc's background threads, which jemalloc
    makes fork-safe, and polars' idle spill-cleanup thread), so forking it is safe where forking this process
    (Prefect's and polars' busy threads) is not; workers use pyarrow, not polars, for that reason; they fork in
    milliseconds with the engine imported instead of importing it each (~2 s per worker idle, ~10 s loaded).
    The preload list counts only until the server starts (`start_worker_server`); it serves every later pool."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(dict.fromkeys([*WORKER_PRELOAD, *preload])))
    return ctx


def start_worker_server(preload: Iterable[str] = ()) -> None:
    """Start the fork server now, so its imports overlap the caller's own start-up and discovery."""
    from multiprocessing import forkserver

    worker_context(preload)
    forkserver.ensure_running()


class PoolRunner:
    """Steps in this process, chunks on a process pool forked from the fork server (the same pool the
    Prefect runner's default task runner uses, flows/runners.py)."""

    def __init__(self, progress: Callable[[int, int], None] | None = None):
        self.progress = progress

    def workers(self, cfg: IngestConfig) -> int:
        return cfg.workers or os.cpu_count() or 1

    def step(self, name: str, fn: Callable[..., T], *args) -> T:
        return fn(*args)

    def map_chunks(
        self, fn: Callable[..., ChunkResult], calls: list[tuple], run_dir: Path, total: int
    ) -> list[ChunkResult]:
        workers = min(self.workers(calls[0][2]), len(calls)) if calls else 1
        if workers == 1:
            results = []
            for call in calls:
                results.append(fn(*call))
                self._report(run_dir, total)
            return results
        with (
            _no_phantom_main(),
            ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool,
        ):
            futures = [pool.submit(fn, *call) for call in calls]
            pending = set(futures)
            try:
                while pending:
                    _, pending = wait(pending, timeout=PROGRESS_EVERY_S, return_when=FIRST_COMPLETED)
                    self._report(run_dir, total)
            except BaseException:  # Ctrl-C: the chunks not started are dropped, not run before the pool exits
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            return [f.result() for f in futures]

    def _report(self, run_dir: Path, total: int) -> None:
        if self.progress:
            self.progress(progress_done(run_dir), total)


@contextlib.contextmanager
def _no_phantom_main():
    """Forked-server workers re-import the caller's __main__ from its file (spawn semantics); a __main__ read
    from stdin has none ('<stdin>'), which would kill every worker. Hide such a name while workers start."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main.__spec__, "name", None) or os.path.exists(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@holds_output_lock("ingest")
def run_ingest(
    cfg: IngestConfig, progress: Callable[[int, int], None] | None = None, runner: Runner | None = None
) -> dict:
    """Ingest one source without Prefect, with the local process pool (or `runner`, e.g.
    tasks/dask_runner.py's); returns the summary."""
    return ingest(cfg, runner or PoolRunner(progress))
