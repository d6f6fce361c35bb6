"""Source pixels -> the stored training image.

DICOM: stored values -> modality LUT (rescale) -> VOI LUT or window -> MONOCHROME1 inversion -> 8 bits,
using pydicom's own functions. They are evaluated once over the range of stored values to build a lookup
table, so the per-pixel work is one table lookup on an already reduced image instead of float maths on
~8M pixels (docs/pitfalls.md: the float path costs ~23 ms per film).

Geometry: LLaVA-Rad's default is shortest side to `size` then center crop; `pad` keeps the whole film
(longest side to `size`, black padding). Big films are first area-reduced by an integer factor on the
stored values (cv2 INTER_AREA's box means; `box_mean_u16` gives the same ~2x faster for 12-bit films), then
resampled bicubically to the final size. The reduction happens before the VOI transform: linear rescale and
MONOCHROME1 inversion commute with box means exactly; window clipping differs only inside blocks that straddle the window edge.
No flips or rotations are ever applied, so orientation is the film's own.

Reduced-resolution decoding (ImageConfig.exact off, the default): JPEG 2000 films decode only the wavelet
resolution levels the output needs (OpenJPEG `reduce` through Pillow) and JPEG films scale in the DCT domain
(libjpeg `draft`), both by a power of two no larger than the integer reduction factor; the rest of the
reduction is the same area + bicubic path. docs/decoding.md gives the measured difference from the full
decode; `exact` restores it.
"""

from __future__ import annotations

import io
import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_j2k_parameters
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from cxrio import read_mapped
from schemas.config import ImageConfig

# Bump when the pixel pipeline changes in a way that alters output bytes: it is part of the cache key.
PIPELINE_VERSION = "3"

cv2.setNumThreads(1)  # parallelism comes from processes; threads inside each would oversubscribe cores


class ImageDecodeError(Exception):
    """The image cannot be turned into pixels; the message is the quarantine reason."""


@dataclass
class Decoded:
    """Stored values (already area-reduced) plus the table that maps them to 8-bit display values."""

    pixels: np.ndarray  # 2-D integer array
    lut: np.ndarray | None  # uint8 table indexed by (value - lut_offset); None: pixels are already uint8
    lut_offset: int
    decoder: str

    def to_uint8(self) -> np.ndarray:
        if self.lut is None:
            return self.pixels
        # np.take, not lut[pixels]: the same values, ~2x faster than fancy indexing (BENCHMARKS.md, issue 28)
        if self.lut_offset == 0:
            return np.take(self.lut, self.pixels)
        if 0 < self.lut_offset <= 1 << 16:  # no value lies below the offset: pad the table, index directly
            return np.take(np.concatenate([np.zeros(self.lut_offset, np.uint8), self.lut]), self.pixels)
        return np.take(self.lut, self.pixels.astype(np.int64) - self.lut_offset)


# --------------------------------------------------------------------------------------------- geometry


