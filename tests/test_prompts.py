"""The llava-rad preset's conversation format is LLaVA-Rad's (training/prompts.py cites the source files);
the LLaVA export and the training templates use the same strings."""

from __future__ import annotations

import json

import pytest

from tasks.export_llava import llava_records
from training.prompts import LLAVA_RAD, TINY
from training.text import answer_text, prompt_text

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_llava_rad_strings_are_the_reference_strings():
    assert prompt_text(2, None, "llava-rad") == (
        f"{SYSTEM} USER: <image>\nProvide a description of the findings in the radiology image. ASSISTANT:"
    )
    assert prompt_text(2, "Cough,\nfever.", "llava-rad") == (
        f"{SYSTEM} USER: <image>\nProvide a description of the findings in the radiology image given the "
        "following indication: Cough, fever. ASSISTANT:"
    )
    # stage 1 "plain": the image token, the findings, the separator "\n"; no end-of-sequence token
    assert prompt_text(1, "Cough.", "llava-rad") == "<image>"
    # the findings as written: the reference trains on its texts verbatim (double spaces, newlines, tabs)
    assert answer_text(1, "Lungs  clear.\n\tNo effusion.", "llava-rad") == ("Lungs  clear.\n\tNo effusion.\n", False)
    # stage 2: "ASSISTANT: <findings></s>"
    assert answer_text(2, "Lungs clear.", "llava-rad") == (" Lungs clear.", True)
    # the reference tests `reason is not None`: an empty reason still takes the indication wording; its
    # training (preprocess_multimodal) and evaluation (model_mimic_cxr.py) strip the human turn, so a reason
    # ending in whitespace leaves no trailing space before " ASSISTANT:" (derived by hand from that code)
    assert prompt_text(2, "", "llava-rad").endswith("given the following indication: ASSISTANT:")
    assert prompt_text(2, "Cough.\n", "llava-rad").endswith("indication: Cough. ASSISTANT:")
    assert prompt_text(2, "\nCough. ", "llava-rad").endswith("indication:  Cough. ASSISTANT:")
    # a literal <image> in an indication is removed, as preprocess_multimodal and model_mimic_cxr.py remove every
    # <image> of the human turn before putting one back in front
    assert prompt_text(2, "eval <image> cough", "llava-rad").endswith("indication: eval  cough ASSISTANT:")
    assert prompt_text(2, "<image>", "llava-rad").endswith("given the following indication: ASSISTANT:")
    assert prompt_text(2, "cough <image>", "tiny").count("<image>") == 1


def test_tiny_keeps_cxrflow_wording():
    assert TINY.system != LLAVA_RAD.system and prompt_text(1, None) == "<image>\n"
    assert answer_text(1, "Clear.") == ("Clear.", True)


@pytest.mark.parametrize("indication", [None, "Shortness of breath.", "Fever\nand cough"])
def test_export_and_training_agree(indication):
    row = {
        "subject_id": "10000001",
        "study_id": "50000001",
        "image_path": "images/ab/x.jpg",
        "image_key": "k",
        "indication_text": indication,
        "view": "PA",
        "targets_json": json.dumps([{"method": "rule-based", "findings": "Lungs clear."}]),
    }
    (record,) = llava_records(row)
    human = record["conversations"][0]["value"]
    assert f" USER: {human} ASSISTANT:" in prompt_text(2, indication, "llava-rad")
    assert record["reason"] == indication


def test_generation_stops_where_the_format_ends_an_answer():
    from training.inference import ReportGenerator
    from training.text import build_tiny_tokenizer

    gen = ReportGenerator.__new__(ReportGenerator)  # only the stop rule is under test: no model needed
    gen.tok = build_tiny_tokenizer()
    newline = gen.tok.encode("\n", add_special_tokens=False)[-1]
    for stage, fmt, stops in [
        (1, "tiny", [gen.tok.eos_token_id]),
        (2, "llava-rad", [gen.tok.eos_token_id]),
        (1, "llava-rad", [gen.tok.eos_token_id, newline]),
    ]:
        gen.stage, gen.prompt_format = stage, fmt
        assert gen._stop_ids() == stops
