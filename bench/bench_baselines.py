"""Does the demo's model beat the image-blind baselines on fixture seeds nobody tuned on? For each seed: the
demo's fixture (`cxrflow demo`'s write_demo_fixture) and the demo's training (configs/learnable.yaml), the
`trained` variant only (the shuffle control is `cxrflow demo`'s job), then the trained model's 95% CI against
the image-blind baselines' (tasks/evaluate/baselines.py) on rule_f1_micro_14 and on
rule_balanced_accuracy_macro_14. The reference is the baselines themselves, scored in the same run on the
same test references and resamples.

    OMP_NUM_THREADS=1 python -m bench.bench_baselines --seeds 5 6 7 --out DIR

One torch thread: on the shared 2-core machine, two threads under contention took 8 s per step where one took
0.2 s (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METRICS = ("rule_f1_micro_14", "rule_balanced_accuracy_macro_14")
SPEC = Path(__file__).resolve().parents[1] / "configs" / "learnable.yaml"


def check_seed(seed: int, out: Path, studies: int = 200) -> dict:
    from cxrflow_cli.demo import write_demo_fixture
    from flows.ablate import run_ablation
    from schemas.evaluation import EvaluationMetrics
    from schemas.pipeline import AblationSpec, load_yaml

    start = time.perf_counter()
    base = {**load_yaml(SPEC), "out": str(out / "pipeline")}
    base["data"] = {**base["data"], "root": str(out / "learnable")}
    spec = AblationSpec(name="learning", base=base, variants={"trained": {}}, metrics=list(METRICS))
    write_demo_fixture(out / "learnable", studies, seed)
    res = run_ablation(spec)
    m = EvaluationMetrics.model_validate_json((Path(res["variants"]["trained"]["eval_dir"]) / "metrics.json").read_text())
    row: dict = {"seed": seed, "wall_s": round(time.perf_counter() - start), "n": m.n_reports}
    for k in METRICS:
        t = m.metrics[k]
        row[k] = {"trained": t.display(), **{b: v.metrics[k].display() for b, v in m.baselines.items()},
                  "margin": round(t.ci[0] - max(v.metrics[k].ci[1] for v in m.baselines.values()), 2)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for seed in args.seeds:
        print(json.dumps(check_seed(seed, args.out / f"seed-{seed}")), flush=True)


if __name__ == "__main__":
    main()
