"""Makes open_clip importable for the release-twin tests on this branch.

open_clip imports torchvision, whose only wheel for this CPU torch build is a CUDA build that cannot load its
compiled ops. training/openclip.py (the image-encoder work) owns the importer that copes with that; until it is
on this branch this helper does the same two steps (torchvision installed outside site-packages, the two op
schemas torchvision's import registers fakes for declared without kernels) or skips the tests that need it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_KEEP: list = []


def ensure_open_clip() -> None:
    try:
        from training.openclip import import_open_clip  # type: ignore[import-not-found]

        import_open_clip()
        return
    except ModuleNotFoundError:
        pass
    import torch

    isolated = Path(sys.prefix) / "isolated"
    if importlib.util.find_spec("torchvision") is None and (isolated / "torchvision").is_dir():
        sys.path.append(str(isolated))
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        pytest.skip("open_clip needs torchvision, which is not installed")
    loads = False
    for folder in spec.submodule_search_locations or []:
        for lib in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                loads = True
            except (OSError, RuntimeError):
                pass
    if not loads and not _KEEP:
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (schemas only, never called)
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP.append(lib)
    try:
        import open_clip  # noqa: F401
    except ImportError as e:
        pytest.skip(f"open_clip is not importable here: {e}")
