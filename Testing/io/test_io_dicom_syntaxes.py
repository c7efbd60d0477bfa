"""Multi-frame DICOMs written here in each transfer syntax, read back through read_cine.

JPEG Lossless is also covered by the real phantom cines (test_io_cine.py: Process 14 SV1, 8-bit);
the 12-bit case here needs an encoder, which only imagecodecs provides (libjpeg-turbo lossless mode).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    XRayAngiographicImageStorage,
    generate_uid,
)

from XRayVOSLib.io import LazyFrames, read_cine

RNG = np.random.default_rng(7)


def cine_pixels(t: int = 5, h: int = 48, w: int = 40, bits: int = 8) -> np.ndarray:
    """Smooth background + a dark moving 'vessel' + noise: compressible yet not trivial."""
    top = 2**bits - 1
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(t):
        base = 0.55 * top + 0.2 * top * np.sin(xx / 7.0 + k) * np.cos(yy / 9.0)
        base[np.abs(xx - 8 - 3 * k) < 3] *= 0.35
        frames.append(base + RNG.normal(0, top * 0.01, (h, w)))
    return np.clip(np.rint(frames), 0, top).astype(np.uint8 if bits <= 8 else np.uint16)


def make_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    **elements: object,
) -> Path:
    """Write an XA DICOM of `pixels` ([T, H, W], [H, W] or [T, H, W, 3]); None writes no pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "XA"
    ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientID = "PHANTOM"
    for key, value in elements.items():
        setattr(ds, key, value)
    if pixels is not None:
        colour = pixels.shape[-1] == 3 and pixels.ndim in (3, 4) and photometric == "RGB"
        frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = pixels.tobytes()
    if transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
    elif transfer_syntax == JPEGBaseline8Bit:  # pydicom has no JPEG encoder: Pillow, then encapsulate
        jpegs = []
        for frame in pixels:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=95)
            jpegs.append(buf.getvalue())
        ds.PixelData = encapsulate(jpegs)
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = transfer_syntax
    elif transfer_syntax == JPEGLosslessSV1:
        import imagecodecs

        ds.PixelData = encapsulate(
            [imagecodecs.jpeg8_encode(f, lossless=True, predictor=1, bitspersample=bits_stored) for f in pixels]
        )
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def test_explicit_little_endian_8bit(tmp_path: Path) -> None:
    pixels = cine_pixels(6)
    path = make_dicom(
        tmp_path / "a.dcm", pixels, FrameTime=33.3, PixelSpacing=[0.2, 0.25], PositionerPrimaryAngle=-30.5
    )
    cine = read_cine(path)
    assert isinstance(cine.frames, LazyFrames)
    assert cine.shape == (6, 48, 40) and cine.frames.dtype == np.uint8 and cine.source_kind == "dicom-multiframe"
    np.testing.assert_array_equal(cine.to_array(), pixels)
    np.testing.assert_array_equal(cine.frames[4], pixels[4])
    np.testing.assert_array_equal(cine.frames[[5, 1]], pixels[[5, 1]])
    np.testing.assert_allclose(cine.frame_times, np.arange(6) * 0.0333)
    assert cine.fps == pytest.approx(1 / 0.0333)
    assert cine.spacing == (0.2, 0.25)
    assert cine.tags["PositionerPrimaryAngle"] == -30.5 and cine.tags["Modality"] == "XA"
    assert cine.tags["TransferSyntaxUID"] == ExplicitVRLittleEndian and cine.tags["frame_time_assumed"] is False


def test_explicit_little_endian_12bit_kept_uint16(tmp_path: Path) -> None:
    pixels = cine_pixels(4, bits=12)
    cine = read_cine(make_dicom(tmp_path / "b.dcm", pixels, bits_stored=12, CineRate=30))
    assert cine.frames.dtype == np.uint16 and cine.tags["BitsStored"] == 12
    np.testing.assert_array_equal(np.asarray(cine.frames), pixels)
    np.testing.assert_allclose(np.diff(cine.frame_times), 1 / 30)


