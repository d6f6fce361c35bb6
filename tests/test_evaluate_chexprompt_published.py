"""CheXprompt `--protocol original` from a microsoft/chexprompt checkout: the prompt cxrflow sends equals, byte
for byte, what the checkout's own `format_for_evaluation` + `format_full_prompt` build (a stand-in checkout with
the published module layout; also a real one when CXRFLOW_CHEXPROMPT_SRC names it), the answer is parsed as
the published `extract_rating_dicts` parses it (every answer shape below, rejections included), the judgment
records the file's sha256, and without a checkout `original` is a one-line error."""

from __future__ import annotations

import hashlib
import json

import pytest
from chexprompt_support import checkout_modules, real_checkout, reference_messages
from evaluate_support import PUBLIC_CASES
from typer.testing import CliRunner

from fixtures.chexprompt_checkout import write_chexprompt_checkout
from fixtures.openai_server import OpenAIServer
from schemas.errors import UserError
from schemas.llm import LLMConfig
from tasks.evaluate.chexprompt import judge
from tasks.evaluate.chexprompt_published import (
    ERROR_TYPE_MAP,
    extract_rating_dicts,
    load_published,
    rating_counts,
)
from tasks.llm.operation import InvalidAnswer

S = "Number of clinically significant errors by type:"
I = "Number of clinically insignificant errors by type:"  # noqa: E741
SIX0 = "[(A, 0), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]"
ONE_A = "[(A, 1), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]"


def named(**counts: int) -> dict[str, int]:
    """A dict as the reference parser returns it: keys A-F renamed to the published error names."""
    return {ERROR_TYPE_MAP.get(k, k): v for k, v in counts.items()}


ZERO = named(A=0, B=0, C=0, D=0, E=0, F=0)
A1 = named(A=1, B=0, C=0, D=0, E=0, F=0)
# answer -> (significant, insignificant) as microsoft/chexprompt's extract_rating_dicts returns it (read off its
# eval_utils.py and checked against it: set CXRFLOW_CHEXPROMPT_SRC to rerun that check here).
SHAPES = {
    "square": (f"{S} {ONE_A}\n{I} {SIX0}", (A1, ZERO)),
    "round": (f"{S} {ONE_A.replace('[', '(').replace(']', ')')}\n{I} {SIX0}", (A1, ZERO)),
    "blank line between the lines": (f"{S} {ONE_A}\n\n{I} {SIX0}", (A1, ZERO)),
    "partial list": (f"{S} ((A, 0), (B, 2))\n{I} {ONE_A}", (named(A=0, B=2), A1)),
    "explanation after": (f"{S} {ONE_A}\n{I} {SIX0}\nExplanation: (B, 9) is ignored", (A1, ZERO)),
    "explanation of errors": (f"{S} {ONE_A}\n{I} {SIX0}\nExplanation of errors: none", (A1, ZERO)),
    "echoed 'Errors:' prefix": (f"Errors: {S} {ONE_A}\n{I} {SIX0}", (A1, ZERO)),
    "no spaces in pairs": (f"{S} [(A,1),(B,0)]\n{I} [(A,0)]", (named(A=1, B=0), named(A=0))),
    # kept as the reference keeps them: its dicts then lack the type, or hold a foreign key
    "no space after the header": (
        f"{S}{ONE_A}\n{I} {SIX0}",
        ({**{f"{S}A": 1}, **named(B=0, C=0, D=0, E=0, F=0)}, ZERO),
    ),
    "lowercase keys": (f"{S} {ONE_A.lower()}\n{I} {SIX0}", ({t: int(t == "a") for t in "abcdef"}, ZERO)),
    "an extra type G": (f"{S} {ONE_A[:-1]}, (G, 3)]\n{I} {SIX0}", ({**A1, "G": 3}, ZERO)),
    "a negative count": (f"{S} [(A, -1)]\n{I} {SIX0}", (named(A=-1), ZERO)),
    "three fields": (f"{S} [(A, 1, 2)]\n{I} {SIX0}", (named(A=1), ZERO)),
    # rejected (None on either side: invalid, asked once more)
    "both counts on one line": (f"{S} {ONE_A} {I} {SIX0}", (None, None)),
    "no insignificant line": (f"{S} {ONE_A}", (None, None)),
    "no significant line": (f"{I} {SIX0}", (None, None)),
    "explanation first": (f"Explanation: {S} {ONE_A}\n{I} {SIX0}", (None, None)),
    "empty": ("", (None, None)),
    "a count that is not an int": (f"{S} [(A, x)]\n{I} {SIX0}", (None, ZERO)),
    "colon pairs": (f"{S} [(A: 1)]\n{I} {SIX0}", (None, ZERO)),
    "a trailing full stop": (f"{S} {ONE_A}.\n{I} {SIX0}", (None, ZERO)),
    "an empty list": (f"{S} []\n{I} {SIX0}", (None, ZERO)),
}


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory):
    out = [write_chexprompt_checkout(tmp_path_factory.mktemp("chexprompt"))]
    if real_checkout() is not None:
        out.append(real_checkout())
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_parser_is_the_published_parser(shape):
    answer, expected = SHAPES[shape]
    assert extract_rating_dicts(answer) == expected
    if None in expected:
        with pytest.raises(InvalidAnswer, match="published parser rejects"):
            rating_counts(answer)
    else:
        counts = rating_counts(answer)
        assert counts["rating"] == {
            "clinically_significant": expected[0],
            "clinically_insignificant": expected[1],
        }
        sig = counts["clinically_significant"]
        assert sig == {t: expected[0].get(ERROR_TYPE_MAP[t], 0) for t in ERROR_TYPE_MAP}
        assert counts["missing_types"]["significant"] == [
            t for t, n in ERROR_TYPE_MAP.items() if n not in expected[0]
        ]


