"""Cross-modal retrieval and zero-shot labels of an open_clip encoder on a split of the shards.

Retrieval: every test image queries the split's texts (i2t) and every text queries the images (t2i), in the
whole split (the mixture) and within each source. A retrieved item counts as correct when its `K.txt` is the
query's own text, so identical reports (common for label-written ones) are not counted as misses. Recall@K
is the share of queries with a correct item among the top K; ties with a wrong item count against the query
(a constant encoder scores chance, not 100). Chance is the exact expected Recall@K of an encoder that ranks at
random, averaged over queries. Identical texts get identical embeddings from any encoder, so in i2t they rank
as one block: the chance is that of a random order of the gallery's blocks (`block_chance`). Where texts
repeat it differs from 1 - C(G-m, K) / C(G, K) (the formula for distinct items, still that of t2i, whose gallery
images are distinct) in either direction: lower for a query whose own text repeats, higher for a unique text
among repeated ones, and the mean over queries can be either (tests/test_encoder.py has both cases).

Zero-shot labels: for each CheXpert observation, image score = cos(image, "findings of <label>") -
cos(image, "no <label>"); AUROC against the sample's label (positive vs negative; uncertain and unmentioned
left out). CIs: percentile bootstrap over queries (images), the same resample indices for every metric
(tasks/evaluate/resampling.py). `compare_retrieval` pairs two encoders' per-query hits on the same split.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from math import comb
from pathlib import Path

import numpy as np

from schemas.evaluation import EvaluationMetrics, MetricResult
from schemas.labels import CHEXPERT_LABELS, label_column
from schemas.sample_json import decode_sample_json
from tasks.evaluate.resampling import MetricSpec, bootstrap_indices, score

KS = (1, 5, 10)
MIXTURE = "mixture"


@dataclass
class Embedded:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    image: np.ndarray | None = None  # (N, D), L2-normalised
    text: np.ndarray | None = None


def load_encoder(open_clip_dir: Path, seed: int = 0, device: str = "cpu"):
    """(model, image preprocess, tokenizer) of an open_clip dir; a config-only dir gets seeded random weights."""
    import torch

    from training.openclip import import_open_clip

    open_clip = import_open_clip()
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{open_clip_dir}")
    return model.eval(), preprocess, tokenizer


def read_split(shards: Path, split: str, limit: int | None = None) -> list[tuple[str, bytes, str, dict]]:
    """(key, image bytes, text, K.json) of every sample of the split, in shard order."""
    from training.data import IMAGE_MEMBERS, iter_tar_samples, read_index

    out = []
    for s in read_index(shards, split):
        for key, members in iter_tar_samples(s["url"]):
            img = next((members[e][1] for e in IMAGE_MEMBERS if e in members), None)
            if img is None or "txt" not in members:
                continue
            meta = decode_sample_json(json.loads(members["json"][1])) if "json" in members else {}
            out.append((key, img, members["txt"][1].decode("utf-8"), meta))
            if limit is not None and len(out) >= limit:
                return out
    return out


def embed(model, preprocess, tokenizer, samples, batch_size: int = 64, device: str = "cpu") -> Embedded:
    import torch
    from PIL import Image

    e = Embedded()
    imgs, txts = [], []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            pix = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for _, b, _, _ in chunk])
            imgs.append(model.encode_image(pix.to(device), normalize=True).float().cpu().numpy())
            txts.append(
                model.encode_text(tokenizer([t for _, _, t, _ in chunk]).to(device), normalize=True)
                .float()
                .cpu()
                .numpy()
            )
    for key, _, text, meta in samples:
        e.keys.append(key)
        e.sources.append(str(meta.get("source") or "unknown"))
        e.texts.append(text)
        e.labels.append({c: meta.get(c) for c in (label_column(n) for n in CHEXPERT_LABELS)})
    e.image, e.text = np.concatenate(imgs), np.concatenate(txts)
    return e


def hits_and_chance(
    sim: np.ndarray, correct: np.ndarray, ks=KS, blocks: np.ndarray | None = None
) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Per-query hit@K (bool) of a (queries x gallery) similarity matrix, and the chance Recall@K (0-1).
    `blocks`: a label per gallery item, equal for identical items (identical texts get identical embeddings
    from any encoder, so they rank as one block); None: every item is its own block."""
    best = np.where(correct, sim, -np.inf).max(axis=1, keepdims=True)
    wrong = ~correct
    rank = (sim > best).sum(axis=1) + ((sim == best) & wrong).sum(axis=1)  # 0-based, ties pessimistic
    hits = {k: rank < k for k in ks}
    if blocks is None:
        blocks = np.arange(sim.shape[1])
    _, block_of, sizes = np.unique(blocks, return_inverse=True, return_counts=True)
    cache: dict[tuple, dict[int, float]] = {}
    per_query = []
    for row in correct:
        ids, inside = np.unique(block_of[row], return_counts=True)
        if np.any(inside != sizes[ids]):
            raise ValueError("a block of identical gallery items is partly correct for a query")
        key = tuple(sorted(sizes[ids].tolist()))
        if key not in cache:
            cache[key] = {k: block_chance(sizes.tolist(), list(key), k) for k in ks}
        per_query.append(cache[key])
    chance = {k: float(np.mean([c[k] for c in per_query])) if per_query else float("nan") for k in ks}
    return hits, chance


