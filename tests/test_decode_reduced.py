"""Reduced-resolution decoding (JPEG 2000 `reduce`, JPEG `draft`), the `exact` switch, and the chunk plan
of the ingest engine."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from fixtures.dicom import DXSpec, dx_dataset, picture, stored_values, uid, write_dx, write_encoded_dx
from fixtures.mimic_cxr import write_mimic_cxr
from schemas.config import ImageConfig
from tasks import images
from tasks.images import (
    ImageDecodeError,
    area_reduce,
    box_mean_u16,
    first_frame,
    j2k_levels,
    j2k_stored_values,
    jpeg_stored_values,
    process,
)
from tasks.ingest import MAX_CHUNK, plan_chunks

FAST = box_mean_u16
IDS = dict(patient_id="10000001", study_uid=uid(1, "st"), series_uid=uid(1, "se"), sop_uid=uid(1, "sop"))


def _j2k(path: Path, values: np.ndarray, spec: DXSpec, signed: bool = False) -> pydicom.Dataset:
    ds = dx_dataset(values.astype(np.uint16), spec, **IDS)
    if signed:
        ds.PixelRepresentation = 1
        ds.PixelData = values.astype("<i2").tobytes()
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _out(path: Path, kind: str, cfg: ImageConfig) -> tuple[np.ndarray, str]:
    data, _, _, decoder = process(path, kind, cfg)
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16), decoder


@pytest.mark.parametrize("bits", [12, 16])
def test_j2k_level_0_equals_pydicom_unsigned(tmp_path, bits):
    ds = _j2k(
        tmp_path / "u.dcm",
        stored_values(picture(80, 64, seed=1), DXSpec(bits_stored=bits)),
        DXSpec(bits_stored=bits),
    )
    ours = j2k_stored_values(ds, first_frame(ds), 0)
    assert ours.dtype == ds.pixel_array.dtype and np.array_equal(ours, ds.pixel_array)


def test_j2k_level_0_equals_pydicom_signed_and_mismatched_sign(tmp_path):
    rng = np.random.default_rng(0)
    signed = rng.integers(-2048, 2048, size=(64, 48)).astype(np.int16)
    ds = _j2k(tmp_path / "s.dcm", signed, DXSpec(bits_stored=12), signed=True)
    assert np.array_equal(j2k_stored_values(ds, first_frame(ds), 0), ds.pixel_array)
    assert ds.pixel_array.min() < 0
    # Pixel Representation says signed, the codestream is unsigned: pydicom reinterprets the 12 bits.
    ds = _j2k(tmp_path / "m.dcm", rng.integers(0, 4096, size=(64, 48)), DXSpec(bits_stored=12))
    ds.PixelRepresentation = 1
    ours = j2k_stored_values(ds, first_frame(ds), 0)
    assert ours.dtype == np.int16 and np.array_equal(ours, ds.pixel_array) and ours.min() < 0
    with pytest.raises(ValueError):  # averaged wavelet samples cannot be reinterpreted bit for bit
        j2k_stored_values(ds, first_frame(ds), 1)


def test_j2k_reduced_decode_is_close_to_the_exact_path_and_named(tmp_path):
    path = tmp_path / "f.dcm"
    spec = DXSpec(photometric="MONOCHROME1", bits_stored=12, transfer_syntax=JPEG2000Lossless)
    write_dx(path, picture(640, 512, seed=4), spec, **IDS)
    assert j2k_levels(first_frame(pydicom.dcmread(path))) >= 2
    fast, fast_name = _out(path, "dicom", ImageConfig(size=128, format="png"))
    exact, exact_name = _out(path, "dicom", ImageConfig(size=128, format="png", exact=True))
    assert "reduce-2" in fast_name and exact_name.startswith("pydicom-")
    diff = np.abs(fast - exact)
    # Bound documented in docs/decoding.md: small on average, larger only at hard edges (marker, bar).
    assert diff.mean() < 1.5 and np.percentile(diff, 95) <= 3
    assert not np.array_equal(fast, exact)  # the reduced path really ran


def test_jpeg_baseline_dicom_draft_and_full_decode(tmp_path):
    path = tmp_path / "j.dcm"
    write_encoded_dx(path, picture(512, 512, seed=2), DXSpec(), "jpeg-baseline", **IDS)
    ds = pydicom.dcmread(path)
    full = jpeg_stored_values(first_frame(ds), 1)
    assert np.abs(full.astype(int) - ds.pixel_array.astype(int)).max() <= 2  # libjpeg builds' IDCT rounding
    fast, name = _out(path, "dicom", ImageConfig(size=128, format="png"))
    exact, _ = _out(path, "dicom", ImageConfig(size=128, format="png", exact=True))
    assert "draft-1:4" in name
    diff = np.abs(fast - exact)
    assert diff.mean() < 1.5 and np.percentile(diff, 95) <= 3


def test_jpeg_file_draft_is_close_to_full_decode(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.rint(picture(600, 520, seed=3) * 255).astype(np.uint8)).save(path, quality=95)
    fast, name = _out(path, "jpg", ImageConfig(size=128, format="png"))
    exact, exact_name = _out(path, "jpg", ImageConfig(size=128, format="png", exact=True))
    assert "draft-1:4" in name and "draft" not in exact_name
    diff = np.abs(fast - exact)
    assert diff.mean() < 1.5 and np.percentile(diff, 95) <= 3


def test_jpeg_ls_film_decodes(tmp_path):
    path = tmp_path / "l.dcm"
    pic = picture(96, 80, seed=6)
    write_encoded_dx(path, pic, DXSpec(), "jpeg-ls", **IDS)
    write_dx(tmp_path / "p.dcm", pic, DXSpec(), **IDS)
    cfg = ImageConfig(size=48, format="png")
    assert np.array_equal(_out(path, "dicom", cfg)[0], _out(tmp_path / "p.dcm", "dicom", cfg)[0])


@pytest.mark.parametrize("n", [0, 1, 31, 33, 1000, 10_000, 100_000, 700_000])
def test_chunk_plan_is_few_contiguous_and_bounded(n):
    workers, batch = 2, 32
    plan = plan_chunks(n, workers, batch)
    assert sum(b - a for a, b in plan) == n
    assert all(a == prev_b for (a, _), (_, prev_b) in zip(plan[1:], plan, strict=False))
    assert all(b - a <= MAX_CHUNK for a, b in plan)
    if n:
        assert plan[0][0] == 0 and plan[-1][1] == n
        # A few per worker regardless of archive size, until MAX_CHUNK bounds a chunk.
        assert len(plan) <= max(workers * 4, -(-n // MAX_CHUNK))
        assert all(b - a >= min(batch, n) for a, b in plan) or len(plan) * batch > n


# ------------------------------------------------------------------ integer box reduction (issue 28)


@pytest.mark.parametrize("factor", range(3, 10))
def test_box_mean_u16_is_cv2_inter_area_exactly(factor):
    rng = np.random.default_rng(factor)
    top = (1 << 16) // (factor * factor) - 1  # the largest value whose block sums fit in 16 bits
    h, w = factor * 23, factor * 4 * 9  # widths a multiple of 4 for factor 4's uint64 lanes
    cases = [
        rng.integers(0, top + 1, (h, w)),
        np.full((h, w), top),  # the largest sums
        rng.integers(0, 2, (h, w)) * top,  # extremes side by side
        (rng.integers(0, top + 1, (h, w)) // 2) * 2,  # many exact halves: cv2 rounds ties to even
    ]
    for values in cases:
        region = values.astype(np.uint16)
        want = cv2.resize(region, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
        assert np.array_equal(box_mean_u16(region, factor), want)


def test_area_reduce_takes_box_mean_only_where_block_sums_fit(monkeypatch):
    calls = []
    monkeypatch.setattr(images, "box_mean_u16", lambda r, f: calls.append(f) or FAST(r, f))
    rng = np.random.default_rng(0)
    cfg = ImageConfig(size=50)  # 208 x 256 -> factor 4
    twelve = rng.integers(0, 4096, (256, 208)).astype(np.uint16)
    sixteen = rng.integers(0, 1 << 16, (256, 208)).astype(np.uint16)
    ref = lambda a: cv2.resize(a[24:232], (52, 52), interpolation=cv2.INTER_AREA)  # noqa: E731
    assert np.array_equal(area_reduce(twelve, cfg, (0, 4095)), ref(twelve)) and calls == [4]
    # 16-bit values: the uint16 sums would wrap, so cv2 reduces them
    assert np.array_equal(area_reduce(sixteen, cfg, (0, 65535)), ref(sixteen)) and calls == [4]
    assert np.array_equal(area_reduce(twelve, cfg), ref(twelve)) and calls == [4]  # extent unknown
    area_reduce(twelve, ImageConfig(size=100), (0, 4095))  # factor 2: cv2's own SIMD path, ties rounded up
    assert calls == [4]


@pytest.mark.parametrize("size", [52, 64])  # factor 4 and 3 on the 208-px fixture films
def test_fixture_outputs_are_byte_identical_with_cv2_reduction(tmp_path, monkeypatch, size):
    """Every fixture film's output bytes (or quarantine reason) with the one-pass reduction and the box mean,
    and with neither (cv2's INTER_AREA after a whole-film min/max)."""
    write_mimic_cxr(tmp_path, studies=10, seed=5)
    cfg = ImageConfig(size=size, format="png")
    films = sorted(tmp_path.rglob("*.dcm"))
    one_pass = []
    real = images.reduce_in_one_pass
    monkeypatch.setattr(images, "reduce_in_one_pass", lambda *a: one_pass.append(r := real(*a)) or r)
    fast = {}
    for path in films:
        try:
            fast[path] = process(path, "dicom", cfg)
        except ImageDecodeError as exc:
            fast[path] = str(exc)
    assert sum(r is not None for r in one_pass) >= 8  # the 12-bit films took the one-pass reduction
    monkeypatch.setattr(images, "reduce_in_one_pass", lambda *a: None)
    monkeypatch.setattr(images, "box_mean_u16", lambda r, f: cv2.resize(
        r, (r.shape[1] // f, r.shape[0] // f), interpolation=cv2.INTER_AREA))
    for path in films:
        try:
            assert process(path, "dicom", cfg) == fast[path], path.name
        except ImageDecodeError as exc:
            assert str(exc) == fast[path]


def test_one_pass_reduction_is_the_two_pass_result_or_declines(monkeypatch):
    """reduce_in_one_pass gives area_reduce's values and the whole film's (min, max), for crop and pad and
    extremes in the rows and columns cut off; it declines where a bit above BitsStored is set (the caller
    masks) and where the 16-bit sums could wrap."""
    rng = np.random.default_rng(2)
    cfgs = (ImageConfig(size=50), ImageConfig(size=75, resize="pad"), ImageConfig(size=70))  # factor 4, 4, 3
    for cfg, strip in itertools.product(cfgs, (128, 9)):  # 9: many strips, the last one partial
        monkeypatch.setattr(images, "STRIP_ROWS", strip)
        for trial in range(6):
            arr = rng.integers(100, 4000, (301, 219)).astype(np.uint16)
            arr[rng.integers(0, 301), rng.integers(0, 219)] = [0, 4095][trial % 2]  # anywhere, margins too
            arr[0, 0], arr[-1, -1] = (7, 4090) if trial == 2 else (arr[0, 0], arr[-1, -1])
            got = images.reduce_in_one_pass(arr, cfg, 12)
            assert got is not None
            assert np.array_equal(got[0], area_reduce(arr, cfg)) and got[1] == images.value_range(arr)
    arr = rng.integers(0, 4096, (301, 219)).astype(np.uint16)
    cfg = ImageConfig(size=50)
    arr[150, 100] |= 0x8000  # an overlay bit inside the kept region
    assert images.reduce_in_one_pass(arr, cfg, 12) is None
    arr[150, 100] &= 0x0FFF
    arr[2, 5] |= 0x1000  # ... and in a cut-off row
    assert images.reduce_in_one_pass(arr, cfg, 12) is None
    assert images.reduce_in_one_pass(arr, cfg, 14) is None  # 14-bit x 16 could wrap: cv2 reduces
    assert images.reduce_in_one_pass(arr, ImageConfig(size=100), 12) is None  # factor 2: cv2's SIMD path
