"""One image for `cxrflow generate`: decoded, windowed, resized and encoded exactly as ingest stores it
(tasks/images.process), then read back, so the model sees what it saw in training."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from schemas.config import ImageConfig


def image_kind(path: Path) -> str:
    """'dicom' by extension or by the DICM magic at byte 128 (MIMIC DICOMs have .dcm; exports may not)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return "dicom"
    with open(path, "rb") as f:
        head = f.read(132)
    return "dicom" if head[128:132] == b"DICM" else "raster"


def load_image_like_ingest(path: Path, cfg: ImageConfig | None = None) -> Image.Image:
    from tasks.images import process

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    data, _, _, _ = process(path, image_kind(path), cfg or ImageConfig())
    return Image.open(io.BytesIO(data)).convert("L")