@pytest.mark.skipif(
    real_checkout() is None, reason="CXRFLOW_CHEXPROMPT_SRC names no microsoft/chexprompt checkout"
)
def test_parser_equals_a_real_checkouts_parser():
    with checkout_modules(real_checkout()) as (_, eval_utils):
        for answer, _expected in SHAPES.values():
            ref = eval_utils.extract_rating_dicts({"choices": [{"message": {"content": answer}}]})
            assert extract_rating_dicts(answer) == tuple(ref)


@pytest.mark.skipif(
    real_checkout() is None, reason="CXRFLOW_CHEXPROMPT_SRC names no microsoft/chexprompt checkout"
)
def test_parser_equals_a_real_checkouts_parser_on_random_shapes():
    """Seeded random answers built from the pieces the parser reacts to (headers with and without the space or
    newline, brackets, separators, foreign keys, non-int counts, explanations): same dicts, same rejections."""
    import logging
    import random

    atoms = [S, I, S + " ", "\n" + I, "\n", " ", "(", ")", "[", "]", ",", "),", "A", "G", "a", "0", "12", " x", "\t",
             "Explanation", "Explanation of errors:", "((A, 0), (B, 2))", "[(A, 1), (B, 0)]", "1.5", "+2", "::", ""]
    rng = random.Random(0)
    logging.disable(logging.CRITICAL)  # the reference logs every rejected pair
    try:
        with checkout_modules(real_checkout()) as (_, eval_utils):
            for _ in range(20000):
                text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 12)))
                text = (S + " " if rng.random() < 0.5 else "") + text
                if rng.random() < 0.5:
                    text += "\n" + I + " " + "".join(rng.choice(atoms) for _ in range(rng.randint(0, 6)))
                ref = eval_utils.extract_rating_dicts({"choices": [{"message": {"content": text}}]})
                assert extract_rating_dicts(text) == tuple(ref), text
    finally:
        logging.disable(logging.NOTSET)


PAIRS = [
    ("The lungs are clear.  No effusion.\n", 'Lungs clear; {braces} and "quotes" kept.'),
    ("  Leading and trailing spaces  ", "Small left effusion.\tTabbed."),
]


def test_prompt_is_the_checkouts_own_byte_for_byte(checkouts):
    for root in checkouts:
        pub = load_published(root)
        for reference, candidate in PAIRS:
            assert pub.messages(reference, candidate) == reference_messages(root, reference, candidate)
        path = root / "src" / "chexprompt" / "evaluator.py"
        assert pub.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert pub.decoding == {
            "temperature": 0.0,
            "max_tokens": 128,
            "top_p": 0.9,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
        }


