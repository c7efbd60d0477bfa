"""Label-map masks: 0 = background, 1..N objects; ids may be non-contiguous ({0, 3, 7}) and are kept.

PNG masks follow DAVIS: a palette ("P") PNG whose palette index is the label. Grey PNGs (8/16-bit),
NRRD/NIfTI (SimpleITK), .npy and .npz hold the label as the value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..outputs import atomic_open, atomic_path


def _davis_palette() -> bytes:
    """The DAVIS / PASCAL VOC colour map: bits of the label interleaved into R, G, B from the top bit."""
    palette = bytearray()
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += bytes((r, g, b))
    return bytes(palette)


DAVIS_PALETTE: bytes = _davis_palette()  # 768 ints: label 1 = (128, 0, 0), 2 = (0, 128, 0), ...

MASK_SUFFIXES = (".png", ".npy", ".npz", ".nrrd", ".nhdr", ".nii", ".nii.gz")
_FOLDER_SUFFIXES = (".png", ".npy", ".nrrd")
_LABEL_IMAGE_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I")


def _as_labels(arr: Any, source: object) -> np.ndarray:
    """A 2-D label array as uint8 (uint16 when an id exceeds 255), or InputError naming `source`."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        raise InputError(f"mask {source} is an RGB mask; save as a palette or grey label PNG")
    if arr.ndim != 2:
        raise InputError(f"mask {source} has shape {arr.shape}; expected a 2-D [H, W] label map")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise InputError(f"mask {source} contains NaN")
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"mask {source} holds non-integer values; labels must be whole numbers")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"mask {source} has type {arr.dtype}; labels must be integers")
    if arr.size and arr.min() < 0:
        raise InputError(f"mask {source} holds negative labels (min {arr.min()})")
    top = int(arr.max()) if arr.size else 0
    if top > 65535:
        raise InputError(f"mask {source} holds label {top}; labels must be <= 65535")
    return arr.astype(np.uint8 if top <= 255 else np.uint16, copy=False)


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_IMAGE_MODES:
                raise InputError(f"mask {path} is an RGB mask; save as a palette or grey label PNG (mode {im.mode})")
            # "P": np.asarray gives palette indices, which ARE the labels (DAVIS convention).
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"mask {path} is not a readable image ({exc})") from exc


def _read_itk(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"mask {path} is not a readable NRRD/NIfTI image") from exc
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"mask {path} is an RGB mask; save as a palette or grey label PNG")
    arr = sitk.GetArrayFromImage(image)
    while arr.ndim > 2 and arr.shape[0] == 1:  # a 2-D slice saved as (1, H, W)
        arr = arr[0]
    return arr


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        if "labels" in data.files:
            return data["labels"]
        if len(data.files) == 1:
            return data[data.files[0]]
        raise InputError(f"mask {path} holds arrays {data.files}; name the label map 'labels'")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label map [H, W] (uint8, or uint16 where an id exceeds 255)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".png"):
            arr = _read_png(path)
        elif name.endswith((".nrrd", ".nhdr", ".nii", ".nii.gz")):
            arr = _read_itk(path)
        elif name.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif name.endswith(".npz"):
            arr = _read_npz(path)
        else:
            raise InputError(f"mask {path} has an unknown suffix; expected one of {', '.join(MASK_SUFFIXES)}")
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"mask {path} is not readable ({exc})") from exc
    return _as_labels(arr, path)


def write_mask(path: str | Path, labels: Any, *, palette: bool = True) -> Path:
    """Write a label map; the format follows the suffix (.png, .npy, .npz, .nrrd, .nii[.gz]).

    A .png is a DAVIS palette PNG (mode "P") by default, an 8-bit grey PNG with palette=False, and a
    16-bit grey PNG whenever an id exceeds 255 (a palette has 256 entries). Written atomically
    (XRayVOSLib.outputs): a failed write (full disk) leaves the old file or none, never a partial one.
    """
    path = Path(path)
    arr = _as_labels(labels, path)
    name = path.name.lower()
    if name.endswith(".png"):
        image = Image.fromarray(arr)  # "L" for uint8, "I;16" for uint16
        if arr.dtype == np.uint8 and palette:
            image.putpalette(DAVIS_PALETTE)  # "L" becomes "P" with the same values
        with atomic_open(path) as handle:
            image.save(handle, format="PNG", optimize=False)
    elif name.endswith(".npy"):
        with atomic_open(path) as handle:
            np.save(handle, arr, allow_pickle=False)
    elif name.endswith(".npz"):
        with atomic_open(path) as handle:
            np.savez_compressed(handle, labels=arr)
    elif name.endswith(".nhdr"):  # header and data in two files: no single rename makes both appear
        raise InputError(f"mask {path}: a detached NRRD header is read but not written; write .nrrd")
    elif name.endswith((".nrrd", ".nii", ".nii.gz")):
        import SimpleITK as sitk

        with atomic_path(path) as tmp:  # SimpleITK writes by name only
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp), useCompression=True)
    else:
        raise InputError(f"mask {path} has an unknown suffix; expected one of {', '.join(MASK_SUFFIXES)}")
    return path


def write_mask_sequence(out_dir: str | Path, labels: Any, start: int = 0) -> list[Path]:
    """Write [T, H, W] labels as out_dir/00000.png, 00001.png, ... (DAVIS palette PNGs), numbered from `start`."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"mask sequence for {out_dir} has shape {labels.shape}; expected [T, H, W]")
    out_dir = Path(out_dir)
    return [write_mask(out_dir / f"{start + t:05d}.png", labels[t]) for t in range(labels.shape[0])]


def read_mask_folder(folder: str | Path) -> dict[int, np.ndarray]:
    """Every *.png / *.npy / *.nrrd whose stem is a frame number, keyed by it in frame order (sparse annotation).

    A missing folder raises InputError; an existing one with no such file gives {}.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"mask folder {folder} does not exist")
    masks: dict[int, np.ndarray] = {}
    sources: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if not (p.is_file() and p.suffix.lower() in _FOLDER_SUFFIXES and re.fullmatch(r"\d+", p.stem)):
            continue
        index = int(p.stem)
        if index in masks:
            raise InputError(f"mask folder {folder}: {sources[index].name} and {p.name} are both frame {index}")
        masks[index], sources[index] = read_mask(p), p
    return dict(sorted(masks.items()))  # {} where nothing is annotated yet: the caller decides


def check_mask(labels: Any, frame_shape: tuple[int, ...], source: object) -> np.ndarray:
    """Validate a label map against the cine's frames ([H, W] or [T, H, W]); returns it as uint8/uint16."""
    arr = _as_labels(labels, source)
    height, width = (int(s) for s in tuple(frame_shape)[-2:])
    if arr.shape != (height, width):
        raise InputError(f"mask {source} is {arr.shape[1]}x{arr.shape[0]} but frames are {width}x{height}")
    if not arr.any():
        raise InputError(f"mask {source} is empty (no object labels > 0)")
    return arr