def reduce_factor(height: int, width: int, cfg: ImageConfig) -> int:
    """Largest integer factor that keeps the relevant side at or above the target size."""
    side = min(height, width) if cfg.resize == "crop" else max(height, width)
    return max(1, side // cfg.size)


def crop_box(height: int, width: int, cfg: ImageConfig, factor: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the source region to keep, trimmed to multiples of the reduction factor."""
    if cfg.resize == "crop":
        side = min(height, width)
        h = w = side - side % factor
    else:
        h, w = height - height % factor, width - width % factor
    return (height - h) // 2, (width - w) // 2, h, w


def box_mean_u16(region: np.ndarray, factor: int) -> np.ndarray:
    """cv2's INTER_AREA result for an integer factor >= 3 on uint16 values whose factor x factor block sums
    fit in 16 bits (12-bit films up to factor 4), ~2x faster: cv2 sums each block in a scalar loop; here the
    rows of a block are added as whole rows (SIMD), and the columns as strided rows, or for factor 4 as the
    four 16-bit lanes of one uint64 (a multiply by 0x0001000100010001 puts their sum in the top lane: no
    partial sum carries when the total fits). The mean is then rounded as cv2 rounds it: the float32 sum times
    float32(1 / factor^2), to nearest, ties to even (tests/test_decode_reduced.py holds it to cv2's output).
    Factor 2 is not taken: cv2's own SIMD path for it is fast, and rounds ties up."""
    h, w = region.shape
    rows = region.reshape(h // factor, factor, w)
    return _box_finish(_add_rows(rows, np.empty((h // factor, w), np.uint16)), factor)


def _add_rows(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i] = the sum of rows[i, 0..factor-1] (uint16, whole rows at a time)."""
    np.add(rows[:, 0], rows[:, 1], out=out)
    for k in range(2, rows.shape[1]):
        out += rows[:, k]
    return out


def _box_finish(sums: np.ndarray, factor: int) -> np.ndarray:
    """Column sums of the row sums, then cv2's rounding of the mean (box_mean_u16)."""
    if factor == 4:
        lanes = sums.view(np.uint64)  # w is a multiple of 4, so each row is a whole number of uint64s
        lanes *= np.uint64(0x0001000100010001)
        lanes >>= np.uint64(48)
        total = lanes.astype(np.uint16).astype(np.float32)  # via uint16: numpy's uint64 -> float32 is slow
    else:
        cols = sums[:, 0::factor] + sums[:, 1::factor]
        for k in range(2, factor):
            cols += sums[:, k::factor]
        total = cols.astype(np.float32)
    total *= np.float32(1) / np.float32(factor * factor)
    return np.rint(total, out=total).astype(np.uint16)


STRIP_ROWS = 128  # ~650 KB of a 2544-px film: its min/max pass leaves it in the core's L2 for the row sums


def reduce_in_one_pass(arr: np.ndarray, cfg: ImageConfig, bits: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(area_reduce(arr, cfg), the whole film's (min, max)) of unsigned 16-bit stored values with BitsStored
    `bits`, reading the film from memory once instead of twice: in strips of rows, each strip's min/max and
    then its block row sums while it is in cache (the film itself is read from the page cache, so a second
    pass over ~15 MB is a second trip to memory). The values and the table are what `value_range` and
    `box_mean_u16` give. None where that shortcut does not apply: a factor below 3, values wider than the
    16-bit sums allow, or a bit above `bits` set anywhere (pydicom masks those: the caller masks and takes
    the two passes)."""
    height, width = arr.shape
    factor = reduce_factor(height, width, cfg)
    if factor < 3 or arr.dtype != np.uint16 or ((1 << bits) - 1) * factor * factor >= 1 << 16:
        return None
    top, left, h, w = crop_box(height, width, cfg, factor)
    lo, hi = 1 << 16, -1
    for part in (arr[:top], arr[top + h :]):  # rows outside the kept region count for the film's extent
        if part.size:
            a, b, _, _ = cv2.minMaxLoc(part)
            lo, hi = min(lo, int(a)), max(hi, int(b))
    if hi >> bits > 0:
        return None
    sums = np.empty((h // factor, w), np.uint16)
    step = factor * max(1, STRIP_ROWS // factor)
    for start in range(0, h, step):
        strip = arr[top + start : top + min(start + step, h)]  # whole rows: the columns cut off count too
        a, b, _, _ = cv2.minMaxLoc(strip)
        if int(b) >> bits:
            return None
        lo, hi = min(lo, int(a)), max(hi, int(b))
        rows = strip[:, left : left + w].reshape(-1, factor, w)
        _add_rows(rows, sums[start // factor : start // factor + rows.shape[0]])
    return _box_finish(sums, factor), (lo, hi)


def area_reduce(arr: np.ndarray, cfg: ImageConfig, extent: tuple[int, int] | None = None) -> np.ndarray:
    """Crop (crop mode) and integer-factor box reduction of a 2-D array of any integer type. `extent`: the
    array's (min, max) where the caller knows it, which lets 12-bit films take `box_mean_u16`."""
    height, width = arr.shape
    factor = reduce_factor(height, width, cfg)
    top, left, h, w = crop_box(height, width, cfg, factor)
    region = arr[top : top + h, left : left + w]
    if factor == 1:
        return np.ascontiguousarray(region)
    if factor >= 3 and region.dtype == np.uint16 and extent is not None and extent[1] * factor * factor < 1 << 16:
        return box_mean_u16(region, factor)
    if region.dtype == np.int32 or region.dtype == np.uint32:  # cv2 has no 32-bit integer resize
        region = region.astype(np.float32)
    out = cv2.resize(region, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return out.astype(arr.dtype) if out.dtype != arr.dtype else out


def _bicubic(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resample (LLaVA-Rad's filter). After the integer reduction the remaining factor is always
    below 2, where cv2's plain bicubic needs no anti-aliasing and is ~3x faster than PIL's."""
    if gray.shape == (height, width):
        return gray
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_CUBIC)


def finish(gray: np.ndarray, cfg: ImageConfig) -> Image.Image:
    """8-bit reduced image -> exactly size x size."""
    h, w = gray.shape
    if cfg.resize == "crop":
        # Already square (center crop happened before the reduction).
        return Image.fromarray(_bicubic(gray, cfg.size, cfg.size), mode="L")
    scale = cfg.size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("L", (cfg.size, cfg.size), 0)
    canvas.paste(Image.fromarray(_bicubic(gray, nw, nh), mode="L"), ((cfg.size - nw) // 2, (cfg.size - nh) // 2))
    return canvas


def encode(im: Image.Image, cfg: ImageConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.format == "jpeg":
        im.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    else:
        im.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def extension(cfg: ImageConfig) -> str:
    return "jpg" if cfg.format == "jpeg" else "png"


def preprocess_params(cfg: ImageConfig, allow_burned_in: bool = False) -> str:
    """The JSON recorded in the manifest's lineage and hashed into the cache key. A run that keeps burned-in
    films keys its images apart, so a later run without the option never reuses one of them unchecked."""
    extra = {"burned_in_allowed": True} if allow_burned_in else {}
    return json.dumps({**cfg.model_dump(), "pipeline": PIPELINE_VERSION, "resample": "area+bicubic", **extra},
                      sort_keys=True)


# --------------------------------------------------------------------------------------------- DICOM


def _stored_range(ds: pydicom.Dataset, data: np.ndarray) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", data.dtype.itemsize * 8))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    # Some files carry a wrong BitsStored (VinDr-CXR): never index outside the table.
    return min(lo, int(data.min())), max(hi, int(data.max()))


def _voi_output_range(ds: pydicom.Dataset, values: np.ndarray, modality: np.ndarray) -> tuple[float, float]:
    """Range the VOI stage maps onto, following PS3.3 C.11 as pydicom implements it."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        if ds.get("ModalityLUTSequence"):
            return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        bits = int(ds.BitsStored)
        if int(ds.get("PixelRepresentation", 0)) == 0:
            y_min, y_max = 0.0, float(2**bits - 1)
        else:
            y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
        return y_min, y_max
    # No VOI: min-max over the film's own values (what MIMIC-CXR-JPG did).
    return float(modality.min()), float(modality.max())


def dicom_lut(ds: pydicom.Dataset, lo: int, hi: int, data_lo: int, data_hi: int) -> np.ndarray:
    """uint8 table over stored values lo..hi: modality LUT, VOI (LUT preferred over window), inversion."""
    values = np.arange(lo, hi + 1, dtype=np.int64)
    modality = apply_modality_lut(values, ds)  # integer when there is no rescale: VOI LUTs index by it
    voi_present = has_voi(ds)
    voi = np.asarray(apply_voi_lut(modality, ds), dtype=np.float64) if voi_present else modality
    modality = np.asarray(modality, dtype=np.float64)
    voi = np.asarray(voi, dtype=np.float64)
    if voi_present:
        out_lo, out_hi = _voi_output_range(ds, values, modality)
    else:
        seen = modality[data_lo - lo : data_hi - lo + 1]
        out_lo, out_hi = float(seen.min()), float(seen.max())
    scaled = (voi - out_lo) / max(out_hi - out_lo, 1e-9)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1: high values are dark; invert after VOI (PS3.3 C.7.6.3.1.2)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def _missing_plugin_reason(ds: pydicom.Dataset) -> str | None:
    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_compressed:
        return None
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"unsupported transfer syntax: {ts.name} ({ts}) has no decoder in pydicom"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies)  # e.g. "pylibjpeg - requires pylibjpeg-libjpeg>=2.1"
    return f"unsupported transfer syntax: {ts.name} needs a pixel plugin that is not installed ({missing})"


def _read(path: Path) -> mmap.mmap | bytes:
    """The file's contents, mapped where it can be (cxrio.read_mapped: no copy of a 15 MB film)."""
    try:
        return read_mapped(path)
    except OSError as exc:
        raise ImageDecodeError(f"unreadable DICOM: {type(exc).__name__}: {exc}") from exc


def read_dicom(path: Path | io.BytesIO) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for bad files
        raise ImageDecodeError(f"unreadable DICOM: {type(exc).__name__}: {exc}") from exc


def _header_contradiction(ds: pydicom.Dataset) -> str | None:
    """Headers a decoder would follow into a wrong picture (an RGB film read as one channel, a slope that
    maps every pixel to one value)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        return f"SamplesPerPixel {samples} contradicts PhotometricInterpretation {ds.get('PhotometricInterpretation')}"
    if "RescaleSlope" in ds and ds.RescaleSlope is not None and float(ds.RescaleSlope) == 0.0:
        return "RescaleSlope 0: every pixel would map to one value"
    return None


def _geometry_mismatch(ds: pydicom.Dataset) -> str | None:
    """Native (uncompressed) Pixel Data must be exactly Rows x Columns x frames x samples of BitsAllocated
    (plus one pad byte to an even length). Longer is not harmless padding: a header whose Rows was halved
    would otherwise decode as the top half of the film, silently."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"pixel geometry mismatch: geometry unreadable ({exc})"
    if rows <= 0 or cols <= 0 or bits <= 0:
        return f"pixel geometry mismatch: Rows {rows}, Columns {cols}, BitsAllocated {bits}"
    pixels = rows * cols * frames * samples
    expected = -(-pixels * bits // 8)
    got = len(ds.PixelData)
    if got not in (expected, expected + (expected % 2)):
        what = "truncated pixel data" if got < expected else "pixel geometry mismatch"
        return (f"{what}: Pixel Data is {got} bytes but Rows {rows} x Columns {cols} x {frames} frame(s) x "
                f"{bits} bits needs {expected} (the header does not describe these pixels)")
    return None


# Secondary Capture Image Storage and its multi-frame variants: screenshots and scanned films, which often
# carry burned-in text (names, dates) even when BurnedInAnnotation is absent.
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(f"1.2.840.10008.5.1.4.1.1.7{s}" for s in ("", ".1", ".2", ".3", ".4"))
ALLOW_BURNED_IN = "allow_burned_in_annotation"  # the ingest option that keeps such films


def burned_in_reason(ds: pydicom.Dataset) -> str | None:
    """Why the pixels may show PHI as text: BurnedInAnnotation YES, or absent on a secondary capture."""
    flag = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if flag == "YES":
        return (f"burned-in annotation: BurnedInAnnotation YES, the pixels may show PHI as text "
                f"(set options.{ALLOW_BURNED_IN} to keep)")
    sop = str(ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", "") or "")
    if not flag and sop in SECONDARY_CAPTURE_SOP_CLASSES:
        return ("burned-in annotation: a secondary capture without BurnedInAnnotation, the pixels may show PHI "
                f"as text (set options.{ALLOW_BURNED_IN} to keep)")
    return None


def check_pixels(
    ds: pydicom.Dataset, expected: tuple[int, int] | None = None, allow_burned_in: bool = True,
    located: bool = False,
) -> None:
    """The checks every decode path makes first: pixel data present, grayscale, headers that fit the pixels,
    and (`expected`: the source's metadata CSV Rows/Columns) a header that agrees with the source's metadata.
    `located`: the header was read without its pixel data, which native_view found in the file's bytes at
    exactly the header's geometry."""
    if not located and "PixelData" not in ds:
        raise ImageDecodeError("DICOM has no Pixel Data element")
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(f"not a grayscale radiograph: PhotometricInterpretation {ds.get('PhotometricInterpretation')}")
    contradiction = _header_contradiction(ds) or (None if located else _geometry_mismatch(ds))
    if contradiction:
        raise ImageDecodeError(contradiction)
    burned = None if allow_burned_in else burned_in_reason(ds)
    if burned:
        raise ImageDecodeError(burned)
    if expected is not None and (int(ds.Rows), int(ds.Columns)) != tuple(expected):
        raise ImageDecodeError(
            f"metadata geometry mismatch: DICOM Rows x Columns {ds.Rows} x {ds.Columns}, the source's "
            f"metadata says {expected[0]} x {expected[1]}"
        )


def _decoder_failure(exc: BaseException) -> bool:
    """An error of the decoder on this file: any Exception, and the PanicException of Rust-based plugins
    (pylibjpeg-rle panics on a header whose Rows is smaller than its frame), which derives from BaseException
    so that `except Exception` misses it. Interrupts and exits still propagate."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def dicom_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values of the first frame, with a precise reason when that is impossible."""
    check_pixels(ds)
    reason = _missing_plugin_reason(ds)
    if reason:
        raise ImageDecodeError(reason)
    try:
        plugin = preferred_plugin(ds)
        arr = pixel_array(ds, decoding_plugin=plugin) if plugin else ds.pixel_array
    except BaseException as exc:
        if not _decoder_failure(exc):
            raise
        msg = str(exc)
        if "could not broadcast" in msg:  # the decoded frame is not Rows x Columns: the header lies
            raise ImageDecodeError(f"pixel geometry mismatch: the compressed frame is not Rows {ds.Rows} x "
                                   f"Columns {ds.Columns} ({msg})") from exc
        if "less than" in msg or "truncat" in msg.lower() or "expected" in msg:
            raise ImageDecodeError(f"truncated pixel data: {msg}") from exc
        raise ImageDecodeError(f"pixel data could not be decoded: {type(exc).__name__}: {msg}") from exc
    if arr.ndim == 3:  # multi-frame: radiographs have one frame; take the first
        arr = arr[0]
    return arr


# Faster plugins where several are installed (BENCHMARKS.md, issue 16): CharLS decodes JPEG-LS ~4x faster
# than libjpeg; pylibjpeg-rle's C decoder ~5x faster than pydicom's numpy one.
PREFERRED_PLUGINS = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls", RLELossless: "pylibjpeg"}


def preferred_plugin(ds: pydicom.Dataset) -> str:
    """The plugin to ask pydicom for, or "" to let pydicom choose."""
    ts = ds.file_meta.TransferSyntaxUID
    name = PREFERRED_PLUGINS.get(ts, "")
    return name if name and name in get_decoder(ts).available_plugins else ""


def decoder_name(ds: pydicom.Dataset) -> str:
    ts = ds.file_meta.TransferSyntaxUID
    plugin = "native"
    if ts.is_compressed:
        decoder = get_decoder(ts)
        # pydicom tries plugins in registration order (`available_plugins` is sorted by name instead).
        plugin = preferred_plugin(ds) or next(iter(getattr(decoder, "_available", None) or decoder.available_plugins), "none")
    return f"pydicom-{pydicom.__version__}/{ts.name}/{plugin}"


def has_voi(ds: pydicom.Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)


# ------------------------------------------------------------------------- reduced-resolution DICOM decode


def power_of_two_scale(height: int, width: int, cfg: ImageConfig, limit: int = 32) -> int:
    """Largest power of two not above the integer reduction factor (and `limit`): the decoder's share."""
    factor = min(reduce_factor(height, width, cfg), limit)
    return 1 << (factor.bit_length() - 1)


def first_frame(ds: pydicom.Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def j2k_levels(codestream: bytes) -> int | None:
    """Wavelet decomposition levels from the main header's COD marker (None when it cannot be read)."""
    pos = codestream.find(b"\xff\x52", 2)
    if pos < 0 or pos + 10 > len(codestream):
        return None
    return codestream[pos + 9]  # Lcod(2) Scod(1) progression(1) layers(2) MCT(1), then levels


def j2k_stored_values(ds: pydicom.Dataset, codestream: bytes, reduce: int) -> np.ndarray:
    """The stored values pydicom's decode gives, at 1/2**reduce resolution, via Pillow's OpenJPEG.

    Pillow scales samples to its 8/16-bit mode (left shift by mode bits - precision) and offsets signed ones
    by 2**(precision - 1); both are undone. A codestream whose signedness disagrees with Pixel
    Representation is reinterpreted bit for bit as pydicom does (full resolution only: averaged
    wavelet samples cannot be reinterpreted)."""
    info = get_j2k_parameters(codestream)
    precision, signed = int(info["precision"]), bool(info["is_signed"])
    representation = int(ds.get("PixelRepresentation", 0))
    if precision > 16 or (reduce and signed != bool(representation)):
        raise ValueError("not a case for the reduced decode")
    with Image.open(io.BytesIO(codestream)) as im:
        im.reduce = reduce
        im.load()
        mode_bits = 8 if im.mode == "L" else 16
        if im.mode not in ("L", "I;16"):
            raise ValueError(f"unexpected Pillow mode {im.mode}")
        raw = np.asarray(im).astype(np.int32) >> (mode_bits - precision)
    values = raw - (1 << (precision - 1)) if signed else raw
    if signed != bool(representation):  # pydicom: shift left then right in the output dtype
        values = values & ((1 << precision) - 1)
        if representation:
            values = np.where(values >= 1 << (precision - 1), values - (1 << precision), values)
    dtype = np.dtype(f"{'i' if representation else 'u'}{int(ds.get('BitsAllocated', 16)) // 8}")
    return values.astype(dtype)


def jpeg_stored_values(codestream: bytes, scale: int) -> np.ndarray:
    """8-bit baseline JPEG frame decoded at 1/scale in the DCT domain (libjpeg through Pillow)."""
    with Image.open(io.BytesIO(codestream)) as im:
        if im.mode != "L":
            raise ValueError(f"not a grayscale JPEG: {im.mode}")
        w, h = im.size
        im.draft("L", (-(-w // scale), -(-h // scale)))
        im.load()
        return np.asarray(im)


def reduced_dicom_pixels(ds: pydicom.Dataset, cfg: ImageConfig) -> tuple[np.ndarray, str] | None:
    """(stored values at a power-of-two reduced size, decoder name) when the film allows it, else None
    (the caller takes pydicom's full decode, which also gives the precise error for a bad file)."""
    if cfg.exact or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts not in (JPEG2000Lossless, JPEG2000, JPEGBaseline8Bit):
        return None
    try:
        scale = power_of_two_scale(int(ds.Rows), int(ds.Columns), cfg)
        if scale == 1:
            return None
        frame = first_frame(ds)
        with Image.open(io.BytesIO(frame)) as im:  # the header only
            if im.size != (int(ds.Columns), int(ds.Rows)):
                return None  # the DICOM header and the codestream disagree: the full decode refuses it
        if ts == JPEGBaseline8Bit:
            if int(ds.get("BitsAllocated", 8)) != 8 or int(ds.get("PixelRepresentation", 0)):
                return None
            scale = min(scale, 8)
            return jpeg_stored_values(frame, scale), f"pillow-{Image.__version__}/{ts.name}/draft-1:{scale}"
        levels = j2k_levels(frame)
        reduce = min(scale.bit_length() - 1, levels if levels is not None else 0)
        if reduce == 0:
            return None
        arr = j2k_stored_values(ds, frame, reduce)
        return arr, f"pillow-{Image.__version__}/{ts.name}/reduce-{reduce}"
    except BaseException as exc:  # any surprise: the full decode decides
        if not _decoder_failure(exc):
            raise
        return None


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def value_range(arr: np.ndarray) -> tuple[int, int]:
    """(min, max) in one pass (cv2; numpy's min and max are two, and cv2 has no 32-bit unsigned type)."""
    if arr.dtype == np.uint32 or arr.dtype.itemsize > 4 and arr.dtype.kind in "iu":
        return int(arr.min()), int(arr.max())
    lo, hi, _, _ = cv2.minMaxLoc(arr)
    return int(lo), int(hi)


def native_view(raw: bytes | mmap.mmap) -> tuple[pydicom.Dataset, np.ndarray, int] | None:
    """(header, stored values as in the file, BitsStored) of a single-frame uncompressed little-endian 16-bit
    film, the values a view of `raw` instead of pydicom's copy (BENCHMARKS.md, issue 28: the read, the copy and
    the bit masking were half the work on MIMIC-CXR's films); None for anything else, where pydicom's decode
    decides (errors included). `masked` turns them into pydicom's pixel_array values. `raw` may be a mapping
    of the file (a file-like object itself: pydicom reads the header from it without copying the rest)."""
    try:
        header = raw if isinstance(raw, mmap.mmap) else io.BytesIO(raw)
        header.seek(0)
        ds = pydicom.dcmread(header, stop_before_pixels=True)
        ts = ds.file_meta.get("TransferSyntaxUID")
        if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) or int(ds.get("BitsAllocated") or 0) != 16:
            return None
        if int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("NumberOfFrames") or 1) != 1:
            return None
        bits, signed = int(ds.get("BitsStored") or 16), int(ds.get("PixelRepresentation") or 0)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:
        return None
    if signed and bits != 16:  # sign extension from a narrower field: pydicom's
        return None
    size, header = rows * cols * 2, 12 if ts == ExplicitVRLittleEndian else 8
    at = len(raw) - size - header  # the element ends the file (anything after it: pydicom's decode)
    if at < 0 or raw[at : at + 4] != _PIXEL_DATA_TAG or int.from_bytes(raw[at + header - 4 : at + header], "little") != size:
        return None
    if header == 12 and raw[at + 4 : at + 8] not in (b"OW\x00\x00", b"OB\x00\x00"):
        return None
    arr = np.frombuffer(raw, dtype="<i2" if signed else "<u2", count=rows * cols, offset=at + header).reshape(rows, cols)
    return ds, arr, bits


def masked(arr: np.ndarray, bits: int) -> tuple[np.ndarray, tuple[int, int]]:
    """pydicom's values of a `native_view` and their (min, max): bits above BitsStored masked when any is set
    (unsigned; signed views are 16 bits stored)."""
    extent = value_range(arr)
    if arr.dtype == np.uint16 and bits < 16 and extent[1] >> bits:
        arr = arr & np.uint16((1 << bits) - 1)
        extent = value_range(arr)
    return arr, extent


def native_pixels(raw: bytes | mmap.mmap) -> tuple[pydicom.Dataset, np.ndarray, tuple[int, int]] | None:
    """(header, pydicom's stored values, their (min, max)) where `native_view` applies, else None."""
    view = native_view(raw)
    return None if view is None else (view[0], *masked(view[1], view[2]))


def decode_dicom(
    src: Path | bytes | mmap.mmap, cfg: ImageConfig, expected: tuple[int, int] | None = None,
    allow_burned_in: bool = False,
) -> Decoded:
    """`src`: the file, or its contents (bytes or a mapping) when the caller already has them."""
    raw = src if isinstance(src, bytes | mmap.mmap) else _read(src)
    native = native_view(raw)
    reduced = None
    if native:
        ds, arr, bits = native
        check_pixels(ds, expected, allow_burned_in, located=True)
        decoder = decoder_name(ds)
        fused = reduce_in_one_pass(arr, cfg, bits)
        if fused:
            reduced, extent = fused
        else:
            arr, extent = masked(arr, bits)
    else:
        ds = read_dicom(io.BytesIO(raw))
        check_pixels(ds, expected, allow_burned_in)
        fast = reduced_dicom_pixels(ds, cfg)
        arr, decoder = fast if fast else (dicom_pixels(ds), decoder_name(ds))
        extent = None
    # Without a VOI the film is min-max scaled over its whole extent (not the kept region), so crop and
    # pad of one film give the same intensities.
    data_lo, data_hi = (0, 0) if has_voi(ds) else (extent or value_range(arr))
    if reduced is None:
        reduced = area_reduce(arr, cfg, extent or (None if has_voi(ds) else (data_lo, data_hi)))
    lo, hi = _stored_range(ds, reduced)
    lut = dicom_lut(ds, min(lo, data_lo), max(hi, data_hi), data_lo, data_hi)
    return Decoded(pixels=reduced, lut=lut, lut_offset=min(lo, data_lo), decoder=decoder)


# --------------------------------------------------------------------------------------------- PNG / JPEG


def decode_raster(src: Path | bytes | mmap.mmap, cfg: ImageConfig) -> Decoded:
    """8- or 16-bit grayscale PNG/JPEG (RGB/RGBA converted to luminance); 16-bit is min-max scaled."""
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes | mmap.mmap) else src) as im:
            scale = 1
            if im.format == "JPEG" and not cfg.exact and im.mode in ("L", "RGB"):
                scale = min(power_of_two_scale(im.height, im.width, cfg), 8)
                if scale > 1:  # DCT-domain downscale inside libjpeg (docs/decoding.md: error bound)
                    im.draft("L", (-(-im.width // scale), -(-im.height // scale)))
            im.load()
            fmt = im.format if scale == 1 else f"{im.format}-draft-1:{scale}"
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint16 if im.mode.startswith("I;16") else np.int32)
            else:
                arr = np.asarray(im if im.mode == "L" else im.convert("L"))
    except Exception as exc:  # PIL raises OSError/SyntaxError/ValueError for damaged files
        raise ImageDecodeError(f"unreadable image: {type(exc).__name__}: {exc}") from exc
    decoder = f"pillow/{fmt}/{arr.dtype}"
    if arr.dtype == np.uint8:
        return Decoded(pixels=area_reduce(arr, cfg), lut=None, lut_offset=0, decoder=decoder)
    lo, hi = value_range(arr)  # whole film, as for DICOM without a VOI
    reduced = area_reduce(arr, cfg, (lo, hi))
    table = np.rint((np.arange(lo, hi + 1, dtype=np.float64) - lo) / max(hi - lo, 1) * 255.0).astype(np.uint8)
    return Decoded(pixels=reduced, lut=table, lut_offset=lo, decoder=decoder)


def decode(
    src: Path | bytes | mmap.mmap, kind: str, cfg: ImageConfig, expected: tuple[int, int] | None = None,
    allow_burned_in: bool = False,
) -> Decoded:
    """`src`: the file, or its contents (bytes or a mapping) when already read."""
    if kind == "dicom":
        return decode_dicom(src, cfg, expected, allow_burned_in)
    return decode_raster(src, cfg)


def process(
    path: Path, kind: str, cfg: ImageConfig, expected: tuple[int, int] | None = None, allow_burned_in: bool = False,
    data: bytes | mmap.mmap | None = None,
) -> tuple[bytes, int, int, str]:
    """Decode, reduce, map to 8 bits, resample and encode one image: (bytes, width, height, decoder).
    `expected`: (Rows, Columns) from the source's metadata, checked against a DICOM's header; a DICOM whose
    pixels may show burned-in PHI is refused unless `allow_burned_in`. `data`: the file's bytes (or its mapping) when the caller
    already read them (to hash them), so the file is read once."""
    decoded = decode(path if data is None else data, kind, cfg, expected, allow_burned_in)
    im = finish(decoded.to_uint8(), cfg)
    return encode(im, cfg), im.size[0], im.size[1], decoded.decoder
