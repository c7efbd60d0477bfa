"""Every bad input raises InputError whose message names the file and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import MPEG4HP41, JPEG2000Lossless, JPEGBaseline8Bit
from test_io_dicom_syntaxes import cine_pixels, make_dicom

from XRayVOSLib.errors import InputError
from XRayVOSLib.io import check_mask, read_cine, read_mask, read_mask_folder, write_mask


def raises_naming(path: Path | str, *patterns: str) -> pytest.RaisesExc:
    """pytest.raises(InputError) that also checks the message names `path` and every pattern."""
    return pytest.raises(
        InputError, match="(?s)" + "".join(f"(?=.*{p})" for p in [re.escape(Path(path).name), *patterns])
    )


def test_missing_path(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "nope.dcm", "no such file"):
        read_cine(tmp_path / "nope.dcm")


@pytest.mark.parametrize("name", ["notes.txt", "notes.dcm", "notes"])
def test_text_file_is_not_a_cine(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("patient notes, not pixels\n" * 20)
    with raises_naming(path):
        read_cine(path)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "sr.dcm", None)
    with raises_naming(path, "no pixel data"):
        read_cine(path)


def test_single_frame_inputs(tmp_path: Path) -> None:
    frame = cine_pixels(1)[0]
    dcm = make_dicom(tmp_path / "one.dcm", frame)
    with raises_naming(dcm, "at least 2 frames"):
        read_cine(dcm)
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(frame).save(folder / "0.png")
    with raises_naming(folder, "at least 2 frames"):
        read_cine(folder)
    with raises_naming(folder / "0.png", "at least 2 frames"):
        read_cine(folder / "0.png")
    np.save(tmp_path / "one.npy", frame)
    with raises_naming(tmp_path / "one.npy", "at least 2 frames"):
        read_cine(tmp_path / "one.npy")


@pytest.mark.parametrize(
    "syntax, package", [(JPEG2000Lossless, "pylibjpeg-openjpeg"), (JPEGBaseline8Bit, "pylibjpeg-libjpeg")]
)
def test_missing_decoder_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntax: str, package: str
) -> None:
    path = make_dicom(tmp_path / "c.dcm", cine_pixels(3), transfer_syntax=syntax)
    assert read_cine(path).num_frames == 3  # decodable while the plugins are there
    monkeypatch.setattr(get_decoder(syntax), "_available", {})  # as if no plugin were installed
    with raises_naming(path, "no decoder", f"pip install .*{package}"):
        read_cine(path)


def test_unsupported_transfer_syntax(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "mpeg.dcm", cine_pixels(2))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 64])
    ds.save_as(path)
    with raises_naming(path, "transfer syntax", "cannot be decoded"):
        read_cine(path)


def test_truncated_native_pixel_data(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "short.dcm", cine_pixels(4))
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(path)
    with raises_naming(path, "header says 4 frames but the pixel data holds only 2"):
        read_cine(path)


def test_corrupt_jpeg_stream(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "bad.dcm", cine_pixels(3), transfer_syntax=JPEGBaseline8Bit)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + bytes(range(256)) * 4 for _ in range(3)])
    ds.save_as(path)
    with raises_naming(path, "corrupt pixel data in frame 0"):
        read_cine(path)


def test_folder_problems(tmp_path: Path) -> None:
    with raises_naming(tmp_path, "no DICOM or image"):
        read_cine(tmp_path)
    frames = cine_pixels(3)
    for k, frame in enumerate(frames):
        Image.fromarray(frame if k != 2 else frame[:, :30]).save(tmp_path / f"{k}.png")
    with raises_naming(tmp_path / "2.png", "30x48", "40x48"):  # never resized
        read_cine(tmp_path)


def test_folder_mixing_series(tmp_path: Path) -> None:
    frames = cine_pixels(2)
    make_dicom(tmp_path / "a.dcm", frames[0], SeriesInstanceUID="1.2.3")
    make_dicom(tmp_path / "b.dcm", frames[1], SeriesInstanceUID="1.2.4")
    with raises_naming(tmp_path, "2 series"):
        read_cine(tmp_path)


def test_broken_video(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00garbage" * 100)
    with raises_naming(path, "video"):
        read_cine(path)


def test_mask_of_wrong_size() -> None:
    with raises_naming("m0.png", "is 44x30 but frames are 40x30"):
        check_mask(np.ones((30, 44), np.uint8), (30, 40), "m0.png")


def test_empty_mask() -> None:
    with raises_naming("first.png", "empty"):
        check_mask(np.zeros((30, 40), np.uint8), (30, 40), "first.png")


def test_rgb_mask(tmp_path: Path) -> None:
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[5:9, 5:9] = (128, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with raises_naming(tmp_path / "rgb.png", "RGB mask; save as a palette or grey label PNG"):
        read_mask(tmp_path / "rgb.png")
    with raises_naming("painted", "RGB"):
        check_mask(rgb, (30, 40), "painted")


@pytest.mark.parametrize(
    "values, problem",
    [(np.nan, "NaN"), (-1, "negative"), (0.5, "non-integer"), (70000, "65535")],
    ids=["nan", "negative", "fraction", "too-large"],
)
def test_bad_label_values(tmp_path: Path, values: float, problem: str) -> None:
    labels = np.zeros((8, 8), np.float64)
    labels[2, 2] = values
    with raises_naming("m.npy", problem):
        check_mask(labels, (8, 8), "m.npy")
    np.save(tmp_path / "m.npy", labels)
    with raises_naming(tmp_path / "m.npy", problem):
        read_mask(tmp_path / "m.npy")


def test_mask_file_problems(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "gone.png", "does not exist"):
        read_mask(tmp_path / "gone.png")
    (tmp_path / "m.jpg").write_bytes(b"x")
    with raises_naming(tmp_path / "m.jpg", "unknown suffix"):
        read_mask(tmp_path / "m.jpg")
    np.savez(tmp_path / "two.npz", a=np.ones((4, 4)), b=np.ones((4, 4)))
    with raises_naming(tmp_path / "two.npz", "labels"):
        read_mask(tmp_path / "two.npz")
    with raises_naming(tmp_path / "m.gif", "unknown suffix"):
        write_mask(tmp_path / "m.gif", np.ones((4, 4), np.uint8))


def test_mask_folder_problems(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "none", "does not exist"):
        read_mask_folder(tmp_path / "none")
    (tmp_path / "notes.txt").write_text("no masks here")
    assert read_mask_folder(tmp_path) == {}  # nothing annotated yet is not an error here
    write_mask(tmp_path / "00003.png", np.ones((4, 4), np.uint8))
    write_mask(tmp_path / "3.npy", np.ones((4, 4), np.uint8))
    with raises_naming(tmp_path, "both frame 3"):
        read_mask_folder(tmp_path)
