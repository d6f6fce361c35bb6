"""ReportGenerator: the model/inference contract consumed by evaluation (issue 6).

Greedy decoding, left-padded mixed-length batches, the prompt template of the last trained stage (stage 2's
chat template once stage 2 has run)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from schemas.train import TrainConfig
from training.data import ImageTransform
from training.model import (
    build_model,
    build_tokenizer,
    configure_stage,
    image_size_for,
    load_projector,
    load_trainable,
    n_image_tokens,
)
from training.text import IMAGE_TOKEN, encode_prompt, prompt_text


class ReportGenerator:
    def __init__(self, model, tok, transform: ImageTransform, stage: int, device: str,
                 prompt_format: str = "tiny"):
        self.model, self.tok, self.transform, self.stage, self.device = model, tok, transform, stage, device
        self.prompt_format = prompt_format  # the training preset's conversation format (training/prompts.py)
        self.n_image_tokens = n_image_tokens(model)

    @classmethod
    def from_run(cls, run_dir: Path, device: str = "cpu") -> ReportGenerator:
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{run_dir} is not a training run dir (no config.json)")
        cfg = TrainConfig.model_validate_json(cfg_path.read_text())
        final = run_dir / "final"
        stage = 2 if (final / "stage2-trainable.safetensors").exists() else \
            1 if (final / "stage1-trainable.safetensors").exists() else 0
        if stage == 0:
            raise FileNotFoundError(f"{run_dir}: no finished stage (final/stage*-trainable.safetensors)")
        tok = build_tokenizer(cfg, run_dir)
        model = build_model(cfg, tok, run_dir)
        load_projector(model, load_file(str(final / "stage1-projector.safetensors")))
        if stage == 2:
            model = configure_stage(model, 2, cfg.stage2)
            load_trainable(model, load_file(str(final / "stage2-trainable.safetensors")))
            model = model.merge_and_unload()
        model.requires_grad_(False)
        model.eval().to(device)
        return cls(model, tok, ImageTransform(image_size_for(cfg), cfg.image_resize), stage, device, cfg.preset)

    def _stop_ids(self) -> list[int]:
        """End of sequence; after stage 1 of a format whose plain answers end with a separator instead (LLaVA-Rad:
        "\n"), that separator's last token too."""
        from training.prompts import prompt_format

        end = prompt_format(self.prompt_format).plain_end
        stops = [self.tok.eos_token_id]
        if self.stage == 1 and end:
            stops.append(self.tok.encode(end, add_special_tokens=False)[-1])
        return stops

    def preprocess_image(self, img: Image.Image) -> torch.Tensor:
        return self.transform(img)

    @torch.inference_mode()
    def generate(self, images: list[Image.Image], indications: list[str | None],
                 max_new_tokens: int = 256) -> list[str]:
        if len(images) != len(indications):
            raise ValueError("images and indications must have the same length")
        if not images:
            return []
        prompts = [encode_prompt(self.tok, prompt_text(self.stage, ind, self.prompt_format), self.n_image_tokens)
                   for ind in indications]
        n = max(map(len, prompts))
        pad = self.tok.pad_token_id
        ids = torch.full((len(prompts), n), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), n), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[r, n - len(p):] = torch.tensor(p)
            mask[r, n - len(p):] = 1
        pixels = torch.stack([self.preprocess_image(im) for im in images])
        dtype = next(self.model.parameters()).dtype
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            pixel_values=pixels.to(self.device, dtype), max_new_tokens=max_new_tokens, do_sample=False,
            num_beams=1, pad_token_id=pad, eos_token_id=self._stop_ids(),
            suppress_tokens=[self.tok.convert_tokens_to_ids(IMAGE_TOKEN)],  # a placeholder, never an output
        )
        return [self.tok.decode(row[n:], skip_special_tokens=True).strip() for row in out]
