"""The report scrub measured as de-identification is measured: recall per PHI category, clinical text kept.

    python -m bench.bench_phi --seed 20261207 [--reports 400] [--no-philter]

Generates `--reports` chest X-ray reports with planted PHI (fixtures/phi_corpus.py: Faker names of many locales
and names that are English words, after every kind of title; dates, phones, e-mails, URLs, addresses, ids and
ages of 90+ in many written forms), runs the scrub (tasks/phi_engine.py, no DICOM header context: the names are
nowhere but in the text) and, on the same corpus, philter-lite (UCSF Philter's filters) when it can run.

Token-level, as the de-identification literature counts: a PHI token (a run of letters/digits inside a planted
span) is caught when every character of it is redacted; a clinical token (inside a clinical sentence) is kept
when none of it is. Span recall (every token of a planted value caught) is printed beside it. "Clinical kept"
is also measured on the project's fixture reports (fixtures/reports.py, MIMIC-CXR format, written before this
scrub and not by the author of its word list).

The scrub was developed on seed 1; report on another seed.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter
from collections.abc import Callable

from fixtures.phi_corpus import CATEGORIES, Report, generate

_TOKEN = re.compile(r"[^\W_]+")
# Words inside a planted value that identify nobody ("the fourteenth of March", "one hundred and one"): not
# counted as PHI tokens.
_NOT_PHI = {"of", "the", "and", "a"}
Mask = Callable[[str], list[bool]]


def engine_mask(text: str) -> list[bool]:
    from tasks.phi_engine import find_phi

    mask = [False] * len(text)
    for s in find_phi(text):
        mask[s.start : s.end] = [True] * (s.end - s.start)
    return mask


def mask_from_scrub(scrub: Callable[[str], str]) -> Mask:
    """A mask from any text-to-text scrub (tasks.phi.scrub_report, or an older one): the characters of the input
    that do not survive into its output, aligned with difflib."""
    from difflib import SequenceMatcher

    def mask(text: str) -> list[bool]:
        out = [True] * len(text)
        matcher = SequenceMatcher(None, text, scrub(text), autojunk=False)
        for block in matcher.get_matching_blocks():
            out[block.a : block.a + block.size] = [False] * block.size
        return out

    return mask


def philter_runner() -> tuple[Mask | None, str]:
    """philter-lite's default filter set (philter_delta.toml) as a mask function, or (None, why not)."""
    try:
        import nltk
        import philter_lite
        from philter_lite import philter as ph
    except ImportError as e:
        return None, f"not computed: philter-lite not installed ({e})"
    from importlib.resources import files

    note = "philter-lite " + philter_lite.__version__
    try:
        nltk.pos_tag(["Dr", "Smith"])
    except LookupError:
        # philter-lite tags parts of speech with NLTK's averaged perceptron, whose data NLTK downloads from
        # raw.githubusercontent.com at run time (no PyPI package carries it). Without it philter-lite cannot run;
        # a stand-in tagger (CD for numbers, NNP for capitalised words, NN otherwise) lets its 300+ regex, set
        # and safe-list filters run unchanged. Figures are labelled with it.
        def stand_in(tokens):
            return [
                (t, "CD" if re.fullmatch(r"[\d.,/:-]+", t) else "NNP" if t[:1].isupper() else "NN")
                for t in tokens
            ]

        ph.nltk.pos_tag = stand_in
        note += " with a stand-in POS tagger (NLTK's averaged_perceptron_tagger_eng is downloaded from GitHub, unreachable here)"
    filters = philter_lite.load_filters(str(files("philter_lite") / "configs" / "philter_delta.toml"))

    def mask(text: str) -> list[bool]:
        include_map, _, _ = philter_lite.detect_phi(text, patterns=filters)
        keep = [False] * len(text)
        for start, stop in include_map.filecoords():
            keep[start:stop] = [True] * (stop - start)
        # philter's writers keep what its include map covers and punctuation; everything else is redacted
        return [not keep[i] and text[i].isalnum() for i in range(len(text))]

    return mask, note


