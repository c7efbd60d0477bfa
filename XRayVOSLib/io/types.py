"""The types every reader shares: `Cine`, lazy frame access (`LazyFrames`), the grey-level mapping and the
suffix tables `read_cine` dispatches on.

Kept apart from `cine.py` (the dispatcher) so the readers import these without importing the dispatcher,
which imports them: no cycle.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

# Where a source carries no timing we assume the usual XA acquisition rate and say so in the tags.
ASSUMED_FPS = 15.0

SOURCE_KINDS = ("dicom-multiframe", "dicom-folder", "image-folder", "video", "nrrd", "nifti", "npy")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


class LazyFrames:
    """[T, H, W] frames decoded on access, so a long cine never sits in memory whole.

    Indexing with an int gives one [H, W] ndarray, with a slice (or a tuple led by one) a stacked
    ndarray; `np.asarray(frames)` decodes everything once.
    """

    def __init__(
        self,
        num_frames: int,
        frame_shape: tuple[int, int],
        dtype: np.dtype | type,
        read_frame: Callable[[int], np.ndarray],
        read_frames: Callable[[Sequence[int]], Iterable[np.ndarray]] | None = None,
    ) -> None:
        self._n = int(num_frames)
        self._frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        self._read_frame = read_frame
        # A batch reader lets a source (e.g. one DICOM file) parse its header once per batch.
        self._read_frames = read_frames or (lambda idx: (read_frame(i) for i in idx))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._n, *self._frame_shape)

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self._n

    def _index(self, i: int) -> int:
        if not -self._n <= i < self._n:
            raise IndexError(f"frame index {i} out of range for {self._n} frames")
        return i % self._n

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._read_frame(self._index(int(key)))
        elif isinstance(key, slice):
            indices = list(range(*key.indices(self._n)))
            out = np.empty((len(indices), *self._frame_shape), self.dtype)
            for k, frame in enumerate(self._read_frames(indices) if indices else ()):
                out[k] = frame
        else:
            indices = [self._index(int(i)) for i in np.asarray(key).reshape(-1)]
            out = (
                np.stack(list(self._read_frames(indices))) if indices else np.empty((0, *self._frame_shape), self.dtype)
            )
        return out[(slice(None),) * (out.ndim - 2) + rest] if rest else out

    def map(self, fn: Callable[[np.ndarray], np.ndarray], dtype: np.dtype | type) -> LazyFrames:
        """Frames with `fn` applied to each on access (still lazy)."""
        return LazyFrames(
            self._n,
            self._frame_shape,
            dtype,
            lambda i: fn(self._read_frame(i)),
            lambda idx: (fn(f) for f in self._read_frames(idx)),
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._read_frames(range(self._n)))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, dtype={self.dtype})"


@dataclass
class Cine:
    """An X-ray cine: frames [T, H, W] (uint8/uint16 as stored), their times and where they came from."""

    frames: Any  # np.ndarray, np.memmap or LazyFrames: all have shape, dtype, len, [] and __array__
    frame_times: np.ndarray  # [T] seconds from the first frame
    spacing: tuple[float, float] | None  # (row, column) mm, None where the source has none
    source_kind: str
    tags: dict[str, object] = field(default_factory=dict)
    path: Path = field(default_factory=Path)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.frames.shape)  # type: ignore[return-value]

    @property
    def fps(self) -> float | None:
        """Frames per second from the frame times; None where the source carries no timing."""
        if self.tags.get("frame_time_assumed") or len(self.frame_times) < 2:
            return None
        step = float(np.median(np.diff(self.frame_times)))
        return 1.0 / step if step > 0 else None

    def to_array(self) -> np.ndarray:
        """Every frame decoded into one [T, H, W] ndarray."""
        return np.asarray(self.frames)


def natural_key(name: str) -> list[object]:
    """Sort key that puts frame2 before frame10."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name.lower())]


def even_times(num_frames: int, fps: float = ASSUMED_FPS) -> np.ndarray:
    return np.arange(num_frames, dtype=np.float64) / float(fps)


def require_frames(num_frames: int, source: Path | str) -> None:
    if num_frames < 2:
        raise InputError(f"{source}: holds {num_frames} frame(s); XRayVOS needs at least 2 frames")


def to_grey(frame: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB(A) frame, in the frame's own dtype."""
    import cv2

    if frame.ndim == 2:
        return frame
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.dtype not in (np.uint8, np.uint16):
        frame = frame.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def warn_colour(source: Path | str) -> None:
    warnings.warn(f"{source}: colour frames converted to grey (BT.601 luma)", UserWarning, stacklevel=3)


class IntensityMap:
    """Maps any numeric frames onto uint8/uint16 without losing information where possible.

    uint8/uint16 and integer data already inside [0, 65535] are kept as they are (the narrowest of the
    two types that holds the range). Anything else (negative, wider, non-integral floats) is stretched
    linearly from its min..max onto 0..65535 with a warning: the model needs integer grey levels, and a
    stretch keeps every distinction the data makes. The range is measured frame by frame so an npy
    memmap is never loaded whole.
    """

    def __init__(self, frames: Any, source: Path | str) -> None:
        dtype = np.dtype(frames.dtype)
        self.scale: tuple[float, float] | None = None
        self.dtype = dtype
        if dtype in (np.uint8, np.uint16):
            return
        if dtype == np.bool_:
            self.dtype = np.dtype(np.uint8)
            return
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise InputError(f"{source}: frames of type {dtype} are not grey levels")
        lo, hi, integral = np.inf, -np.inf, True
        for t in range(len(frames)):
            frame = np.asarray(frames[t])
            if np.issubdtype(dtype, np.floating):
                if not np.isfinite(frame).all():
                    raise InputError(f"{source}: frame {t} contains NaN or infinite values")
                integral = integral and bool(np.all(frame == np.round(frame)))
            lo, hi = min(lo, float(frame.min())), max(hi, float(frame.max()))
        if integral and lo >= 0 and hi <= 65535:
            self.dtype = np.dtype(np.uint8 if hi <= 255 else np.uint16)
            return
        self.dtype = np.dtype(np.uint16)
        self.scale = (lo, hi)
        warnings.warn(
            f"{source}: {dtype} values in [{lo:g}, {hi:g}] stretched linearly onto uint16 0..65535",
            UserWarning,
            stacklevel=3,
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return frame.astype(self.dtype, copy=False)
        lo, hi = self.scale
        span = (hi - lo) or 1.0
        out = (frame.astype(np.float64) - lo) * (65535.0 / span)
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