def block_chance(sizes: list[int], correct: list[int], k: int) -> float:
    """Exact P(hit@k) of a random ranking of blocks: the gallery's blocks (sizes, the correct ones included) in
    uniformly random order, a hit when the wrong blocks ranked above the first correct block hold fewer than k
    items. A given set of j wrong blocks is exactly what precedes the first of c correct blocks, among W wrong
    ones, with probability c j! (W+c-j-1)! / (W+c)!; N_j = the number of j-sets of wrong blocks under k items
    (a count over the wrong blocks' sizes below k). All-singleton blocks give 1 - C(G-m, k) / C(G, k)."""
    from collections import Counter
    from fractions import Fraction

    wrong = Counter(sizes)
    wrong.subtract(Counter(correct))
    c, w = len(correct), sum(wrong.values())
    if not c:
        return 0.0
    # n_sets[j][t]: j-sets of wrong blocks with t items in all (t < k), over the sizes below k
    n_sets = [[0] * k for _ in range(k)]
    n_sets[0][0] = 1
    for size, n in wrong.items():
        if size >= k or n <= 0:
            continue
        new = [row[:] for row in n_sets]
        for take in range(1, n + 1):
            if take * size >= k:
                break
            ways = comb(n, take)
            for j in range(k - take):
                for t in range(k - take * size):
                    if n_sets[j][t]:
                        new[j + take][t + take * size] += ways * n_sets[j][t]
        n_sets = new
    total = Fraction(0)
    for j in range(min(k, w + 1)):
        count = sum(n_sets[j])
        if count:
            p = Fraction(c)
            for i in range(j + 1):  # c j! (W+c-j-1)! / (W+c)! = c j! / ((W+c)(W+c-1)...(W+c-j))
                p /= w + c - i
            total += count * p * _factorial(j)
    return float(total)


def _factorial(j: int) -> int:
    out = 1
    for i in range(2, j + 1):
        out *= i
    return out


_MEAN_PCT = MetricSpec(
    "recall",
    ("hit",),
    lambda c: 100.0 * float(np.mean(c["hit"])),
    "share of queries with a correct item in the top K; bootstrap over queries",
)


def retrieval_metrics(
    e: Embedded, n_bootstrap: int, seed: int, per_query: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, MetricResult], dict]:
    """Recall@1/5/10 both ways for the mixture and each source, with chance and the ratio to chance.
    `per_query` receives the mixture's hit@K per query (in `e.keys` order), for paired comparisons."""
    metrics: dict[str, MetricResult] = {}
    notes: dict = {}
    texts = np.array(e.texts, dtype=object)
    sources = np.array(e.sources)
    scopes = [(MIXTURE, np.ones(len(texts), bool))] + [(s, sources == s) for s in sorted(set(e.sources))]
    if len(set(e.sources)) == 1:
        scopes = scopes[:1]  # one source: its scope is the mixture's
    for scope, mask in scopes:
        img, txt, t = e.image[mask], e.text[mask], texts[mask]
        same = t[:, None] == t[None, :]
        prefix = "retrieval" if scope == MIXTURE else f"retrieval_{scope.replace('-', '_')}"
        idx = bootstrap_indices(len(t), n_bootstrap, seed) if n_bootstrap else None
        text_block = np.unique(t, return_inverse=True)[1]
        for direction, sim, blocks in (("i2t", img @ txt.T, text_block), ("t2i", txt @ img.T, None)):
            hits, chance = hits_and_chance(sim, same, blocks=blocks)
            for k in KS:
                name = f"{prefix}_{direction}_r{k}"
                r = score(_MEAN_PCT, {"hit": hits[k].astype(float)}, idx)
                if per_query is not None and scope == MIXTURE:
                    per_query[name] = hits[k].astype(float)
                metrics[name] = r.model_copy(
                    update={
                        "method": f"Recall@{k}, {direction}, {scope} test split "
                        f"(gallery {len(t)}); percentile bootstrap over queries"
                    }
                )
                notes[name] = {
                    "chance": 100 * chance[k],
                    "ratio_to_chance": r.value / (100 * chance[k]),
                    "gallery": int(len(t)),
                }
    return metrics, notes


