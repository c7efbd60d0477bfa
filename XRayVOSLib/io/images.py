"""Cines stored as image frames: a folder of PNG/JPEG/TIF files, a NRRD/NIfTI 2D+t volume, or a .npy array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .types import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    Cine,
    IntensityMap,
    LazyFrames,
    even_times,
    natural_key,
    require_frames,
    to_grey,
    warn_colour,
)

_GREY_MODES = {
    "L": np.uint8,
    "I;16": np.uint16,
    "I;16B": np.uint16,
    "I;16L": np.uint16,
    "I": np.uint16,
    "1": np.uint8,
    "LA": np.uint8,
}


def _assumed_tags() -> dict[str, object]:
    return {"frame_time_assumed": True}


def load_image(path: Path) -> tuple[np.ndarray, bool]:
    """One image file as a grey [H, W] uint8/uint16 array, and whether it was colour."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in _GREY_MODES:
                arr = np.asarray(im.convert("L") if mode in ("1", "LA") else im)
                if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
                    raise InputError(f"{path}: 32-bit grey values outside 0..65535; save frames as 8- or 16-bit")
                return arr.astype(_GREY_MODES[mode], copy=False), False
            if mode == "F":
                raise InputError(f"{path}: floating-point image; save frames as 8- or 16-bit grey")
            return to_grey(np.asarray(im.convert("RGB"))), True
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc


def _check_frame_file(path: Path, first: str, shape: tuple[int, ...], mode: str) -> None:
    """Size, pixel mode and completeness of one frame file before the run, so a misfit or cut frame is refused
    before any output exists rather than mid-run. A PNG is checked by PIL's verify (every chunk's CRC, no
    decompression); other formats have no such check in PIL (JPEG's verify reads nothing), so they are
    decoded once and dropped."""
    try:
        with Image.open(path) as im:
            size, this_mode = im.size, im.mode
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        problem = "is truncated" if "truncated" in str(exc).lower() else "is not a readable image"
        raise InputError(f"{path}: frame {problem} ({exc})") from exc
    if size != (shape[1], shape[0]):
        raise InputError(f"{path}: frame is {size[0]}x{size[1]} but {first} is {shape[1]}x{shape[0]}")
    if _depth(this_mode) != _depth(mode):
        raise InputError(f"{path}: frame is {_depth(this_mode)} (mode {this_mode}) but {first} is {_depth(mode)} "
                         f"(mode {mode}); use one bit depth for every frame")


def _depth(mode: str) -> str:
    return "16-bit grey" if _GREY_MODES.get(mode) is np.uint16 else "8-bit"


def read_image_folder(folder: Path) -> Cine:
    """Frames in natural file-name order (frame2 before frame10), read one file per access."""
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)
        ),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise InputError(f"{folder}: folder holds no DICOM or image ({', '.join(IMAGE_SUFFIXES)}) frames")
    require_frames(len(files), folder)
    first, colour = load_image(files[0])
    if colour:
        warn_colour(folder)
    shape, dtype = first.shape, first.dtype
    with Image.open(files[0]) as im:
        mode = im.mode
    for p in files[1:]:
        _check_frame_file(p, files[0].name, shape, mode)

    def read_frame(i: int) -> np.ndarray:
        arr, is_colour = (first, colour) if i == 0 else load_image(files[i])
        if arr.shape != shape:  # never resized: a frame of another size is a different cine
            raise InputError(
                f"{files[i]}: frame is {arr.shape[1]}x{arr.shape[0]} but {files[0].name} is {shape[1]}x{shape[0]}"
            )
        if arr.dtype != dtype:
            raise InputError(f"{files[i]}: frame is {arr.dtype} but {files[0].name} is {dtype}; use one bit depth")
        if is_colour and not colour:
            warn_colour(files[i])
        return arr

    tags = _assumed_tags()
    tags["files"] = [p.name for p in files]
    frames = LazyFrames(len(files), shape, dtype, read_frame)
    return Cine(frames, even_times(len(files)), None, "image-folder", tags, folder)


def read_volume(path: Path) -> Cine:
    """NRRD/NIfTI 2D+t through SimpleITK: axes (x, y, t), or (x, y, 1, t); spacing from x and y."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable NRRD/NIfTI image ({str(exc).strip().splitlines()[-1]})") from exc
    size = image.GetSize()
    arr = sitk.GetArrayViewFromImage(image)  # numpy order: (t, y, x) or (t, 1, y, x), + components
    if image.GetDimension() == 4 and size[2] == 1:
        arr = arr[:, 0]
    elif image.GetDimension() != 3:
        raise InputError(f"{path}: image of size {size} is not 2D+t (expected x, y, time)")
    if image.GetNumberOfComponentsPerPixel() > 1:
        warn_colour(path)
        arr = np.stack([to_grey(f) for f in arr])
    require_frames(arr.shape[0], path)
    values = IntensityMap(arr, path)
    frames = values(np.array(arr))
    sx, sy = image.GetSpacing()[:2]
    kind = "nifti" if path.name.lower().endswith(NIFTI_SUFFIXES) else "nrrd"
    return Cine(frames, even_times(len(frames)), (float(sy), float(sx)), kind, _assumed_tags(), path)


def read_npy(path: Path) -> Cine:
    """[T, H, W] (or [T, H, W, 3|4] colour) array, memory-mapped so frames are read on access."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    if arr.ndim == 2:
        require_frames(1, path)
    colour = arr.ndim == 4 and arr.shape[-1] in (3, 4)
    if arr.ndim != 3 and not colour:
        raise InputError(f"{path}: array of shape {arr.shape} is not a cine (expected [T, H, W])")
    require_frames(arr.shape[0], path)
    if arr.dtype in (np.uint8, np.uint16) and not colour:
        frames: object = arr  # the memmap itself: nothing to convert
    else:
        if colour:
            warn_colour(path)
        grey_dtype = arr.dtype if arr.dtype in (np.uint8, np.uint16) else np.dtype(np.float32)  # as to_grey gives
        grey = (
            arr
            if not colour
            else LazyFrames(arr.shape[0], arr.shape[1:3], grey_dtype, lambda i: to_grey(np.asarray(arr[i])))
        )
        values = IntensityMap(grey, path)
        frames = LazyFrames(arr.shape[0], arr.shape[1:3], values.dtype, lambda i: values(np.asarray(grey[i])))
    return Cine(frames, even_times(arr.shape[0]), None, "npy", _assumed_tags(), path)
