"""Training text as LLaVA-Rad trains on it: the same input_ids and labels as the reference's own construction, on a
LLaMA-style sentencepiece tokenizer (the release twin's, trained at fixture time like Vicuna's), for findings with
newlines, tabs and double spaces, and indications holding a literal `<image>`.

The reference side is written here from its code (microsoft/LLaVA-Rad: llava/utils.py
`data_loader_mimic_reason_findings`, llava/train/train.py `preprocess_multimodal`, `preprocess_v1`,
`preprocess_plain`, llava/mm_utils.py `tokenizer_image_token`, llava/conversation.py `conv_vicuna_v1`), tokenizing
with sentencepiece itself, as its slow LlamaTokenizer (`use_fast=False`) does: BOS + the pieces of each chunk,
`</s>` as the EOS id. cxrflow's side is its own data path with the tokenizer transformers converts from the same
`tokenizer.model` (training/text.py)."""

from __future__ import annotations

import pytest

from fixtures.llava_rad_release import write_lm_tokenizer
from training.prompts import LLAVA_RAD
from training.text import IGNORE, IMAGE_TOKEN, encode_example, load_lm_tokenizer

IMAGE_TOKEN_INDEX = -200  # the reference's placeholder id (llava/constants.py)
N_IMAGE = 4

FINDINGS = [
    "The lungs are clear. No effusion.",
    "Mild cardiomegaly.\nSmall left pleural effusion.",  # a newline
    "Patchy opacity at the right base.\tAtelectasis.",  # a tab
    "Heart size is normal.  The lungs are clear.",  # a double space
    "  Leading spaces, trailing newline.\n",
    "Line one.\n\nLine three,  with 2 spaces\t and 12 digits.",
]
INDICATIONS = [None, "Cough, fever.", "Shortness of\nbreath", "eval <image> for pneumonia", " ", "<image>"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("vicuna-tok")
    write_lm_tokenizer(d)
    return spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")), load_lm_tokenizer(d)


def _slow_ids(sp, text: str) -> list[int]:
    """`tokenizer(text).input_ids` of the slow LLaMA tokenizer: BOS, then sentencepiece on each stretch between
    special tokens (here only `</s>`)."""
    ids = [sp.bos_id()]
    parts = text.split("</s>")
    for k, part in enumerate(parts):
        ids += sp.encode(part) if part else []
        if k < len(parts) - 1:
            ids.append(sp.eos_id())
    return ids


def _tokenizer_image_token(sp, prompt: str) -> list[int]:
    chunks = [_slow_ids(sp, c) for c in prompt.split("<image>")]
    out = [chunks[0][0]]  # the first chunk's BOS; every chunk's own BOS is dropped
    for k, chunk in enumerate(chunks):
        if k:
            out.append(IMAGE_TOKEN_INDEX)
        out += chunk[1:]
    return out


def _reference_v1(sp, findings: str, reason: str | None) -> tuple[list[int], list[int]]:
    # data loader: the human turn; preprocess_multimodal: every <image> out, stripped, one <image>\n in front
    if reason is not None:
        human = (
            "<image>\nProvide a description of the findings in the radiology image given the following "
            f"indication: {reason.replace(chr(10), ' ')}"
        )
    else:
        human = "<image>\nProvide a description of the findings in the radiology image."
    human = ("<image>\n" + human.replace("<image>", "").strip()).strip()
    # conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>")
    conversation = f"{LLAVA_RAD.system} USER: {human} ASSISTANT: {findings}</s>"
    ids = _tokenizer_image_token(sp, conversation)
    labels = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    labels[:cur] = [IGNORE] * cur
    for rou in conversation.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(_tokenizer_image_token(sp, rou))
        instruction_len = len(_tokenizer_image_token(sp, parts[0])) - 2
        labels[cur : cur + instruction_len] = [IGNORE] * instruction_len
        cur += round_len
    labels[cur:] = [IGNORE] * (len(labels) - cur)
    assert cur == len(ids), "the reference itself would report a tokenization mismatch"
    return ids, labels


def _reference_plain(sp, findings: str) -> tuple[list[int], list[int]]:
    conversation = "<image>" + findings + "\n"  # preprocess_plain: image, findings, conv_llava_plain's sep
    ids = _tokenizer_image_token(sp, conversation)
    n = len(_tokenizer_image_token(sp, "<image>"))
    return ids, [IGNORE] * n + ids[n:]


def _as_reference(tok, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """cxrflow's expanded image tokens folded back into the reference's one placeholder."""
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    out_ids, out_labels = [], []
    for i, lab in zip(ids, labels, strict=True):
        if i == image_id:
            if out_ids and out_ids[-1] == IMAGE_TOKEN_INDEX:
                continue
            assert lab == IGNORE
            i = IMAGE_TOKEN_INDEX
        out_ids.append(i)
        out_labels.append(lab)
    return out_ids, out_labels


@pytest.mark.parametrize("findings", FINDINGS)
def test_stage2_ids_and_labels_equal_the_reference(tokenizers, findings):
    sp, tok = tokenizers
    for reason in INDICATIONS:
        enc = encode_example(tok, 2, findings, reason, N_IMAGE, 4096, "llava-rad")
        assert (
            enc.input_ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == N_IMAGE
        )  # <image> in a reason: gone
        assert _as_reference(tok, enc.input_ids, enc.labels) == _reference_v1(sp, findings, reason), (
            findings,
            reason,
        )


@pytest.mark.parametrize("findings", FINDINGS)
def test_stage1_ids_and_labels_equal_the_reference(tokenizers, findings):
    sp, tok = tokenizers
    enc = encode_example(tok, 1, findings, "ignored", N_IMAGE, 4096, "llava-rad")
    assert _as_reference(tok, enc.input_ids, enc.labels) == _reference_plain(sp, findings)


def test_answer_keeps_its_whitespace(tokenizers):
    """The answer tokens decode to the findings as written (no collapsing of newlines, tabs, double spaces)."""
    _, tok = tokenizers
    findings = FINDINGS[-1]
    enc = encode_example(tok, 2, findings, None, N_IMAGE, 4096, "llava-rad")
    answer = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]
    # (the decoder drops the one leading space of the first piece, as LLaMA's does)
    assert tok.decode(answer[:-1]) == findings and answer[-1] == tok.eos_token_id
