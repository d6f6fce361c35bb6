"""cxrflow's training text against LLaVA-Rad's, tokenized by the reference's own pinned stack (transformers 4.31,
sentencepiece 0.1.99, `AutoTokenizer.from_pretrained(..., use_fast=False)` as llava/train/train.py loads Vicuna's).

Two steps, because transformers 4.31 and cxrflow's transformers 5 cannot share an environment:

    .venv/bin/python -m bench.reference_tokenizer_check dump /tmp/refcheck       # cxrflow's side + the tokenizer
    python3 -m venv /tmp/v431 && /tmp/v431/bin/pip install "transformers==4.31.0" "tokenizers<0.14" \\
        "sentencepiece==0.1.99"
    /tmp/v431/bin/python bench/reference_tokenizer_check.py check /tmp/refcheck  # the reference's side, compared

`dump` writes the release twin's Vicuna tokenizer (fixtures/llava_rad_release.py) and cxrflow's input_ids/labels
(training/text.py `encode_example`, image tokens folded into the reference's one placeholder) for every findings x
indication case of fixtures/llava_rad_reference.py; `check` builds each case the reference's way
(fixtures/llava_rad_reference.py, plain Python) with the 4.31 slow tokenizer and prints the cases that differ,
and those the reference itself would mask for a "tokenization mismatch".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def dump(out: Path) -> None:
    from fixtures.llava_rad_reference import FINDINGS, INDICATIONS, as_reference
    from fixtures.llava_rad_release import write_lm_tokenizer
    from training.text import IMAGE_TOKEN, encode_example, load_lm_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    write_lm_tokenizer(out / "tokenizer")
    tok = load_lm_tokenizer(out / "tokenizer")
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    cases = []
    for findings in FINDINGS:
        for stage, reasons in ((2, INDICATIONS), (1, [None])):
            for reason in reasons:
                enc = encode_example(tok, stage, findings, reason, 4, 4096, "llava-rad")
                ids, labels = as_reference(enc.input_ids, enc.labels, image_id)
                cases.append(
                    {"stage": stage, "findings": findings, "reason": reason, "ids": ids, "labels": labels}
                )
    (out / "cxrflow.json").write_text(json.dumps(cases))
    print(f"{len(cases)} cases -> {out / 'cxrflow.json'}")


def check(out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fixtures/ (plain Python) from the repo
    import transformers
    from transformers import AutoTokenizer

    from fixtures.llava_rad_reference import reference_plain, reference_v1

    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"), use_fast=False)
    print(f"transformers {transformers.__version__}, {type(tok).__name__}, legacy={tok.legacy}")

    def tokenize(text: str) -> list[int]:
        return tok(text).input_ids

    differ = masked = 0
    cases = json.loads((out / "cxrflow.json").read_text())
    for c in cases:
        if c["stage"] == 2:
            ids, labels, mismatch = reference_v1(tokenize, tok.bos_token_id, c["findings"], c["reason"])
            masked += mismatch
        else:
            ids, labels = reference_plain(tokenize, tok.bos_token_id, c["findings"])
        if (ids, labels) != (c["ids"], c["labels"]):
            differ += 1
            print(f"differs: stage {c['stage']} findings={c['findings']!r} reason={c['reason']!r}")
    print(f"{len(cases)} cases, {differ} differ, {masked} masked by the reference (tokenization mismatch)")
    return 1 if differ else 0


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "dump":
        dump(folder)
    else:
        sys.exit(check(folder))