def _published_answer(sig_a: int) -> str:
    return f"{S} [(A, {sig_a}), (B, 0), (C, 0), (D, 0), (E, 0), (F, 0)]\n{I} {SIX0}"


def test_judge_sends_the_checkouts_messages_and_records_the_hash(checkouts, tmp_path):
    root = checkouts[0]
    seen = []

    def responder(body):
        seen.append(body)
        return _published_answer(1 if "severe cardiomegaly" in body["messages"][1]["content"] else 0)

    with OpenAIServer(responder) as srv:
        cfg = LLMConfig(backend="openai", base_url=srv.base_url, model="judge", cache_dir=tmp_path / "c")
        out = judge(PUBLIC_CASES, cfg, n_bootstrap=0, protocol="original", chexprompt_src=root)
    sent = sorted(json.dumps(b["messages"]) for b in seen)  # requests may run concurrently
    assert sent == sorted(
        json.dumps(reference_messages(root, c["reference"], c["candidate"])) for c in PUBLIC_CASES
    )
    for body in seen:
        assert "response_format" not in body and "seed" not in body
        assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.0, 128, 0.9)
    assert out.columns["chexprompt_significant_A"].tolist() == [1.0, 0.0]
    sha = hashlib.sha256((root / "src" / "chexprompt" / "evaluator.py").read_bytes()).hexdigest()
    assert out.provenance["chexprompt_src_sha256"] == sha and out.summary["chexprompt_src_sha256"] == sha


def test_cli_original_with_and_without_a_checkout(checkouts, tmp_path, capsys):
    from cxrflow_cli.main import app, run

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(c) + "\n" for c in PUBLIC_CASES))
    base = ["chexprompt", "--input", str(pairs), "--backend", "openai-compatible", "--model", "judge"]
    # without --chexprompt-src: one line naming how to get the checkout, exit 2, nothing sent
    assert run([*base, "--base-url", "http://127.0.0.1:9", "--protocol", "original"]) == 2
    err = capsys.readouterr().err
    assert "git clone https://github.com/microsoft/chexprompt" in err and "Traceback" not in err
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "a", "reference": "x", "prediction": "y"}) + "\n")
    assert run(["score", "--predictions", str(preds), "--chexprompt-protocol", "original"]) == 2
    assert "--chexprompt-src" in capsys.readouterr().err and not (tmp_path / "metrics.json").exists()
    code = run(
        [
            *base,
            "--base-url",
            "http://127.0.0.1:9",
            "--protocol",
            "original",
            "--chexprompt-src",
            str(tmp_path),
        ]
    )
    assert code == 2 and "src/chexprompt/evaluator.py" in capsys.readouterr().err
    with OpenAIServer(lambda body: _published_answer(0)) as srv:
        res = CliRunner().invoke(
            app,
            [
                *base,
                "--base-url",
                srv.base_url,
                "--protocol",
                "original",
                "--chexprompt-src",
                str(checkouts[0]),
                "--out",
                str(tmp_path / "o"),
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "judgments.jsonl").read_text().splitlines()]
    assert {r["protocol"] for r in rows} == {"original"} and all(
        len(r["chexprompt_src_sha256"]) == 64 for r in rows
    )


def test_config_original_needs_a_checkout(checkouts):
    from pydantic import ValidationError

    from schemas.evaluation import EvaluateParams

    with pytest.raises(ValidationError, match="chexprompt_src"):
        EvaluateParams(out="x", predictions="p.jsonl", chexprompt_protocol="original")
    ok = EvaluateParams(
        out="x", predictions="p.jsonl", chexprompt_protocol="original", chexprompt_src=str(checkouts[0])
    )
    assert ok.chexprompt_src == str(checkouts[0])


def test_not_a_checkout_is_a_one_line_error(tmp_path):
    (tmp_path / "src" / "chexprompt").mkdir(parents=True)
    (tmp_path / "src" / "chexprompt" / "evaluator.py").write_text("SYSTEM_INSTRUCTIONS = 'x'\n")
    with pytest.raises(UserError, match="defines no USER_INSTRUCTIONS, EXAMPLES_FORMATTED"):
        load_published(tmp_path)
