"""DICOM files that lie about themselves, built from the real XA phantom (JPEG Lossless, 8 frames): a
NumberOfFrames that is not a number, a file cut in half, a header claiming more frames than the pixel
data holds. Each is refused when the cine is opened, with one line naming the file and the problem, and
`propagate` exits 2 before any output exists."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_io_dicom_syntaxes import cine_pixels, make_dicom

from XRayVOSLib.cli import main
from XRayVOSLib.errors import InputError
from XRayVOSLib.io import read_cine, write_mask

NUMBER_OF_FRAMES = b"\x28\x00\x08\x00IS"  # (0028,0008) IS, explicit VR little endian


@pytest.fixture(scope="module")
def phantom(phantom_dir: Path) -> Path:
    path = phantom_dir / "IM8.dcm"
    assert pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames == 8
    return path


def with_number_of_frames(source: Path, target: Path, value: bytes) -> Path:
    """A byte-exact copy of `source` whose NumberOfFrames value (2 bytes, "8 ") is replaced by `value`.
    Written as bytes: pydicom itself refuses to write an invalid IS value."""
    data = source.read_bytes()
    at = data.index(NUMBER_OF_FRAMES)
    assert data[at + 6:at + 10] == b"\x02\x008 " and len(value) == 2
    target.write_bytes(data[:at + 8] + value + data[at + 10:])
    return target


def refused(path: Path, *patterns: str, named: str | None = None) -> str:
    """read_cine(path) raises one line naming the file (`named`, default path's) and every pattern."""
    with pytest.raises(InputError) as info:
        read_cine(path)
    message = str(info.value)
    assert "\n" not in message and (named or path.name) in message, message
    for pattern in patterns:
        assert re.search(pattern, message), message
    return message


def test_the_phantom_itself_reads(phantom: Path) -> None:
    cine = read_cine(phantom)
    assert cine.shape == (8, 512, 512) and np.asarray(cine.frames[7]).any()


def test_number_of_frames_that_is_not_a_number(phantom: Path, tmp_path: Path) -> None:
    path = with_number_of_frames(phantom, tmp_path / "ab.dcm", b"ab")
    with pytest.warns(UserWarning, match="Invalid value for VR IS"):  # pydicom says so while reading
        refused(path, r"NumberOfFrames 'ab' is not a whole number")


def test_a_header_claiming_20_frames_of_8_is_refused_at_open(phantom: Path, tmp_path: Path) -> None:
    path = with_number_of_frames(phantom, tmp_path / "twenty.dcm", b"20")
    refused(path, r"header says 20 frames but the pixel data holds only 8")


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_a_file_cut_short_says_truncated_not_no_pixel_data(phantom: Path, tmp_path: Path, fraction: float) -> None:
    data = phantom.read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:int(len(data) * fraction)])
    message = refused(path, "truncated")
    assert "no pixel data" not in message


def test_a_truncated_uncompressed_file_names_the_missing_bytes(phantom: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom)
    ds.decompress()  # the same frames, native (explicit VR little endian)
    native = tmp_path / "native.dcm"
    ds.save_as(native)
    assert read_cine(native).shape == (8, 512, 512)
    data = native.read_bytes()
    native.write_bytes(data[:len(data) // 2])
    refused(native, r"truncated: its pixel data needs 2097152 bytes but only \d+ are in the file")


def test_a_truncated_frame_in_a_dicom_folder_is_refused_not_skipped(tmp_path: Path) -> None:
    frames = cine_pixels(3)
    for k, frame in enumerate(frames):
        make_dicom(tmp_path / f"f{k}.dcm", frame, InstanceNumber=k + 1)
    assert read_cine(tmp_path).shape == (3, *frames.shape[1:])
    cut = tmp_path / "f2.dcm"
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) - 100])
    refused(tmp_path, "truncated", named="f2.dcm")


@pytest.mark.parametrize("value, problem", [(b"20", "header says 20 frames"), (b"ab", "is not a whole number")])
def test_propagate_refuses_them_before_any_output_exists(phantom: Path, tmp_path: Path, capsys, value: bytes,
                                                         problem: str) -> None:
    path = with_number_of_frames(phantom, tmp_path / "bad.dcm", value)
    mask = np.zeros((512, 512), np.uint8)
    mask[200:260, 200:260] = 1
    write_mask(tmp_path / "m0.png", mask)
    out = tmp_path / "out"
    with pytest.warns(UserWarning) if value == b"ab" else contextlib.nullcontext():
        rc = main(["propagate", str(path), "--support", f"0:{tmp_path / 'm0.png'}", "--out", str(out),
                   "--method", "copy", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and problem in err[0] and "bad.dcm" in err[0], err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.dcm", "m0.png"]

