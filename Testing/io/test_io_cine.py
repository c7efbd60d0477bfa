"""read_cine on the real XA phantom cines (JPEG Lossless) and on every other container it accepts."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from XRayVOSLib.io import Cine, read_cine

PHANTOM_FRAMES = {"IM1": 14, "IM2": 12, "IM3": 12, "IM4": 10, "IM5": 16, "IM6": 9, "IM7": 9, "IM8": 8}


@pytest.mark.parametrize("name", sorted(PHANTOM_FRAMES))
def test_phantom_cine(phantom_dir: Path, name: str) -> None:
    path = phantom_dir / f"{name}.dcm"
    cine = read_cine(path)
    assert isinstance(cine, Cine) and cine.path == path and cine.source_kind == "dicom-multiframe"
    assert cine.num_frames == len(cine.frames) == PHANTOM_FRAMES[name]
    assert cine.shape == (PHANTOM_FRAMES[name], 512, 512) and cine.frames.dtype == np.uint8
    np.testing.assert_allclose(np.diff(cine.frame_times), 0.0667, atol=5e-4)
    assert cine.frame_times[0] == 0 and cine.fps == pytest.approx(15, abs=0.01)
    if name in ("IM5", "IM6", "IM7", "IM8"):
        assert cine.spacing == pytest.approx((0.39, 0.39), abs=0.001)
    else:
        assert cine.spacing is None
    tags = cine.tags
    assert tags["Modality"] == "XA" and tags["BitsStored"] == 8 and tags["PhotometricInterpretation"] == "MONOCHROME2"
    assert tags["TransferSyntaxUID"] == pydicom.uid.JPEGLosslessSV1 and tags["FrameTime"] == pytest.approx(66.6667)
    assert isinstance(tags["SOPInstanceUID"], str) and isinstance(tags["PositionerPrimaryAngle"], float)

    # Our per-frame decode equals pydicom's independent whole-file decode, and looks like an X-ray.
    reference = pydicom.dcmread(path).pixel_array
    frames = cine.to_array()
    np.testing.assert_array_equal(frames, reference)
    middle = cine.frames[cine.num_frames // 2]
    np.testing.assert_array_equal(middle, reference[cine.num_frames // 2])
    assert 20 < middle.mean() < 235 and middle.std() > 5 and np.unique(middle).size > 32


def test_phantom_frames_slice_and_iterate(phantom_dir: Path) -> None:
    cine = read_cine(phantom_dir / "IM8.dcm")
    whole = np.asarray(cine.frames)
    np.testing.assert_array_equal(cine.frames[2:7:2], whole[2:7:2])
    np.testing.assert_array_equal(cine.frames[-1], whole[-1])
    np.testing.assert_array_equal(cine.frames[1, 100:110, 5], whole[1, 100:110, 5])
    np.testing.assert_array_equal(np.stack(list(cine.frames)), whole)
    assert cine.frames[5:5].shape == (0, 512, 512)
    with pytest.raises(IndexError):
        cine.frames[8]


def _frame_stack(t: int = 12, h: int = 36, w: int = 52) -> np.ndarray:
    """Frames that tell each other apart: frame k has a bright bar at column 2k and mean that grows."""
    frames = np.full((t, h, w), 60, np.uint8)
    for k in range(t):
        frames[k, :, 2 * k : 2 * k + 3] = 220
        frames[k, : k + 1, :] = 100
    return frames


def test_png_folder_in_natural_order(tmp_path: Path) -> None:
    frames = _frame_stack(12)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame{k + 1}.png")  # frame2 must come before frame10
    (tmp_path / "notes.txt").write_text("not a frame")
    cine = read_cine(tmp_path)
    assert cine.source_kind == "image-folder" and cine.shape == frames.shape
    np.testing.assert_array_equal(cine.to_array(), frames)
    assert cine.tags["frame_time_assumed"] is True and cine.fps is None and cine.spacing is None
    np.testing.assert_allclose(np.diff(cine.frame_times), 1 / 15)


def test_16bit_tif_folder_kept_uint16(tmp_path: Path) -> None:
    frames = _frame_stack(3).astype(np.uint16) * 200
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{k:03d}.tif")
    cine = read_cine(tmp_path)
    assert cine.frames.dtype == np.uint16
    np.testing.assert_array_equal(cine.to_array(), frames)


def test_rgb_png_folder_becomes_grey_with_warning(tmp_path: Path) -> None:
    grey = _frame_stack(3)
    for k, frame in enumerate(grey):
        rgb = np.stack([frame, frame, np.zeros_like(frame)], axis=-1)
        Image.fromarray(rgb).save(tmp_path / f"{k}.png")
    with pytest.warns(UserWarning, match=f"{tmp_path.name}.*grey"):
        cine = read_cine(tmp_path)
    expected = np.rint(0.299 * grey + 0.587 * grey)
    assert np.abs(cine.to_array().astype(float) - expected).max() <= 1


def _write_video(path: Path, frames: np.ndarray, codec: str, fps: int = 15, pix_fmt: str = "yuv420p") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "12"}
        for frame in frames:
            image = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_mp4_roundtrip(tmp_path: Path) -> None:
    frames = _frame_stack(10, 48, 64)
    path = tmp_path / "cine.mp4"
    _write_video(path, frames, "libx264")
    cine = read_cine(path)
    assert cine.source_kind == "video" and cine.shape == frames.shape and cine.frames.dtype == np.uint8
    # Lossy codec and limited-range YUV: close, not equal; each frame still matches its own source.
    err = np.abs(cine.to_array().astype(int) - frames)
    assert err.mean() < 6
    nearest = [int(np.argmin([np.abs(f.astype(int) - s).mean() for s in frames])) for f in cine.frames]
    assert nearest == list(range(10))
    np.testing.assert_allclose(np.diff(cine.frame_times), 1 / 15, atol=1e-3)
    assert cine.fps == pytest.approx(15, abs=0.01) and cine.tags["frame_time_assumed"] is False


def test_avi_ffv1_lossless(tmp_path: Path) -> None:
    frames = _frame_stack(6, 40, 40)
    path = tmp_path / "cine.avi"
    _write_video(path, frames, "ffv1", fps=25, pix_fmt="yuv444p")
    cine = read_cine(path)
    assert cine.shape == frames.shape
    assert np.abs(cine.to_array().astype(int) - frames).max() <= 2  # only RGB->YUV rounding
    np.testing.assert_allclose(np.diff(cine.frame_times), 1 / 25, atol=1e-3)


def test_colour_video_warns(tmp_path: Path) -> None:
    grey = _frame_stack(4, 32, 32)
    colour = np.stack([grey, np.zeros_like(grey), 255 - grey], axis=-1)
    path = tmp_path / "colour.mp4"
    _write_video(path, colour, "libx264", pix_fmt="yuv444p")
    with pytest.warns(UserWarning, match="colour.mp4"):
        assert read_cine(path).num_frames == 4


@pytest.mark.parametrize("suffix, kind", [(".nrrd", "nrrd"), (".nii.gz", "nifti")])
def test_itk_2d_plus_t(tmp_path: Path, suffix: str, kind: str) -> None:
    frames = _frame_stack(5).astype(np.uint16) * 17
    image = sitk.GetImageFromArray(frames)  # numpy (t, y, x) -> ITK (x, y, t)
    image.SetSpacing((0.3, 0.5, 1.0))  # column 0.3 mm, row 0.5 mm
    path = tmp_path / f"cine{suffix}"
    sitk.WriteImage(image, str(path))
    cine = read_cine(path)
    assert cine.source_kind == kind and cine.spacing == pytest.approx((0.5, 0.3))
    assert cine.frames.dtype == np.uint16
    np.testing.assert_array_equal(cine.to_array(), frames)


def test_nifti_4d_with_singleton_z(tmp_path: Path) -> None:
    frames = _frame_stack(4)
    image = sitk.JoinSeries([sitk.GetImageFromArray(f[None]) for f in frames])  # ITK (x, y, 1, t)
    assert image.GetSize() == (52, 36, 1, 4)
    path = tmp_path / "cine.nii"
    sitk.WriteImage(image, str(path))
    cine = read_cine(path)
    assert cine.shape == frames.shape and cine.frames.dtype == np.uint8
    np.testing.assert_array_equal(cine.to_array(), frames)


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    frames = _frame_stack(6).astype(np.uint16) * 100
    np.save(tmp_path / "cine.npy", frames)
    cine = read_cine(tmp_path / "cine.npy")
    assert isinstance(cine.frames, np.memmap) and cine.source_kind == "npy"
    np.testing.assert_array_equal(cine.to_array(), frames)


def test_npy_small_ints_cast_floats_stretched(tmp_path: Path) -> None:
    frames = _frame_stack(4)
    np.save(tmp_path / "i.npy", frames.astype(np.int32))
    cine = read_cine(tmp_path / "i.npy")
    assert cine.frames.dtype == np.uint8
    np.testing.assert_array_equal(cine.to_array(), frames)

    np.save(tmp_path / "f.npy", frames.astype(np.float32) / 255.0)
    with pytest.warns(UserWarning, match="f.npy.*stretched"):
        cine = read_cine(tmp_path / "f.npy")
    got = cine.to_array()
    assert got.dtype == np.uint16 and got.min() == 0 and got.max() == 65535
    np.testing.assert_array_equal(np.argsort(got.ravel(), kind="stable"), np.argsort(frames.ravel(), kind="stable"))
