"""CheXprompt `protocol: original`: the published metric's own prompt, read from a local checkout of
microsoft/chexprompt, and its own answer parsing, reproduced.

The prompt texts are data in the checkout's `src/chexprompt/evaluator.py` (`SYSTEM_INSTRUCTIONS`,
`USER_INSTRUCTIONS` with the fields `{examples_formatted}`, `{eval_reference}`, `{eval_candidate}`, and
`EXAMPLES_FORMATTED`). They are read with `ast` (the module is never imported: it imports openai 0.28) and
laid out as its `format_for_evaluation` + `format_full_prompt` do: a system message holding
SYSTEM_INSTRUCTIONS and a user message `USER_INSTRUCTIONS.format(...)` with the pair inserted verbatim. The
decoding settings are the defaults of its `ReportEvaluator.__init__`, read the same way. Nothing of the
published text is copied into cxrflow; every judgment records the sha256 of the file it came from.

The parser reproduces `extract_rating_dicts` of the checkout's `eval_utils.py` on the answer text, rejected
shapes included (tests/test_evaluate_chexprompt_published.py lists them): an answer is valid when it holds both
"Number of clinically (in)significant errors by type:" headers; text from the first "Explanation" on is
dropped; the insignificant list is what follows "\\nNumber of clinically insignificant errors by type:" (with
the newline), the significant one what lies between "Number of clinically significant errors by type: " (with
the space) and that; each list is read by replacing "),", "(", ")", "[" and "]" and splitting pairs on ",";
a pair whose count is not an int (or that has no comma) rejects the answer. Keys are kept as written, A-F
renamed to the published error names: a lowercase "a" or a "G" is its own key, as in the reference.
cxrflow's columns take the six A-F counts from that dict; a type the answer leaves out counts 0 and is listed
in `missing_types`, keys outside A-F are listed in `unmapped_keys` (the reference keeps them in its dict).
"""

from __future__ import annotations

import ast
import hashlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import UserError
from tasks.llm.operation import InvalidAnswer, Operation

EVALUATOR = Path("src/chexprompt/evaluator.py")
TEXT_NAMES = ("SYSTEM_INSTRUCTIONS", "USER_INSTRUCTIONS", "EXAMPLES_FORMATTED")
USER_FIELDS = {"examples_formatted", "eval_reference", "eval_candidate"}
HINT = (
    "git clone https://github.com/microsoft/chexprompt and pass that folder as --chexprompt-src "
    "(evaluate.chexprompt_src in a config); --protocol fewshot-own runs cxrflow's own paraphrase instead"
)
# The published answer format's headers and error names (eval_utils.py ERROR_TYPE_MAP): the interface of the
# metric, which any reimplementation must use.
SIG_HEAD = "Number of clinically significant errors by type:"
INSIG_HEAD = "Number of clinically insignificant errors by type:"
ERROR_TYPE_MAP = {
    "A": "false_positive_finding",
    "B": "omission_finding",
    "C": "incorrect_location",
    "D": "incorrect_severity",
    "E": "false_positive_comparison",
    "F": "omission_comparison",
}
# ReportEvaluator.__init__ argument -> request field; the values are read from the checkout.
_DECODING_ARGS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty")


