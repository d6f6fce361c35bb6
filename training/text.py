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


# A local LM directory's files (transformers' names): one of each group must be there.
_LM_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json")
_LM_TOKENIZER = ("tokenizer.json", "tokenizer.model")


def lm_dir_problem(lm_path: Path) -> str | None:
    """Why a local LM directory (Vicuna-7B v1.5) cannot be used, in one line, or None. Checked before anything
    is written: config, weights, tokenizer files, the packages a sentencepiece `tokenizer.model` needs (the
    slow LLaMA tokenizer is sentencepiece; converting it to a fast one reads its protobuf), and that the
    tokenizer then loads."""
    import importlib.util

    p = Path(lm_path)
    if not p.is_dir():
        return f"{p} is not a folder"
    if not (p / "config.json").is_file():
        return f"{p}: no config.json (expected a local Vicuna-7B v1.5 directory)"
    if not any((p / n).is_file() for n in _LM_WEIGHTS):
        return f"{p}: no weights ({' or '.join(_LM_WEIGHTS)})"
    if not any((p / n).is_file() for n in _LM_TOKENIZER):
        return f"{p}: no tokenizer ({' or '.join(_LM_TOKENIZER)})"
    if not (p / "tokenizer.json").is_file():
        absent = [m for m, mod in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))
                  if importlib.util.find_spec(mod) is None]
        if absent:
            return (f"{p}/tokenizer.model needs the {' and '.join(absent)} package(s), absent from this "
                    "environment (run `make install`)")
    try:
        load_lm_tokenizer(p)
    except Exception as e:  # noqa: BLE001 - any loader failure is reported as one line
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return f"{p}: the tokenizer does not load ({type(e).__name__}: {first})"
    return None


def load_lm_tokenizer(lm_path: Path):
    """The LM's own tokenizer from a local directory, with <image> added and pad = unk (Vicuna). LLaVA-Rad loads
    Vicuna's with `use_fast=False` (sentencepiece); transformers 5 always builds the tokenizers-backed one,
    converting `tokenizer.model` (tests/test_train_text_reference.py compares the two on training text)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_path), local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    return tok


def prompt_text(stage: int, indication: str | None, fmt: str | PromptFormat = "tiny") -> str:
    """Text before the answer; IMAGE_TOKEN marks where the image's patch tokens go."""
    f = prompt_format(fmt)
    return f.plain_prompt if stage == 1 else f.chat_prompt(indication)


def answer_text(stage: int, findings: str, fmt: str | PromptFormat = "tiny") -> tuple[str, bool]:
    """(the answer's text, whether the end-of-sequence token follows it). The findings go in as they are: the
    reference trains on its texts verbatim (newlines, tabs, double spaces included), so whatever normalising
    there is belongs to the section parser, not here."""
    f = prompt_format(fmt)
    if stage == 1:
        return findings + f.plain_end, not f.plain_end
    return " " + findings, True  # Vicuna v1: "ASSISTANT: <answer></s>"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_prompt(tok, prompt: str, n_image_tokens: int) -> list[int]:
    """BOS + prompt with the single IMAGE_TOKEN expanded to one id per encoder patch. The text on each side of
    the image is tokenized on its own, as the reference's tokenizer_image_token does."""
    before, sep, after = prompt.partition(IMAGE_TOKEN)
    if not sep:
        raise ValueError("prompt has no image placeholder")
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    ids = [tok.bos_token_id] + _encode_chunk(tok, before)
    return ids + [image_id] * n_image_tokens + _encode_chunk(tok, after)


def _encode_chunk(tok, text: str) -> list[int]:
    """One chunk as the reference's slow LLaMA tokenizer encodes it. sentencepiece adds its dummy-prefix space
    to every text, also one that starts with a space; the tokenizers-converted LLaMA tokenizer (a Metaspace
    pre-tokenizer) adds none to such a text, one `▁` fewer (tests/test_train_text_reference.py). Other
    tokenizers (byte-level BPE) encode the text as it is."""
    pre = getattr(getattr(tok, "backend_tokenizer", None), "pre_tokenizer", None)
    if text.startswith(" ") and type(pre).__name__ == "Metaspace" and pre.prepend_scheme != "never":
        text = " " + text
    return tok.encode(text, add_special_tokens=False)


def encode_example(tok, stage: int, findings: str, indication: str | None, n_image_tokens: int,
                   max_length: int, fmt: str | PromptFormat = "tiny") -> Encoded:
    """The reference's construction (llava/train/train.py): prompt and answer are tokenized as ONE text, so an
    answer's first word takes the form it has after the prompt's separator; the label boundary is the
    reference's own. Stage 1 (`preprocess_plain`): the tokens of the prompt alone are masked. Stage 2
    (`preprocess_v1`): the tokens of "... ASSISTANT: " less one (that trailing space's token merges into the
    answer's first word in the whole text) are masked."""
    prompt = prompt_text(stage, indication, fmt)
    answer, eos = answer_text(stage, findings, fmt)
    ids = encode_prompt(tok, prompt + answer, n_image_tokens) + ([tok.eos_token_id] if eos else [])
    if stage == 1:
        n_prompt = len(encode_prompt(tok, prompt, n_image_tokens))
    else:
        n_prompt = len(encode_prompt(tok, prompt + " ", n_image_tokens)) - 1
    if max_length - n_prompt < 2:
        raise ValueError(f"max_length {max_length} leaves no room for the answer after {n_prompt} "
                         "prompt tokens")
    ids = ids[:max_length]  # truncate the answer, never the image tokens
    return Encoded(ids, [IGNORE] * n_prompt + ids[n_prompt:])
