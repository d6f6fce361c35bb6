"""Summary of the image-encoder ablation (configs/ablations/image-encoder.yaml) after `cxrflow ablate` ran it:
per variant, the encoder's retrieval on the test split with its ratio to chance (trained and random start),
and the LLaVA model's clinical metric with its 95% CI and the paired difference vs the random-encoder baseline.

    python -m bench.bench_encoder_ablation [--spec configs/ablations/image-encoder.yaml]

Reads only what the ablation wrote (metrics.json, retrieval.json, leaderboard.json); trains nothing.
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
    out: dict = {}
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
        out[variant] = row
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
