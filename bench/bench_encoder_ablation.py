"""Summary of the image-encoder ablation (configs/ablations/image-encoder.yaml) after `cxrflow ablate` ran it:
per variant, the encoder's retrieval on the test split with its ratio to chance (trained and random start),
a paired test of each variant's retrieval vs the baseline's (same test queries), and the LLaVA model's clinical
metric with its 95% CI and the paired difference vs the random-encoder baseline.

    python -m bench.bench_encoder_ablation [--spec configs/ablations/image-encoder.yaml]

Reads what the ablation wrote (metrics.json, retrieval.json, leaderboard.json) and re-scores each variant's
exported encoder on the test split into OUT/ablations/<name>/retrieval/<variant> for the per-query pairing;
trains nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CLINICAL = "rule_f1_micro_14"
RETRIEVAL = ("retrieval_i2t_r1", "retrieval_i2t_r5", "retrieval_t2i_r1", "retrieval_t2i_r5")


def main(argv: list[str] | None = None) -> dict:
    from schemas.pipeline import load_ablation_spec, slug

    p = argparse.ArgumentParser()
    p.add_argument("--spec", type=Path, default=Path("configs/ablations/image-encoder.yaml"))
    args = p.parse_args(argv)
    spec = load_ablation_spec(args.spec)
    board_path = (
        Path(spec.variant_config(spec.baseline).out) / "ablations" / slug(spec.name) / "leaderboard.json"
    )
    board = {(r["variant"], r["metric"]): r for r in json.loads(board_path.read_text())}
    from tasks.evaluate.retrieval import compare_retrieval, evaluate_encoder

    out: dict = {}
    scored: dict[str, Path] = {}
    for variant in spec.variants:
        cfg = spec.variant_config(variant)
        d = board_path.parent / "retrieval" / variant
        evaluate_encoder(
            cfg.stage_dirs()["encoder"] / "open_clip",
            cfg.stage_dirs()["shard"],
            cfg.encoder.eval_split,
            d,
            variant,
            n_bootstrap=0,
            zero_shot=False,
            init_seed=cfg.encoder.seed,
        )
        scored[variant] = d
    for variant in spec.variants:
        cfg = spec.variant_config(variant)
        dirs = cfg.stage_dirs()
        notes = json.loads((dirs["encoder"] / "retrieval" / "retrieval.json").read_text())["retrieval"]
        metrics = json.loads((dirs["encoder"] / "retrieval" / "metrics.json").read_text())["metrics"]
        row = {
            "retrieval": {
                k: {
                    "value": round(metrics[k]["value"], 2),
                    "ci": [round(x, 2) for x in metrics[k]["ci"]],
                    "chance": round(notes[k]["chance"], 2),
                    "ratio_to_chance": round(notes[k]["ratio_to_chance"], 2),
                }
                for k in RETRIEVAL
            }
        }
        b = board[(variant, CLINICAL)]
        row[CLINICAL] = {
            k: b[k]
            for k in (
                "value",
                "ci_low",
                "ci_high",
                "diff",
                "diff_ci_low",
                "diff_ci_high",
                "p_value",
                "n",
                "status",
            )
        }
        if variant != spec.baseline:
            paired = compare_retrieval(scored[spec.baseline], scored[variant])
            row["retrieval_vs_baseline"] = {
                k: {
                    "diff": round(paired[k]["diff"], 2),
                    "diff_ci": [round(x, 2) for x in paired[k]["diff_ci"]],
                    "p_value": round(paired[k]["p_value"], 4),
                }
                for k in RETRIEVAL
            }
        out[variant] = row
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
