"""The release's adapter_config.json: LoRA settings the preset's PEFT wrapping would not reproduce are refused
(a fast unit test beside the slow release-twin tests in test_llava_rad_import.py)."""

from __future__ import annotations

import pytest

from training.llava_rad_release import ReleaseFormatError, lora_settings

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _cfg(**extra):
    return {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.05,
        "target_modules": TARGETS,
        **extra,
    }


def test_plain_lora_config_is_read():
    assert lora_settings(_cfg(rank_pattern={}, alpha_pattern={})) == {
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.05,
        "lora_targets": sorted(TARGETS),
    }


@pytest.mark.parametrize("key", ["rank_pattern", "alpha_pattern"])
def test_per_module_rank_or_alpha_is_refused(key):
    # the preset applies one r and one alpha to every module: a per-module alpha would silently change the
    # LoRA scale (alpha / r) of those modules, so the converted model would not be the released one
    with pytest.raises(ReleaseFormatError, match=key):
        lora_settings(_cfg(**{key: {"model.layers.0.self_attn.q_proj": 16}}))
