"""The uncompressed-DICOM fast path (tasks/images.native_pixels, issue 28) gives pydicom's pixel_array exactly, and
leaves every film it cannot read as a plain view of the bytes to pydicom."""

from __future__ import annotations

import mmap

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from fixtures.dicom import DXSpec, dx_dataset, picture, uid
from fixtures.mimic_cxr import write_mimic_cxr
from schemas.config import ImageConfig
from tasks import images
from tasks.images import ImageDecodeError, decode, native_pixels

IDS = dict(patient_id="1", study_uid=uid(0, "st"), series_uid=uid(0, "se"), sop_uid=uid(0, "sop"))


def test_native_values_are_pydicoms_on_every_fixture_film(tmp_path):
    write_mimic_cxr(tmp_path, studies=12, seed=3)  # 12/14/16-bit, MONOCHROME1/2, rescale, windows, LUTs, defects
    native = 0
    for path in sorted(tmp_path.rglob("*.dcm")):
        got = native_pixels(path.read_bytes())
        if got is None:
            continue
        native += 1
        want = pydicom.dcmread(path).pixel_array
        assert got[1].dtype == want.dtype and np.array_equal(got[1], want), path.name
    assert native >= 10  # the uncompressed films took the fast path


@pytest.mark.parametrize("implicit", [False, True])
def test_unused_high_bits_are_masked_as_pydicom_does(tmp_path, implicit):
    values = (picture(64, 48, seed=1) * 4095).astype(np.uint16) | np.uint16(0xA000)  # overlay bits set
    ds = dx_dataset(values, DXSpec(bits_stored=12), **IDS)
    path = tmp_path / "f.dcm"
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    got = native_pixels(path.read_bytes())
    assert got is not None and got[1].max() < 4096
    assert np.array_equal(got[1], pydicom.dcmread(path).pixel_array)


def test_anything_after_the_pixel_data_goes_to_pydicom(tmp_path):
    ds = dx_dataset((picture(32, 32, seed=2) * 4095).astype(np.uint16), DXSpec(), **IDS)
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8)  # data set trailing padding after (7FE0,0010)
    path = tmp_path / "f.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert native_pixels(path.read_bytes()) is None
    truncated = path.read_bytes()[:-100]
    assert native_pixels(truncated) is None


@pytest.mark.parametrize("cfg", [ImageConfig(size=52), ImageConfig(size=64, resize="pad")])
def test_a_film_decoded_from_its_mapping_equals_its_bytes(tmp_path, monkeypatch, cfg):
    """decode(path) maps the file instead of reading it (issue 28); every fixture film, the defective ones and
    the compressed ones included, gives what decoding its bytes gives: the same values and table, or the same
    quarantine reason."""
    write_mimic_cxr(tmp_path, studies=12, seed=3)
    films = sorted(tmp_path.rglob("*.dcm"))
    from_bytes = {p: _decoded(p.read_bytes(), cfg) for p in films}
    real = images.read_mapped
    got = []
    monkeypatch.setattr(images, "read_mapped", lambda p: got.append(r := real(p)) or r)
    for path in films:
        assert _decoded(path, cfg) == from_bytes[path], path.name
    assert sum(isinstance(r, mmap.mmap) for r in got) == len(films)  # every film mapped, none copied


def test_a_file_that_cannot_be_mapped_is_read_and_quarantined_with_pydicoms_reason(tmp_path):
    from cxrio import read_mapped

    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")  # mmap refuses an empty file
    assert read_mapped(empty) == b""
    with pytest.raises(ImageDecodeError, match="unreadable DICOM"):
        decode(empty, "dicom", ImageConfig())
    with pytest.raises(ImageDecodeError, match="unreadable DICOM: FileNotFoundError"):
        decode(tmp_path / "gone.dcm", "dicom", ImageConfig())


def _decoded(src, cfg: ImageConfig):
    try:
        d = decode(src, "dicom", cfg)
    except ImageDecodeError as exc:
        return str(exc)
    return d.pixels.dtype.str, d.pixels.tobytes(), d.pixels.shape, d.lut.tobytes(), d.lut_offset, d.decoder


def test_a_film_with_overlay_bits_decodes_to_pydicoms_masked_values(tmp_path):
    """The one-pass reduction declines a film with bits set above BitsStored; the decode then masks them as
    pydicom does before reducing."""
    values = (picture(64, 48, seed=4) * 4095).astype(np.uint16)
    values[10:20, 5:9] |= np.uint16(0xA000)
    path = tmp_path / "f.dcm"
    dx_dataset(values, DXSpec(bits_stored=12), **IDS).save_as(path, enforce_file_format=True)
    cfg = ImageConfig(size=16)  # factor 3
    got = decode(path, "dicom", cfg)
    want = images.area_reduce(pydicom.dcmread(path).pixel_array, cfg)
    assert want.max() < 4096 and np.array_equal(got.pixels, want)
