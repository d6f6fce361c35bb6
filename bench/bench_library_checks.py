"""Library or ours? The two helpers issue 18 asked to check against a well-kept library, measured in one run.

1. Resampling: tasks/evaluate/resampling.score (one shared index matrix; percentile CI and bootstrap median)
   vs scipy.stats.bootstrap(paired=True, method="percentile") on a ratio-of-sums corpus metric (n = 2,461
   reports, the paper's test size; 500 resamples, seed 3): same CI? time ratio (best of 3)?
2. Dotted overrides: schemas.pipeline.apply_overrides + YAML scalars (`--set a.b=c`) vs OmegaConf.from_dotlist
   merged into the config, on the same override list: same values? what does each do with an override that
   turns a scalar into a section? OmegaConf is not a dependency: install it anywhere and pass that folder
   (`pip install --target /tmp/omc omegaconf`; `--omegaconf /tmp/omc`), or this part is skipped.

    .venv/bin/python -m bench.bench_library_checks [--omegaconf DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def best_of(f, repeats: int = 3):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def resampling() -> None:
    from scipy import stats

    from tasks.evaluate.resampling import MetricSpec, bootstrap_indices, score

    n, r = 2461, 500
    rng = np.random.default_rng(0)
    cols = {"tp": rng.integers(0, 5, n).astype(float), "fp": rng.integers(0, 3, n).astype(float)}

    def agg(c):
        return 100 * c["tp"].sum() / max(1.0, (c["tp"] + c["fp"]).sum())

    spec = MetricSpec("precision", ("tp", "fp"), agg, "ratio of sums")
    t_ours, ours = best_of(lambda: score(spec, cols, bootstrap_indices(n, r, 3, "reference")))
    t_sp, sp = best_of(lambda: stats.bootstrap(
        (cols["tp"], cols["fp"]), lambda tp, fp: agg({"tp": tp, "fp": fp}), paired=True, vectorized=False,
        n_resamples=r, method="percentile", random_state=3))
    sp_ci = tuple(float(x) for x in sp.confidence_interval)
    print("resampling, n=2461, 500 resamples:")
    print(f"  ours  CI {ours.ci[0]:.4f}..{ours.ci[1]:.4f}  median {ours.bootstrap_median:.4f}")
    print(f"  scipy CI {sp_ci[0]:.4f}..{sp_ci[1]:.4f}  median {np.median(sp.bootstrap_distribution):.4f}")
    print(f"  same CI: {np.allclose(ours.ci, sp_ci)}; time scipy / ours: {t_sp / t_ours:.2f}")


def overrides(omegaconf_dir: str) -> None:
    import yaml

    sys.path.append(omegaconf_dir)  # after the venv, so the venv's own packages win
    from omegaconf import OmegaConf

    from schemas.pipeline import apply_overrides, load_yaml

    base = load_yaml(REPO / "configs/demo.yaml")
    cases = ["train.max_steps=5", "data.image.size=64", "train.stage2.lora_r=8", "evaluate.limit=null",
             "name=run-1", "train.stages=[1]", "structure.model=gpt-4o-2024-08-06", "train.preset.x=1"]

    def at(d, key):
        for p in key.split("."):
            d = d[p]
        return repr(d)

    print("dotted overrides (value at the key, or the error):")
    for case in cases:
        key, value = case.split("=", 1)
        try:
            ours = at(apply_overrides(base, {key: yaml.safe_load(value)}), key)
        except ValueError as exc:
            ours = f"error: {exc}"
        merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist([case]))
        print(f"  {case:38} ours {ours:45} omegaconf {at(OmegaConf.to_container(merged), key)}")

    def import_s(mod: str) -> float:
        code = (f"import sys, time; sys.path.append({omegaconf_dir!r}); t = time.perf_counter(); import {mod}; "
                "print(time.perf_counter() - t)")
        return min(float(subprocess.check_output([sys.executable, "-c", code], cwd=REPO)) for _ in range(3))

    print(f"  import time omegaconf / schemas.pipeline: {import_s('omegaconf') / import_s('schemas.pipeline'):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--omegaconf", help="a folder holding omegaconf (pip install --target DIR omegaconf)")
    args = ap.parse_args()
    resampling()
    if args.omegaconf:
        overrides(args.omegaconf)
    else:
        print("dotted overrides: skipped (no --omegaconf folder)")


if __name__ == "__main__":
    main()
