"""Helpers for the evaluation tests: a tiny trained run on synthetic shards, canned CheXprompt answers."""

from __future__ import annotations

from pathlib import Path

# The two public CheXprompt test cases (docs/recipe.md): severe cardiomegaly claimed against a normal reference
# is one clinically significant false finding; a paraphrase of an effusion is no error at all.
NORMAL_REFERENCE = (
    "The heart has normal size. The lungs are clear. There is no pleural effusion or pneumothorax. "
    "There is no focal airspace consolidation. There are no acute bony findings."
)
CARDIOMEGALY_CANDIDATE = (
    "There is severe cardiomegaly. The lungs are clear. No pleural effusion or pneumothorax."
)
PUBLIC_CASES = [
    {"id": "case-cardiomegaly", "reference": NORMAL_REFERENCE, "candidate": CARDIOMEGALY_CANDIDATE},
    {
        "id": "case-effusion",
        "reference": "There is pleural effusion.",
        "candidate": "Evidence of pleural effusion.",
    },
]
CARDIOMEGALY_TEXT_ANSWER = (
    "Number of clinically significant errors by type: [(A, 1), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]\n"
    "Number of clinically insignificant errors by type: ((A, 0), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0))\n"
    "Explanation: the candidate reports severe cardiomegaly (A); the reference says the heart has normal size. "
    "Number of clinically significant errors by type: [(A, 7)]"
)


def tiny_trained_run(root: Path, n_train: int = 8, n_test: int = 5, steps: int = 2) -> tuple[Path, Path]:
    """(run_dir, shards_dir): the tiny preset trained a few steps per stage on synthetic shards."""
    from fixtures.train_shards import write_train_shards
    from schemas.train import default_config
    from training.run import run_training

    shards = root / "shards"
    write_train_shards(shards, n=n_train, per_shard=4, seed=0, split="train")
    write_train_shards(shards, n=n_test, per_shard=3, seed=1, split="test")
    run = root / "run"
    run_training(default_config("tiny", shards, run, max_steps=steps))
    return run, shards
