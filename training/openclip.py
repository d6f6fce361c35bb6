"""Importing open_clip on any host, and the tiny timm ViT the CPU encoder configs name.

open_clip imports torchvision. The only torchvision wheel matching a CPU-only torch build may be a CUDA build
whose compiled ops cannot load; torchvision then fails at import while registering fake kernels for
`torchvision::nms`/`qnms`, ops open_clip never calls. `import_open_clip` declares those two op schemas (no
kernels: calling them would still fail) only in that case, so the import succeeds. On a host where torchvision's
ops load (any matched CUDA install) it does nothing.

On such a host torchvision must also stay out of the way of every other import: transformers imports an
installed torchvision on its own and would fail the same way. There it is installed outside site-packages,
`pip install --no-deps --target .venv/isolated torchvision==<the release for this torch>` (`make install`
does it), and `import_open_clip` puts that folder on sys.path only after declaring the missing ops.

`TINY_TIMM_VIT` is a timm VisionTransformer registered under a cxrflow name, the same class as BiomedCLIP's
trunk, at the tiny LLaVA preset's image shape (32 px, patch 8, width 32) with 4 blocks: the block LLaVA takes
(the second-to-last) has passed through trained layers. The CPU encoder is trained, evaluated and plugged into
LLaVA through exactly the code path the real BiomedCLIP directory takes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TINY_TIMM_VIT = "cxrflow_vit_tiny_patch8_32"
TINY_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0)


def _torchvision_ops_load() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: open_clip's own import error names it
    for folder in spec.submodule_search_locations:
        for lib in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):
                return False
    return False


_DECLARED: list = []  # keeps the torch.library.Library alive (dropping it would undo the definitions)


def _declare_missing_torchvision_ops() -> None:
    import torch

    if _DECLARED or _torchvision_ops_load():
        return
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (no kernels on purpose)
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _DECLARED.append(lib)


def _register_tiny_vit() -> None:
    from timm.models import register_model
    from timm.models._registry import is_model
    from timm.models.vision_transformer import VisionTransformer

    if is_model(TINY_TIMM_VIT):
        return

    def cxrflow_vit_tiny_patch8_32(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(f"{TINY_TIMM_VIT} has no pretrained weights (it is the random CPU encoder)")
        # timm's factory passes its own bookkeeping (pretrained_cfg, cache_dir), not model arguments
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
        model = VisionTransformer(**{**TINY_VIT_ARGS, **kwargs})
        model.pretrained_cfg = model.default_cfg = {
            "architecture": TINY_TIMM_VIT,
            "num_classes": 0,
            "input_size": (3, TINY_VIT_ARGS["img_size"], TINY_VIT_ARGS["img_size"]),
        }
        return model

    register_model(cxrflow_vit_tiny_patch8_32)


ISOLATED = Path(sys.prefix) / "isolated"


def import_open_clip():
    """open_clip, importable here, with the tiny ViT registered in timm."""
    if importlib.util.find_spec("torchvision") is None and (ISOLATED / "torchvision").is_dir():
        sys.path.append(str(ISOLATED))
    _declare_missing_torchvision_ops()
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(
            "the image encoder stage and open_clip vision towers need the `open_clip_torch` and "
            "`timm` packages (pip install open_clip_torch)"
        ) from e
    _register_tiny_vit()
    return open_clip