def auroc(score_: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count half), NaN when a class is absent."""
    pos, neg = score_[y == 1], score_[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def zero_shot_metrics(
    e: Embedded, model, tokenizer, n_bootstrap: int, seed: int, device: str = "cpu"
) -> dict[str, MetricResult]:
    """Per-label AUROC of the prompt pair score, and the macro mean over labels with both classes."""
    import torch

    method = 'zero-shot AUROC of cos(img, "findings of <label>") - cos(img, "no <label>")'
    prompts = [p for n in CHEXPERT_LABELS for p in (f"findings of {n.lower()}", f"no {n.lower()}")]
    with torch.no_grad():
        emb = model.encode_text(tokenizer(prompts).to(device), normalize=True).float().cpu().numpy()
    sims = e.image @ emb.T  # (N, 2 * labels)
    out: dict[str, MetricResult] = {}
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, name in enumerate(CHEXPERT_LABELS):
        col = label_column(name)
        y = np.array([lab.get(col) if lab.get(col) in (0, 1) else -1 for lab in e.labels])
        keep = y >= 0
        s = sims[:, 2 * i] - sims[:, 2 * i + 1]
        key = f"zeroshot_auroc_{col.removeprefix('label_')}"
        if len(set(y[keep])) < 2:
            out[key] = MetricResult.missing(
                f"{name}: the split has not both positive and negative samples",
                method=method,
                n=int(keep.sum()),
            )
            continue
        cols[key] = (s, y)
    idx = (
        bootstrap_indices(len(e.keys), n_bootstrap, seed) if n_bootstrap else np.empty((0, len(e.keys)), int)
    )

    def macro(sel: np.ndarray) -> float:
        vals = [auroc(s[sel], y[sel]) for s, y in cols.values()]
        return float(np.nanmean(vals)) if not all(np.isnan(vals)) else float("nan")

    for key, (s, y) in cols.items():
        value = 100 * auroc(s, y)
        boot = np.array([100 * auroc(s[i], y[i]) for i in idx])
        out[key] = _with_ci(value, boot, int((y >= 0).sum()), method)
    if cols:
        everything = np.arange(len(e.keys))
        boot = np.array([100 * macro(i) for i in idx])
        out["zeroshot_auroc_macro"] = _with_ci(
            100 * macro(everything), boot, len(e.keys), f"macro mean over {len(cols)} labels; {method}"
        )
    else:
        out["zeroshot_auroc_macro"] = MetricResult.missing(
            "no label has both positive and negative samples", method=method
        )
    return out


def _with_ci(value: float, boot: np.ndarray, n: int, method: str) -> MetricResult:
    boot = boot[~np.isnan(boot)] if len(boot) else boot
    ci = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if len(boot) else None
    return MetricResult(value=value, ci=ci, n=n, method=method)


def evaluate_encoder(
    open_clip_dir: Path,
    shards: Path,
    split: str,
    out: Path,
    experiment: str,
    n_bootstrap: int = 500,
    seed: int = 12345,
    zero_shot: bool = True,
    init_seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[EvaluationMetrics, dict]:
    """OUT/metrics.json (EvaluationMetrics), OUT/retrieval.json (chance, ratio to chance, per source) and
    OUT/per_query.parquet (the mixture's hit@K per query, by sample key: paired tests between encoders)."""
    from cxrio import atomic_write_json, atomic_write_parquet

    try:
        samples = read_split(shards, split)
    except (FileNotFoundError, ValueError) as err:
        samples, reason = [], str(err)
    else:
        reason = f"the {split} split has no sample with an image and a text"
    metrics = EvaluationMetrics(
        experiment=experiment, n_reports=len(samples), n_bootstrap=n_bootstrap, seed=seed
    )
    notes: dict = {"split": split, "samples": len(samples)}
    if len(samples) < 2:
        for d in ("i2t", "t2i"):
            for k in KS:
                metrics.metrics[f"retrieval_{d}_r{k}"] = MetricResult.missing(reason)
    else:
        model, preprocess, tokenizer = load_encoder(open_clip_dir, init_seed, device)
        e = embed(model, preprocess, tokenizer, samples, batch_size, device)
        per_query: dict[str, np.ndarray] = {}
        m, notes["retrieval"] = retrieval_metrics(e, n_bootstrap, seed, per_query)
        import polars as pl

        out.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame({"id": e.keys, "source": e.sources, **per_query})
        atomic_write_parquet(out / "per_query.parquet", frame)
        metrics.metrics.update(m)
        if zero_shot:
            metrics.metrics.update(zero_shot_metrics(e, model, tokenizer, n_bootstrap, seed, device))
        notes["samples_by_source"] = {s: e.sources.count(s) for s in sorted(set(e.sources))}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics.model_dump(mode="json"))
    atomic_write_json(out / "retrieval.json", notes)
    return metrics, notes


def compare_retrieval(a_dir: Path, b_dir: Path, n_resamples: int = 1000) -> dict[str, dict]:
    """Paired test (b - a) of every mixture Recall@K between two retrieval evaluations of the same split,
    paired by sample key (CI and p-value from one paired bootstrap; resampling.paired_test)."""
    import polars as pl

    from tasks.evaluate.resampling import paired_test

    a = pl.read_parquet(Path(a_dir) / "per_query.parquet").sort("id")
    b = pl.read_parquet(Path(b_dir) / "per_query.parquet").sort("id")
    if a["id"].to_list() != b["id"].to_list():
        raise ValueError(
            f"{a_dir} and {b_dir} evaluated different queries; a paired test needs the same split"
        )
    names = [c for c in a.columns if c.startswith("retrieval_") and c in b.columns]
    return {
        n: paired_test(
            _MEAN_PCT, {"hit": a[n].to_numpy()}, {"hit": b[n].to_numpy()}, n_resamples=n_resamples
        ).model_dump()
        for n in names
    }