@pytest.mark.parametrize("bits", [8, 12])
def test_monochrome1_is_inverted(tmp_path: Path, bits: int) -> None:
    pixels = cine_pixels(3, bits=bits)
    cine = read_cine(make_dicom(tmp_path / "m1.dcm", pixels, bits_stored=bits, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(cine.to_array(), (2**bits - 1) - pixels.astype(np.int64))
    assert cine.frames.dtype == pixels.dtype


def test_integer_rescale_applied_fractional_kept(tmp_path: Path) -> None:
    pixels = cine_pixels(3, bits=10)
    cine = read_cine(make_dicom(tmp_path / "r.dcm", pixels, bits_stored=10, RescaleSlope=1, RescaleIntercept=100))
    np.testing.assert_array_equal(cine.to_array(), pixels + 100)
    assert cine.tags["rescale_applied"] is True
    with pytest.warns(UserWarning, match="not applied"):
        cine = read_cine(make_dicom(tmp_path / "f.dcm", pixels, bits_stored=10, RescaleSlope=0.5, RescaleIntercept=0))
    np.testing.assert_array_equal(cine.to_array(), pixels)
    assert cine.tags["rescale_applied"] is False


def test_signed_pixels_lifted_to_unsigned(tmp_path: Path) -> None:
    pixels = cine_pixels(3, bits=12).astype(np.int16) - 2048
    cine = read_cine(make_dicom(tmp_path / "s.dcm", pixels, bits_stored=12))
    np.testing.assert_array_equal(cine.to_array(), pixels.astype(np.int64) + 2048)
    assert cine.frames.dtype == np.uint16


@pytest.mark.parametrize("bits", [8, 16])
def test_rle_lossless(tmp_path: Path, bits: int) -> None:
    pixels = cine_pixels(5, bits=bits)
    cine = read_cine(make_dicom(tmp_path / "rle.dcm", pixels, bits_stored=bits, transfer_syntax=RLELossless))
    assert cine.tags["TransferSyntaxUID"] == RLELossless
    np.testing.assert_array_equal(cine.to_array(), pixels)


def test_jpeg2000_lossless(tmp_path: Path) -> None:
    pixels = cine_pixels(4, bits=12)
    cine = read_cine(make_dicom(tmp_path / "j2k.dcm", pixels, bits_stored=12, transfer_syntax=JPEG2000Lossless))
    assert cine.tags["TransferSyntaxUID"] == JPEG2000Lossless and cine.frames.dtype == np.uint16
    np.testing.assert_array_equal(cine.to_array(), pixels)


def test_jpeg_baseline_lossy_within_tolerance(tmp_path: Path) -> None:
    pixels = cine_pixels(5)
    cine = read_cine(make_dicom(tmp_path / "jpg.dcm", pixels, transfer_syntax=JPEGBaseline8Bit))
    got = cine.to_array().astype(np.int16)
    assert cine.tags["TransferSyntaxUID"] == JPEGBaseline8Bit and got.shape == pixels.shape
    err = np.abs(got - pixels)
    assert err.mean() < 2.5 and np.percentile(err, 99) < 12
    # Lossy, but each decoded frame is closest to its own source frame (order and content kept).
    nearest = [int(np.argmin([np.abs(g - p.astype(np.int16)).mean() for p in pixels])) for g in got]
    assert nearest == list(range(len(pixels)))


def test_jpeg_lossless_12bit(tmp_path: Path) -> None:
    pytest.importorskip("imagecodecs", reason="12-bit JPEG Lossless needs an encoder (pip install imagecodecs)")
    pixels = cine_pixels(4, bits=12)
    cine = read_cine(make_dicom(tmp_path / "jll.dcm", pixels, bits_stored=12, transfer_syntax=JPEGLosslessSV1))
    np.testing.assert_array_equal(cine.to_array(), pixels)


def test_frame_time_vector_and_assumed_rate(tmp_path: Path) -> None:
    pixels = cine_pixels(4)
    cine = read_cine(make_dicom(tmp_path / "v.dcm", pixels, FrameTimeVector=[0, 40, 60, 100]))
    np.testing.assert_allclose(cine.frame_times, [0.0, 0.04, 0.1, 0.2])
    cine = read_cine(make_dicom(tmp_path / "n.dcm", pixels))
    assert cine.tags["frame_time_assumed"] is True and cine.fps is None
    np.testing.assert_allclose(np.diff(cine.frame_times), 1 / 15)


def test_imager_spacing_kept_magnification_in_tags(tmp_path: Path) -> None:
    path = make_dicom(
        tmp_path / "i.dcm", cine_pixels(2), ImagerPixelSpacing=[0.3, 0.3], EstimatedRadiographicMagnificationFactor=1.5
    )
    cine = read_cine(path)
    assert cine.spacing == (0.3, 0.3)
    assert cine.tags["spacing_at_isocenter"] == pytest.approx([0.2, 0.2])


def test_rgb_dicom_becomes_grey_with_warning(tmp_path: Path) -> None:
    grey = cine_pixels(3)
    rgb = np.stack([grey, grey // 2, np.full_like(grey, 200)], axis=-1)
    path = make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    with pytest.warns(UserWarning, match="rgb.dcm.*grey"):
        cine = read_cine(path)
    luma = 0.299 * grey + 0.587 * (grey // 2) + 0.114 * 200
    assert cine.shape == grey.shape and cine.frames.dtype == np.uint8
    assert np.abs(cine.to_array() - luma).max() <= 1


def test_single_frame_folder_sorted_by_instance_number(tmp_path: Path) -> None:
    pixels = cine_pixels(7)
    names = [f"x{random.Random(3).random():.6f}_{k}.dcm" for k in range(7)]
    random.Random(5).shuffle(names)  # file-name order says nothing about frame order
    for k, name in enumerate(names):
        make_dicom(tmp_path / name, pixels[k], InstanceNumber=k + 1, FrameTime=50)
    cine = read_cine(tmp_path)
    assert cine.source_kind == "dicom-folder" and cine.shape == pixels.shape
    np.testing.assert_array_equal(cine.to_array(), pixels)
    np.testing.assert_allclose(np.diff(cine.frame_times), 0.05)


def test_single_frame_folder_falls_back_to_acquisition_time(tmp_path: Path) -> None:
    pixels = cine_pixels(4)
    for k, name in enumerate(["d.dcm", "b.dcm", "a.dcm", "c.dcm"]):
        make_dicom(tmp_path / name, pixels[k], AcquisitionDate="20240102", AcquisitionTime=f"1010{10 + k:02d}.250")
    cine = read_cine(tmp_path)
    np.testing.assert_array_equal(cine.to_array(), pixels)
    np.testing.assert_allclose(cine.frame_times, [0, 1, 2, 3])
    assert cine.tags["frame_time_assumed"] is False


def test_folder_skips_dicom_without_pixels(tmp_path: Path) -> None:
    pixels = cine_pixels(3)
    for k in range(3):
        make_dicom(tmp_path / f"{k}.dcm", pixels[k], InstanceNumber=k)
    make_dicom(tmp_path / "report.dcm", None)
    assert read_cine(tmp_path).num_frames == 3


def test_frames_decoded_on_demand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = cine_pixels(6)
    cine = read_cine(make_dicom(tmp_path / "lazy.dcm", pixels))
    calls: list[int] = []
    import XRayVOSLib.io.dicom as dicom_module

    real = dicom_module.pixel_array
    monkeypatch.setattr(dicom_module, "pixel_array", lambda *a, **k: calls.append(k["index"]) or real(*a, **k))
    np.testing.assert_array_equal(cine.frames[3], pixels[3])
    assert calls == [3]  # one frame decoded, not six


def test_preamble_less_implicit_vr_file(tmp_path: Path) -> None:
    """Old ACR-NEMA-style files: no preamble, no file meta, implicit VR; still read from their .dcm suffix."""
    pixels = cine_pixels(3)
    ds = pydicom.dcmread(make_dicom(tmp_path / "full.dcm", pixels, FrameTime=40))
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    path = tmp_path / "old.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    cine = read_cine(path)
    np.testing.assert_array_equal(cine.to_array(), pixels)
    np.testing.assert_allclose(np.diff(cine.frame_times), 0.04)


def test_pydicom_sample_ybr_jpeg_cine_to_grey() -> None:
    """A real 30-frame YBR_FULL_422 JPEG Baseline cine from pydicom's bundled test files."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm", download=False)
    assert path is not None, "pydicom's bundled test file is missing"
    with pytest.warns(UserWarning, match="examples_ybr_color.dcm.*grey"):
        cine = read_cine(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(float)  # pydicom converts YBR to RGB
    luma = rgb @ [0.299, 0.587, 0.114]
    assert cine.shape == (30, 240, 320) and cine.frames.dtype == np.uint8
    assert np.abs(cine.to_array() - luma).max() <= 1


def test_32bit_pixels_stretched_to_uint16() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("rtdose.dcm", download=False)  # 15 frames, BitsStored 32
    assert path is not None, "pydicom's bundled test file is missing"
    with pytest.warns(UserWarning, match="rtdose.dcm.*stretched"):
        cine = read_cine(path)
    got, ref = cine.to_array(), pydicom.dcmread(path).pixel_array.astype(float)
    assert got.dtype == np.uint16 and got.min() == 0 and got.max() == 65535
    np.testing.assert_allclose(got, (ref - ref.min()) * 65535 / (ref.max() - ref.min()), atol=0.5)