def score(reports: list[Report], mask_fn: Mask) -> dict:
    tok_total, tok_caught = Counter(), Counter()
    span_total, span_caught = Counter(), Counter()
    clin_total = clin_kept = 0
    missed: Counter = Counter()
    lost: Counter = Counter()
    t0 = time.perf_counter()
    masks = [mask_fn(r.text) for r in reports]
    seconds = time.perf_counter() - t0
    for r, mask in zip(reports, masks, strict=True):
        for start, end, cat in r.phi:
            all_caught = True
            for m in _TOKEN.finditer(r.text, start, end):
                if m.group().lower() in _NOT_PHI:
                    continue
                tok_total[cat] += 1
                if all(mask[m.start() : m.end()]):
                    tok_caught[cat] += 1
                else:
                    all_caught = False
                    missed[(cat, m.group())] += 1
            span_total[cat] += 1
            span_caught[cat] += all_caught
        for start, end in r.clinical:
            for m in _TOKEN.finditer(r.text, start, end):
                clin_total += 1
                if any(mask[m.start() : m.end()]):
                    lost[m.group()] += 1
                else:
                    clin_kept += 1
    return {
        "recall": {c: tok_caught[c] / tok_total[c] for c in CATEGORIES if tok_total[c]},
        "span_recall": {c: span_caught[c] / span_total[c] for c in CATEGORIES if span_total[c]},
        "tokens": dict(tok_total),
        "clinical_kept": clin_kept / clin_total,
        "clinical_tokens": clin_total,
        "ms_per_report": 1000 * seconds / len(reports),
        "missed": missed,
        "lost": lost,
    }


def fixture_reports_kept(mask_fn: Mask, n: int = 200) -> tuple[float, int, Counter]:
    """Share of tokens kept on the project's fixture reports (MIMIC-CXR format, no PHI in them but `___`) and the
    other sources' fixture sentences, all written before this scrub by other sessions."""
    import random

    from fixtures import chexpert, openi
    from fixtures.reports import make_report
    from schemas.labels import CHEXPERT_LABELS
    from tasks.reports import rules_backend

    rng = random.Random(0)
    total = kept = 0
    lost: Counter = Counter()
    texts = [make_report({k: rng.choice([1, 0, -1, None]) for k in CHEXPERT_LABELS}, rng, addendum=rng.random() < 0.2).text
             for _ in range(n)]  # fmt: skip
    # and the other sources' fixture sentences (Open-I with its XXXX marks, CheXpert Plus in capitals)
    texts += [*openi.FINDINGS, *openi.IMPRESSIONS, *chexpert.FINDINGS]
    texts += [rules_backend.NO_FINDING_FINDINGS, rules_backend.NO_FINDING_IMPRESSION]
    for text in texts:
        mask = mask_fn(text)
        for m in _TOKEN.finditer(text):
            total += 1
            if any(mask[m.start() : m.end()]):
                lost[m.group()] += 1
            else:
                kept += 1
    return kept / total, total, lost


def _row(name: str, res: dict) -> str:
    cells = " ".join(f"{100 * res['recall'].get(c, float('nan')):6.2f}" for c in CATEGORIES)
    spans = " ".join(f"{100 * res['span_recall'].get(c, float('nan')):6.2f}" for c in CATEGORIES)
    return f"{name:<14} tokens {cells} | spans {spans} | clinical kept {100 * res['clinical_kept']:6.2f}% | {res['ms_per_report']:.2f} ms/report"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True, help="corpus seed (the scrub was developed on seed 1)")
    ap.add_argument("--reports", type=int, default=400)
    ap.add_argument("--no-philter", action="store_true", help="skip philter-lite (it takes ~100x longer)")
    ap.add_argument("--show-missed", type=int, default=0, help="print the N most often missed PHI tokens")
    args = ap.parse_args(argv)

    reports = generate(args.seed, args.reports)
    engine_mask("warm-up: loads the word lists once")
    ours = score(reports, engine_mask)
    print(f"corpus: seed {args.seed}, {args.reports} reports, PHI tokens per category {ours['tokens']}, "
          f"{ours['clinical_tokens']} clinical tokens")  # fmt: skip
    print(
        f"{'':<14} token recall % ({' '.join(f'{c[:6]:>6}' for c in CATEGORIES)}) | span recall % (same order)"
    )
    print(_row("cxrflow", ours))
    kept, total, lost = fixture_reports_kept(engine_mask)
    print(f"{'cxrflow':<14} fixture reports (fixtures/reports.py, openi, chexpert): {100 * kept:.2f}% of {total} tokens kept; "
          f"lost: {dict(lost.most_common(8))}")  # fmt: skip
    if args.show_missed:
        print("cxrflow missed:", ours["missed"].most_common(args.show_missed))
        print("cxrflow clinical lost:", ours["lost"].most_common(args.show_missed))
    if not args.no_philter:
        mask, note = philter_runner()
        if mask is None:
            print(f"philter-lite: {note}")
        else:
            theirs = score(reports, mask)
            print(_row("philter-lite", theirs))
            kept, total, lost = fixture_reports_kept(mask, 50)
            print(f"{'philter-lite':<14} fixture reports: {100 * kept:.2f}% of {total} tokens kept")
            print(f"  ({note})")
            if args.show_missed:
                print("philter-lite missed:", theirs["missed"].most_common(args.show_missed))
    print(f"load average (1 min) after the run: {os.getloadavg()[0]:.1f} (shared machine)")


if __name__ == "__main__":
    main()
