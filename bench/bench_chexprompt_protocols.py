"""Judge-vs-judge agreement of CheXprompt's two protocols on the same pairs.

    python -m bench.bench_chexprompt_protocols [--pairs 60] [--base-url URL --model NAME]

Every pair is judged twice, under `protocol: json` (cxrflow's structured prompt) and a five-shot text protocol
(`fewshot-own`, cxrflow's paraphrase; `original`, the published prompt, with --chexprompt-src), through the real
client, runner, cache and parsers. Reported: the share of
pairs whose 12 counts agree exactly, whose significant-error totals agree, and whose "no significant error" flag
agrees; the mean significant errors under each protocol; and the prompt size of the text protocol as a ratio of
`json`'s (what the five shots cost per request).

Without --base-url a local OpenAI-compatible server (fixtures/openai_server.py) answers as one deterministic
judge would under both protocols: error counts from cxrflow's rule-based labeler (false findings A, omissions
B), written as JSON for `json` and in the published text format for the text protocol, rotating through the answer
styles the published parser accepts (square or round brackets, partial lists, a trailing explanation).
Against that server, agreement below 100% is a defect of the protocol plumbing, not of a model. With --base-url
the same run measures a real model's agreement with itself across the two protocols.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from fixtures.openai_server import OpenAIServer, user_text
from schemas.llm import LLMConfig
from tasks.evaluate.chexprompt import INSIG_COLUMNS, SIG_COLUMNS, chexprompt_operation, judge
from tasks.evaluate.chexprompt_original import ERROR_TYPES, INSIG_HEAD, SIG_HEAD

SENTENCES = {
    "Cardiomegaly": "Moderate cardiomegaly.",
    "Pleural Effusion": "Small left pleural effusion.",
    "Edema": "Mild pulmonary edema.",
    "Consolidation": "Right lower lobe consolidation.",
    "Pneumothorax": "Small right apical pneumothorax.",
    "Atelectasis": "Bibasilar atelectasis.",
}
NORMAL = "The lungs are otherwise clear. No acute osseous abnormality."


def make_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    names = list(SENTENCES)
    pairs = []
    for i in range(n):
        ref = rng.sample(names, rng.randint(0, 3))
        cand = [x for x in ref if rng.random() > 0.3] + [
            x for x in rng.sample(names, 1) if rng.random() < 0.4
        ]
        pairs.append(
            {
                "id": f"pair-{i}",
                "reference": " ".join([SENTENCES[x] for x in ref] + [NORMAL]),
                "candidate": " ".join([SENTENCES[x] for x in dict.fromkeys(cand)] + [NORMAL]),
            }
        )
    return pairs


def _rule_counts(reference: str, candidate: str) -> tuple[dict[str, int], dict[str, int]]:
    from tasks.evaluate.labeler import label_reports

    ref, cand = label_reports([reference, candidate])
    pos_r = {k for k, v in ref.items() if v == 1}
    pos_c = {k for k, v in cand.items() if v == 1}
    return {"A": len(pos_c - pos_r), "B": len(pos_r - pos_c)}, {}


_STYLES = ("square", "round", "partial", "explained")
STYLES_SERVED: Counter[str] = Counter()


def _text(sig: dict[str, int], insig: dict[str, int], style: str) -> str:
    def line(counts):
        types = ([t for t in ERROR_TYPES if counts.get(t)] or ["A"]) if style == "partial" else ERROR_TYPES
        items = ", ".join(f"({t}, {counts.get(t, 0)})" for t in types)
        return f"({items})" if style == "round" else f"[{items}]"

    out = f"{SIG_HEAD} {line(sig)}\n{INSIG_HEAD} {line(insig)}"
    return out + ("\nExplanation: counted from the findings (A, 9)." if style == "explained" else "")


def responder(body: dict) -> dict | str:
    text = user_text(body)
    if body.get("response_format"):  # protocol json
        ref, cand = re.match(r"REFERENCE:\n(.*)\n\nCANDIDATE:\n(.*)", text, re.S).groups()
        sig, insig = _rule_counts(ref, cand)
        return {
            "explanation": "rule judge",
            "clinically_significant": {t: sig.get(t, 0) for t in ERROR_TYPES},
            "clinically_insignificant": {t: insig.get(t, 0) for t in ERROR_TYPES},
        }
    blocks = re.findall(r'Reference findings: """(.*?)"""\n+Candidate findings: """(.*?)"""', text, re.S | re.I)
    ref, cand = blocks[-1]  # the pair after the five worked examples
    sig, insig = _rule_counts(ref, cand)
    style = _STYLES[int.from_bytes(ref.encode()[:4].ljust(4, b"\0"), "little") % len(_STYLES)]
    STYLES_SERVED[style] += 1
    return _text(sig, insig, style)


def run(pairs: list[dict], base_url: str, model: str, cache: Path, chexprompt_src: Path | None = None) -> dict:
    """`original` (the published prompt) with a checkout, else `fewshot-own`, against `json`."""
    text = "original" if chexprompt_src is not None else "fewshot-own"
    out = {}
    for protocol in ("json", text):
        cfg = LLMConfig(backend="openai", base_url=base_url, model=model, cache_dir=cache / protocol)
        out[protocol] = judge(pairs, cfg, n_bootstrap=0, protocol=protocol, chexprompt_src=chexprompt_src)
    j, o = out["json"], out[text]
    cols = SIG_COLUMNS + INSIG_COLUMNS
    a = np.stack([j.columns[c] for c in cols], 1)
    b = np.stack([o.columns[c] for c in cols], 1)
    ok = ~np.isnan(a).any(1) & ~np.isnan(b).any(1)
    sig_a, sig_b = a[ok, :6].sum(1), b[ok, :6].sum(1)
    prompt = {
        p: len(json.dumps(chexprompt_operation(p, chexprompt_src).build_messages(pairs[0]))) for p in ("json", text)
    }
    return {
        "pairs": len(pairs),
        "judged_by_both": int(ok.sum()),
        "agreement_all_counts": float((a[ok] == b[ok]).all(1).mean()),
        "agreement_significant_total": float((sig_a == sig_b).mean()),
        "agreement_no_significant_error": float(((sig_a == 0) == (sig_b == 0)).mean()),
        "mean_significant_json": float(sig_a.mean()),
        "mean_significant_original": float(sig_b.mean()),
        "text_protocol": text,
        "prompt_chars_original_over_json": prompt[text] / prompt["json"],
        "answer_styles_served": dict(STYLES_SERVED),
        "prompt_versions": {"json": j.prompt_version, text: o.prompt_version},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument(
        "--base-url", default=None, help="a real OpenAI-compatible endpoint (default: local fixture)"
    )
    ap.add_argument("--model", default="judge")
    ap.add_argument("--latency", type=float, default=0.0, help="local server latency per request (s)")
    ap.add_argument("--chexprompt-src", type=Path, default=None, help="microsoft/chexprompt checkout: `original`")
    args = ap.parse_args()
    pairs = make_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_url:
            result = run(pairs, args.base_url, args.model, Path(tmp), args.chexprompt_src)
        else:
            with OpenAIServer(responder, latency=args.latency) as srv:
                result = run(pairs, srv.base_url, args.model, Path(tmp), args.chexprompt_src)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
