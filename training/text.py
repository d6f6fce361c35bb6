"""Tokenizers and prompt templates. Stage 1 uses the "plain" template (image, then findings); stage 2 and
inference use a Vicuna v1 chat turn. The strings are in training/prompts.py, one format per preset. Loss is
computed on the answer tokens only (labels -100 elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.prompts import IMAGE_TOKEN, TINY, PromptFormat, prompt_format

IGNORE = -100
# Fixed corpus for the tiny preset's tokenizer, so it is identical on every machine and never downloaded.
_TINY_CORPUS = [
    TINY.system, TINY.instruction, " The clinical indication for the study is: {indication}", "USER: ASSISTANT:",
    "The lungs are clear. There is no pleural effusion or pneumothorax. The heart size is normal.",
    "Mild cardiomegaly. Small left pleural effusion. Patchy opacity at the right base, atelectasis.",
    "No focal consolidation. The mediastinal and hilar contours are unremarkable. Edema, pneumonia.",
    "Cough fever shortness of breath chest pain trauma evaluate for infiltrate.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """Byte-level BPE trained on a fixed corpus: offline, deterministic, and able to encode any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<unk>",  # Vicuna convention: pad = unk
        additional_special_tokens=[IMAGE_TOKEN],
    )


def load_lm_tokenizer(lm_path: Path):
    """The LM's own tokenizer from a local directory, with <image> added and pad = unk (Vicuna)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_path), local_files_only=True, use_fast=True)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    return tok


def prompt_text(stage: int, indication: str | None, fmt: str | PromptFormat = "tiny") -> str:
    """Text before the answer; IMAGE_TOKEN marks where the image's patch tokens go."""
    f = prompt_format(fmt)
    return f.plain_prompt if stage == 1 else f.chat_prompt(indication)


def answer_text(stage: int, findings: str, fmt: str | PromptFormat = "tiny") -> tuple[str, bool]:
    """(the answer's text, whether the end-of-sequence token follows it)."""
    f = prompt_format(fmt)
    text = " ".join(findings.split())
    if stage == 1:
        return text + f.plain_end, not f.plain_end
    return " " + text, True  # Vicuna v1: "ASSISTANT: <answer></s>"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_prompt(tok, prompt: str, n_image_tokens: int) -> list[int]:
    """BOS + prompt with the single IMAGE_TOKEN expanded to one id per encoder patch."""
    before, sep, after = prompt.partition(IMAGE_TOKEN)
    if not sep:
        raise ValueError("prompt has no image placeholder")
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    ids = [tok.bos_token_id] + tok.encode(before, add_special_tokens=False)
    return ids + [image_id] * n_image_tokens + tok.encode(after, add_special_tokens=False)


def encode_example(tok, stage: int, findings: str, indication: str | None, n_image_tokens: int,
                   max_length: int, fmt: str | PromptFormat = "tiny") -> Encoded:
    prompt_ids = encode_prompt(tok, prompt_text(stage, indication, fmt), n_image_tokens)
    answer, eos = answer_text(stage, findings, fmt)
    answer_ids = tok.encode(answer, add_special_tokens=False) + ([tok.eos_token_id] if eos else [])
    room = max_length - len(prompt_ids)
    if room < 2:
        raise ValueError(f"max_length {max_length} leaves no room for the answer after {len(prompt_ids)} "
                         "prompt tokens")
    answer_ids = answer_ids[:room]  # truncate the answer, never the image tokens
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)
