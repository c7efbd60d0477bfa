"""Mask IO: every format round-trips label ids exactly (non-contiguous too), DAVIS palette PNGs, folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from XRayVOSLib.io import DAVIS_PALETTE, check_mask, read_mask, read_mask_folder, write_mask, write_mask_sequence

SUFFIXES = [".png", ".npy", ".npz", ".nrrd", ".nii.gz"]


def labels_with(ids: list[int], h: int = 30, w: int = 44) -> np.ndarray:
    """Blobs with the given object ids on background 0 (width != height to catch transposes)."""
    dtype = np.uint8 if max(ids) <= 255 else np.uint16
    labels = np.zeros((h, w), dtype)
    for k, label in enumerate(ids):
        labels[2 + 5 * k : 6 + 5 * k, 3 + 7 * k : 12 + 7 * k] = label
    return labels


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("ids", [[3, 7], [1, 2, 255], [5, 300, 65535]], ids=["sparse", "uint8-max", "uint16"])
def test_roundtrip_is_lossless(tmp_path: Path, suffix: str, ids: list[int]) -> None:
    labels = labels_with(ids)
    path = write_mask(tmp_path / f"mask{suffix}", labels)
    back = read_mask(path)
    assert back.dtype == labels.dtype and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)
    assert set(np.unique(back)) == {0, *ids}


def test_davis_palette_values() -> None:
    palette = list(DAVIS_PALETTE)
    assert len(palette) == 768 and all(0 <= v <= 255 for v in palette)
    colours = [tuple(palette[3 * i : 3 * i + 3]) for i in range(256)]
    assert colours[:5] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert colours[255] == (224, 224, 192)
    assert len(set(colours)) == 256  # every label its own colour


def test_png_is_palette_mode_with_davis_palette(tmp_path: Path) -> None:
    labels = labels_with([3, 7])
    path = write_mask(tmp_path / "m.png", labels)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[:768] == list(DAVIS_PALETTE)
        rgb = np.asarray(im.convert("RGB"))
    # What a viewer shows: label 3 olive (128,128,0), label 7 grey (128,128,128), background black.
    assert tuple(rgb[labels == 3][0]) == (128, 128, 0) and tuple(rgb[labels == 7][0]) == (128, 128, 128)
    assert tuple(rgb[labels == 0][0]) == (0, 0, 0)


def test_grey_png_when_palette_off(tmp_path: Path) -> None:
    labels = labels_with([2, 9])
    path = write_mask(tmp_path / "g.png", labels, palette=False)
    with Image.open(path) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), labels)
    np.testing.assert_array_equal(read_mask(path), labels)


def test_reads_pngs_made_by_other_tools(tmp_path: Path) -> None:
    labels = labels_with([1, 4])
    davis = Image.fromarray(labels)
    davis.putpalette([200, 10, 10] * 256)  # index is the label whatever the colours
    davis.save(tmp_path / "davis.png")
    Image.fromarray(labels.astype(np.uint16) * 1000).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "davis.png"), labels)
    grey16 = read_mask(tmp_path / "grey16.png")
    assert grey16.dtype == np.uint16
    np.testing.assert_array_equal(grey16, labels.astype(np.uint16) * 1000)


def test_nrrd_slice_and_npz_single_array(tmp_path: Path) -> None:
    labels = labels_with([6])
    sitk.WriteImage(sitk.GetImageFromArray(labels[None]), str(tmp_path / "slice.nrrd"))  # (1, H, W)
    np.testing.assert_array_equal(read_mask(tmp_path / "slice.nrrd"), labels)
    np.savez(tmp_path / "any.npz", seg=labels.astype(np.int64))
    back = read_mask(tmp_path / "any.npz")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_sequence_and_sparse_folder(tmp_path: Path) -> None:
    stack = np.stack([labels_with([1, 3]), labels_with([3]), labels_with([2, 7])])
    paths = write_mask_sequence(tmp_path / "seq", stack, start=5)
    assert [p.name for p in paths] == ["00005.png", "00006.png", "00007.png"]
    masks = read_mask_folder(tmp_path / "seq")
    assert list(masks) == [5, 6, 7]
    for k, index in enumerate(masks):
        np.testing.assert_array_equal(masks[index], stack[k])

    sparse = tmp_path / "sparse"
    write_mask(sparse / "00000.png", stack[0])
    write_mask(sparse / "12.npy", stack[1])
    write_mask(sparse / "00040.nrrd", stack[2])
    write_mask(sparse / "preview.png", stack[0])  # not a frame number: ignored
    (sparse / "notes.txt").write_text("ignored")
    masks = read_mask_folder(sparse)
    assert list(masks) == [0, 12, 40]
    np.testing.assert_array_equal(masks[40], stack[2])


def test_check_mask_accepts_matching_mask() -> None:
    labels = labels_with([3, 7]).astype(np.int64)
    checked = check_mask(labels, (10, 30, 44), "m.png")  # a cine's (T, H, W) works as frame_shape
    assert checked.dtype == np.uint8
    np.testing.assert_array_equal(checked, labels)
    assert check_mask(labels > 0, (30, 44), "bool").max() == 1
