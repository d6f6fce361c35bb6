"""Training text as LLaVA-Rad trains on it: the same input_ids and labels as the reference's own construction, on a
LLaMA-style sentencepiece tokenizer (the release twin's, trained at fixture time like Vicuna's), for findings with
newlines, tabs and double spaces, and indications holding a literal `<image>`.

The reference side is fixtures/llava_rad_reference.py (its construction written out from its code), tokenizing
with sentencepiece itself, as its slow LlamaTokenizer (`use_fast=False`) does: BOS + the pieces of each chunk,
`</s>` as the EOS id (bench/reference_tokenizer_check.py runs the same construction under transformers 4.31's
own slow tokenizer). cxrflow's side is its own data path with the tokenizer transformers converts from the same
`tokenizer.model` (training/text.py)."""

from __future__ import annotations

import pytest

from fixtures.llava_rad_reference import (
    FINDINGS,
    IMAGE_TOKEN_INDEX,
    INDICATIONS,
    as_reference,
    reference_plain,
    reference_v1,
)
from fixtures.llava_rad_release import write_lm_tokenizer
from training.text import IGNORE, IMAGE_TOKEN, encode_example, load_lm_tokenizer

N_IMAGE = 4


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("vicuna-tok")
    write_lm_tokenizer(d)
    return spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")), load_lm_tokenizer(d)


def _slow(sp):
    """`tokenizer(text).input_ids` of the slow LLaMA tokenizer: BOS, then sentencepiece on each stretch between
    special tokens (here only `</s>`, which Vicuna's config declares without stripping around it)."""

    def tokenize(text: str) -> list[int]:
        ids = [sp.bos_id()]
        parts = text.split("</s>")
        for k, part in enumerate(parts):
            ids += sp.encode(part) if part else []
            if k < len(parts) - 1:
                ids.append(sp.eos_id())
        return ids

    return tokenize


def _ours(tok, enc) -> tuple[list[int], list[int]]:
    return as_reference(enc.input_ids, enc.labels, tok.convert_tokens_to_ids(IMAGE_TOKEN))


@pytest.mark.parametrize("findings", FINDINGS)
def test_stage2_ids_and_labels_equal_the_reference(tokenizers, findings):
    sp, tok = tokenizers
    for reason in INDICATIONS:
        enc = encode_example(tok, 2, findings, reason, N_IMAGE, 4096, "llava-rad")
        # <image> in a reason is gone: the image's tokens once
        assert enc.input_ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == N_IMAGE
        ids, labels, mismatch = reference_v1(_slow(sp), sp.bos_id(), findings, reason)
        assert not mismatch  # the reference's own length check passes: it trains on this example
        assert _ours(tok, enc) == (ids, labels), (findings, reason)
        assert IMAGE_TOKEN_INDEX in ids


@pytest.mark.parametrize("findings", FINDINGS)
def test_stage1_ids_and_labels_equal_the_reference(tokenizers, findings):
    sp, tok = tokenizers
    enc = encode_example(tok, 1, findings, "ignored", N_IMAGE, 4096, "llava-rad")
    assert _ours(tok, enc) == reference_plain(_slow(sp), sp.bos_id(), findings)


def test_answer_keeps_its_whitespace(tokenizers):
    """The answer tokens decode to the findings as written (no collapsing of newlines, tabs, double spaces)."""
    _, tok = tokenizers
    findings = FINDINGS[-1]
    enc = encode_example(tok, 2, findings, None, N_IMAGE, 4096, "llava-rad")
    answer = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]
    # (the decoder drops the one leading space of the first piece, as LLaMA's does)
    assert tok.decode(answer[:-1]) == findings and answer[-1] == tok.eos_token_id
