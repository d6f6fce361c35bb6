"""Pixel decoding: LUT order, MONOCHROME1, rescale/window/VOI LUT, orientation, crop vs pad geometry."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from fixtures.dicom import DXSpec, picture, uid, write_dx
from schemas.config import ImageConfig
from tasks.images import ImageDecodeError, process

PNG = dict(format="png")


def _write(path: Path, pic: np.ndarray, spec: DXSpec) -> Path:
    write_dx(path, pic, spec, patient_id="10000001", study_uid=uid(0, "st", path.name),
             series_uid=uid(0, "se", path.name), sop_uid=uid(0, "sop", path.name))
    return path


def _pixels(path: Path, cfg: ImageConfig) -> np.ndarray:
    data, width, height, _ = process(path, "dicom", cfg)
    assert (width, height) == (cfg.size, cfg.size)
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16)


@pytest.mark.parametrize("bits", [12, 14, 16])
@pytest.mark.parametrize("rescale", [None, (2.0, -1024.0)])
def test_monochrome1_and_monochrome2_of_the_same_picture_give_the_same_output(tmp_path, bits, rescale):
    pic = picture(160, 128, seed=3)
    cfg = ImageConfig(size=64, **PNG)
    mono2 = _pixels(_write(tmp_path / "m2.dcm", pic, DXSpec("MONOCHROME2", bits, rescale)), cfg)
    mono1 = _pixels(_write(tmp_path / "m1.dcm", pic, DXSpec("MONOCHROME1", bits, rescale)), cfg)
    # Box means of inverted values round half-way cases the other way: at most one grey level apart.
    assert np.abs(mono1 - mono2).max() <= 1
    assert np.abs(mono1 - mono2).mean() < 0.05
    assert mono2.max() == 255 and mono2.min() == 0


def test_compressed_transfer_syntaxes_decode_to_the_uncompressed_result(tmp_path):
    pic = picture(96, 96, seed=5)
    cfg = ImageConfig(size=48, exact=True, **PNG)  # exact: JPEG 2000 decoded at full resolution
    plain = _pixels(_write(tmp_path / "plain.dcm", pic, DXSpec()), cfg)
    for ts in (RLELossless, JPEG2000Lossless):
        assert np.array_equal(_pixels(_write(tmp_path / f"{ts}.dcm", pic, DXSpec(transfer_syntax=ts)), cfg), plain)


def test_window_is_applied_in_modality_units(tmp_path):
    """A narrow window saturates both ends; the same window with rescale gives the same picture, which can
    only happen if the modality LUT (rescale) is applied before the window."""
    pic = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))  # left-to-right ramp of stored 0..4095
    cfg = ImageConfig(size=64, **PNG)
    plain = _pixels(_write(tmp_path / "w.dcm", pic, DXSpec(window=(2048.0, 1024.0))), cfg)
    slope, intercept = 2.0, -1024.0
    rescaled = _pixels(_write(tmp_path / "wr.dcm", pic, DXSpec(rescale=(slope, intercept),
                                                               window=(2048 * slope + intercept, 1024 * slope))), cfg)
    ramp = plain[32]
    assert (ramp[:20] == 0).all()  # below the window: black
    assert (ramp[-20:] == 255).all()  # above the window: white
    assert 0 < ramp[32] < 255  # inside: grey
    assert np.abs(plain - rescaled).max() <= 1
    unwindowed = _pixels(_write(tmp_path / "nw.dcm", pic, DXSpec()), cfg)
    assert unwindowed[32, 10] > 0 and unwindowed[32, -10] < 255  # without a window nothing saturates


def test_voi_lut_sequence_is_preferred_and_applied(tmp_path):
    pic = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))
    cfg = ImageConfig(size=64, **PNG)
    out = _pixels(_write(tmp_path / "v.dcm", pic, DXSpec(voi_lut=True, window=(100.0, 10.0))), cfg)
    expected = np.rint((pic**0.8) * 255)  # the fixture's LUT is gamma 0.8; the window would saturate
    assert np.abs(out - expected).max() <= 2


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_orientation_is_preserved(tmp_path, photometric, resize):
    pic = picture(256, 208, seed=1)  # marker upper-left, dark bar right, gradient dark top -> bright bottom
    out = _pixels(_write(tmp_path / "o.dcm", pic, DXSpec(photometric)), ImageConfig(size=104, resize=resize, **PNG))
    rows = np.nonzero((out > 250).sum(axis=1) > 3)[0]
    cols = np.nonzero((out > 250).sum(axis=0) > 3)[0]
    assert rows.mean() < 52 and cols.mean() < 52, "bright marker must stay in the upper-left quadrant"
    inner = out[:, 30:70]
    assert inner[70:80].mean() > inner[30:40].mean() + 20, "gradient must run dark top to bright bottom"
    if resize == "crop":
        assert out[52, -2] == 0, "dark bar must stay on the right edge"


def test_crop_and_pad_geometry(tmp_path):
    pic = np.full((200, 100), 0.5)  # a tall film: 2:1
    pic[0, 0], pic[-1, -1] = 0.0, 1.0
    path = _write(tmp_path / "tall.dcm", pic, DXSpec())
    crop = _pixels(path, ImageConfig(size=50, resize="crop", **PNG))
    pad = _pixels(path, ImageConfig(size=50, resize="pad", **PNG))
    assert crop.shape == pad.shape == (50, 50)
    assert (np.abs(crop - 128) <= 2).all(), "crop keeps the central square only: uniform grey"
    # pad: longest side 200 -> 50, width 100 -> 25, centred with 12/13 black columns either side.
    assert (pad[:, :12] == 0).all() and (pad[:, -12:] == 0).all()
    assert (np.abs(pad[5:-5, 14:-14] - 128) <= 2).all()


def test_missing_pixel_plugin_is_named(tmp_path, monkeypatch):
    path = _write(tmp_path / "jls.dcm", picture(32, 32), DXSpec(transfer_syntax=JPEGLSLossless))
    decoder = get_decoder(JPEGLSLossless)
    # The state pydicom is in when pylibjpeg-libjpeg is not installed.
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setitem(decoder._unavailable, "pylibjpeg", ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1"))
    with pytest.raises(ImageDecodeError) as err:
        process(path, "dicom", ImageConfig(size=32))
    assert str(err.value).startswith("unsupported transfer syntax: JPEG-LS Lossless")
    assert "pylibjpeg-libjpeg" in str(err.value)


def test_sixteen_bit_png_and_rgba_rasters(tmp_path):
    pic = picture(128, 128, seed=2)
    png16 = tmp_path / "a.png"
    Image.fromarray(np.rint(pic * 65535).astype(np.uint16)).save(png16)
    rgba = tmp_path / "b.png"
    Image.fromarray(np.rint(pic * 255).astype(np.uint8)).convert("RGBA").save(rgba)
    cfg = ImageConfig(size=64, **PNG)
    a = np.asarray(Image.open(io.BytesIO(process(png16, "png", cfg)[0])), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(process(rgba, "png", cfg)[0])), dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    truncated = tmp_path / "t.png"
    truncated.write_bytes(png16.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="unreadable image"):
        process(truncated, "png", cfg)