@dataclass(frozen=True)
class PublishedPrompt:
    system: str
    user_template: str
    examples: str
    decoding: dict[str, Any]
    path: str
    sha256: str

    def messages(self, reference: str, candidate: str) -> list[dict[str, str]]:
        """format_full_prompt(*format_for_evaluation(reference, candidate))."""
        user = self.user_template.format(
            examples_formatted=self.examples, eval_reference=reference, eval_candidate=candidate
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def _source_error(src: Path, what: str) -> UserError:
    return UserError(f"--chexprompt-src {src}: {what}", HINT)


def _init_defaults(tree: ast.Module) -> dict[str, Any]:
    """Literal defaults of `ReportEvaluator.__init__`'s keyword arguments."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "ReportEvaluator":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    args = fn.args.args[len(fn.args.args) - len(fn.args.defaults) :]
                    out = {}
                    for arg, default in zip(args, fn.args.defaults, strict=True):
                        try:
                            out[arg.arg] = ast.literal_eval(default)
                        except ValueError:
                            continue
                    return out
    return {}


def load_published(src: Path | str) -> PublishedPrompt:
    """The published prompt from a checkout; a one-line UserError when it is not one."""
    src = Path(src)
    path = src / EVALUATOR
    if not src.is_dir():
        raise _source_error(src, "is not a folder")
    if not path.is_file():
        raise _source_error(src, f"no {EVALUATOR} (not a microsoft/chexprompt checkout)")
    data = path.read_bytes()
    try:
        tree = ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError) as e:
        raise _source_error(src, f"{EVALUATOR} does not parse as Python ({type(e).__name__})") from None
    texts: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in TEXT_NAMES:
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    value = None
                if not isinstance(value, str):
                    raise _source_error(src, f"{EVALUATOR}: {name} is not a string literal")
                texts[name] = value
    missing = [n for n in TEXT_NAMES if n not in texts]
    if missing:
        raise _source_error(src, f"{EVALUATOR} defines no {', '.join(missing)}")
    fields = {f for _, f, _, _ in string.Formatter().parse(texts["USER_INSTRUCTIONS"]) if f is not None}
    if fields != USER_FIELDS:
        raise _source_error(
            src, f"{EVALUATOR}: USER_INSTRUCTIONS has fields {sorted(fields)}, expected {sorted(USER_FIELDS)}"
        )
    defaults = _init_defaults(tree)
    decoding = {k: defaults[k] for k in _DECODING_ARGS if k in defaults}
    if len(decoding) != len(_DECODING_ARGS):
        raise _source_error(
            src,
            f"{EVALUATOR}: ReportEvaluator.__init__ lacks defaults for "
            f"{', '.join(k for k in _DECODING_ARGS if k not in decoding)}",
        )
    return PublishedPrompt(
        system=texts["SYSTEM_INSTRUCTIONS"],
        user_template=texts["USER_INSTRUCTIONS"],
        examples=texts["EXAMPLES_FORMATTED"],
        decoding=decoding,
        path=str(path.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def check_protocol_source(protocol: str, src: Path | str | None) -> None:
    """Before any work: `original` needs a checkout, and a given checkout must be one."""
    if protocol == "original" and src is None:
        raise UserError(
            "--protocol original reads the published CheXprompt prompt from a local microsoft/chexprompt "
            "checkout, and none was given",
            HINT,
        )
    if src is not None:
        load_published(src)


# --- the reference's parsing, reproduced --------------------------------------------------------------------
def _tuples(text: str) -> dict[str, int] | None:
    """parse_completion_tuples_to_dict: None where the reference logs an error and returns nothing."""
    text = text.replace("),", "::").replace("(", "").replace(")", "").replace("[", "").replace("]", "")
    out: dict[str, int] = {}
    for pair in text.split("::"):
        parts = pair.strip().split(",")
        key = parts[0].strip()
        try:
            out[ERROR_TYPE_MAP.get(key, key)] = int(parts[1].strip())
        except (IndexError, ValueError):
            return None
    return out


def parse_rating_text(text: str) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """(significant, insignificant) as the reference's parse_rating_text returns them."""
    if SIG_HEAD not in text:
        return None, None
    for prefix in ("Explanation", "Explanation of errors:"):
        if prefix in text:
            text = text.split(prefix)[0]
            break
    parts = text.split("\n" + INSIG_HEAD)
    insignificant = parts[-1].strip()
    significant = parts[0].split(SIG_HEAD + " ")[-1].strip()
    return _tuples(significant), _tuples(insignificant)


def extract_rating_dicts(content: str | None) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """The reference's extract_rating_dicts on the answer's text: (None, None) unless it is a valid rating."""
    if content is None or not content.strip() or SIG_HEAD not in content or INSIG_HEAD not in content:
        return None, None
    return parse_rating_text(content)


def rating_counts(content: str | None) -> dict[str, Any]:
    """The answer as cxrflow's judgment: per type A-F counts, what the reference's dicts hold (`rating`), and
    which types were left out or keys are unknown. InvalidAnswer where the reference gets None."""
    sig, insig = extract_rating_dicts(content)
    if sig is None or insig is None:
        which = (
            "no rating"
            if sig is None and insig is None
            else ("the clinically significant list" if sig is None else "the clinically insignificant list")
        )
        raise InvalidAnswer(f"the published parser rejects this answer ({which} does not parse)", raw=content)
    names = {v: k for k, v in ERROR_TYPE_MAP.items()}
    out: dict[str, Any] = {
        "clinically_significant": {t: sig.get(ERROR_TYPE_MAP[t], 0) for t in ERROR_TYPE_MAP},
        "clinically_insignificant": {t: insig.get(ERROR_TYPE_MAP[t], 0) for t in ERROR_TYPE_MAP},
        "missing_types": {
            "significant": [t for t, n in ERROR_TYPE_MAP.items() if n not in sig],
            "insignificant": [t for t, n in ERROR_TYPE_MAP.items() if n not in insig],
        },
        "unmapped_keys": sorted({k for d in (sig, insig) for k in d if k not in names}),
        "rating": {"clinically_significant": sig, "clinically_insignificant": insig},
    }
    return out


@dataclass(frozen=True, eq=False)
class TextProtocolOperation(Operation):
    """The published request shape (both text protocols): one system and one user message, a text answer read
    by the published parser, no response_format."""

    def build_messages(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.render_user(payload)},
        ]

    def parse_answer(
        self, content: str | None, refusal: str | None, finish_reason: str | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        if refusal:
            raise InvalidAnswer(f"refusal: {refusal[:200]}", raw=refusal)
        if not content or not content.strip():
            raise InvalidAnswer(f"empty answer (finish_reason={finish_reason})", raw=content)
        # No finish_reason check: the reference accepts any answer whose two lines parse, cut or not.
        parsed = rating_counts(content)
        assert self.postprocess is not None
        return self.postprocess(parsed, payload)  # type: ignore[arg-type]


def post_with(flatten: Any):
    """The judgment of a text answer: cxrflow's columns plus what the reference's parser made of it."""

    def post(parsed: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        return {**flatten(parsed), **{k: parsed[k] for k in ("missing_types", "unmapped_keys", "rating")}}

    return post


def published_operation(src: Path | str, response_model: Any, flatten: Any, no_rules: Any):
    """The `original` protocol's Operation: the checkout's prompt, one system + one user message, a text
    answer, the checkout's decoding defaults, no seed, no response_format."""
    pub = load_published(src)

    def render_user(payload: dict[str, Any]) -> str:
        return pub.messages(str(payload["reference"]), str(payload["candidate"]))[1]["content"]

    return TextProtocolOperation(
        name="chexprompt",
        system_prompt=pub.system,
        response_model=response_model,
        render_user=render_user,
        template_version=f"published-{pub.sha256}",  # the file's content is part of the version (and cache)
        postprocess=post_with(flatten),
        rules=no_rules,
        description="CheXprompt as published (microsoft/chexprompt checkout): prompt, parser, decoding",
        request_params={**pub.decoding, "seed": None, "response_format": None},
        extra={"chexprompt_src": pub.path, "chexprompt_src_sha256": pub.sha256},
    )
