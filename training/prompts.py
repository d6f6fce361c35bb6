"""Conversation formats, the one place their strings live (training, generation, evaluation and the LLaVA export
all read them from here).

`llava-rad` reproduces, character for character, what the released LLaVA-Rad model was trained and evaluated
with: a checkpoint only works with the prompt it saw. Sources, github.com/microsoft/LLaVA-Rad at commit
1fc44096cc5766c28d8a3329240c8423100ce3df:
- llava/conversation.py, `conv_vicuna_v1` (conv mode "v1" in scripts/finetune_lora.sh and scripts/eval.sh): the
  system text, roles "USER"/"ASSISTANT", separator " " after the system text and the user turn, "</s>" after the
  answer; a generation prompt ends with "ASSISTANT:".
- llava/conversation.py, `conv_llava_plain` and `preprocess_plain` in llava/train/train.py (stage 1, version
  "plain" in scripts/pretrain.sh): the human turn is replaced by the image token alone, then the findings, then
  the separator "\n"; no system text, no end-of-sequence token.
- llava/utils.py, `data_loader_mimic_reason_findings` (loaders "mimic_train_findings"/"mimic_test_findings"):
  the user turn is "<image>\n" + the instruction; with a `reason` (not None) the indication variant is used,
  the reason's line breaks replaced by spaces; llava/train/train.py `preprocess_multimodal` and
  llava/eval/model_mimic_cxr.py then strip the human turn (no trailing space before " ASSISTANT:").
`tiny` is cxrflow's own wording for the offline test model (docs/reports.md).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class PromptFormat:
    name: str
    system: str
    user: str  # role names, rendered "USER: ..." / "ASSISTANT: ..."
    assistant: str
    instruction: str  # user turn without an indication
    instruction_with_indication: str  # with {indication}
    plain_prompt: str  # stage 1: text before the findings
    plain_end: str  # stage 1: text after the findings ("" = the tokenizer's end-of-sequence token)

    def instruction_for(self, indication: str | None) -> str:
        """A literal IMAGE_TOKEN inside an indication is removed (one image placeholder per prompt): the
        reference's preprocess_multimodal and model_mimic_cxr.py delete every `<image>` of the human turn
        before putting one back in front."""
        if self.name == "llava-rad":  # the reference tests `reason is not None` and only joins lines; its
            # training (preprocess_multimodal) and evaluation strip the human turn, hence the strip()
            if indication is None:
                return self.instruction
            text = self.instruction_with_indication.format(indication=indication.replace("\n", " "))
            return text.replace(IMAGE_TOKEN, "").strip()
        indication = (indication or "").replace(IMAGE_TOKEN, "")
        if indication.strip():
            return self.instruction_with_indication.format(indication=" ".join(indication.split()))
        return self.instruction

    def human_turn(self, indication: str | None) -> str:
        """The human message of a LLaVA-format record (and of the chat prompt)."""
        return f"{IMAGE_TOKEN}\n{self.instruction_for(indication)}"

    def chat_prompt(self, indication: str | None) -> str:
        """Stage 2 / generation: everything before the answer (Vicuna v1 layout)."""
        return f"{self.system} {self.user}: {self.human_turn(indication)} {self.assistant}:"


LLAVA_RAD = PromptFormat(
    name="llava-rad",
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    user="USER",
    assistant="ASSISTANT",
    instruction="Provide a description of the findings in the radiology image.",
    instruction_with_indication="Provide a description of the findings in the radiology image given the following "
    "indication: {indication}",
    plain_prompt=IMAGE_TOKEN,
    plain_end="\n",
)

TINY = PromptFormat(
    name="tiny",
    system="A conversation between a clinician and an AI assistant that reads chest radiographs. "
    "The assistant reports only what is visible on the image.",
    user="USER",
    assistant="ASSISTANT",
    instruction="Write the findings section of the radiology report for this chest X-ray.",
    instruction_with_indication="Write the findings section of the radiology report for this chest X-ray. "
    "The clinical indication for the study is: {indication}",
    plain_prompt=f"{IMAGE_TOKEN}\n",
    plain_end="",
)

FORMATS: dict[str, PromptFormat] = {f.name: f for f in (TINY, LLAVA_RAD)}


def prompt_format(name: str | PromptFormat) -> PromptFormat:
    """The format of a training preset ("tiny", "llava-rad")."""
    if isinstance(name, PromptFormat):
        return name
    if name not in FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name]
