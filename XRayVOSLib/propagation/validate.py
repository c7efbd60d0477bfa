"""Checks on what a caller hands to any propagation method (network or baseline)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from XRayVOSLib.errors import InputError

# Results are uint8 label maps (palette PNGs, the worker's labels.npy, Slicer's labelmaps): ids 1..255.
MAX_OBJECT_ID = 255


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Return frames as an ndarray [T, H, W]; raise InputError naming the problem otherwise."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] in (3, 4):
        raise InputError(f"{name}: got colour frames of shape {frames.shape}; convert to grey [T, H, W] first")
    if frames.ndim != 3:
        raise InputError(f"{name}: expected a cine of shape [T, H, W], got shape {frames.shape}")
    if frames.shape[0] < 2:
        raise InputError(f"{name}: a cine needs at least 2 frames, got {frames.shape[0]}")
    if frames.shape[1] < 16 or frames.shape[2] < 16:
        raise InputError(f"{name}: frames of {frames.shape[1]}x{frames.shape[2]} are too small (minimum 16x16)")
    if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
        raise InputError(f"{name}: contains NaN or infinite pixel values")
    if not (np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)):
        raise InputError(f"{name}: unsupported pixel type {frames.dtype}")
    return frames


def check_supports(
    supports: Mapping[int, np.ndarray], num_frames: int, frame_shape: tuple[int, int]
) -> tuple[dict[int, np.ndarray], list[int]]:
    """Validate {frame index: label map}; return (supports with int keys, sorted union of object ids)."""
    if not supports:
        raise InputError("supports: at least one support frame with a mask is needed")
    checked: dict[int, np.ndarray] = {}
    object_ids: set[int] = set()
    for key, labels in supports.items():
        # int(0.5) would be 0 and silently merge two supports: a frame index must be an integer already.
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise InputError(f"support frame {key!r}: a frame index must be an integer, got {type(key).__name__}")
        t = int(key)
        if not 0 <= t < num_frames:
            raise InputError(f"support frame {t}: out of range for a cine of {num_frames} frames (0-based)")
        labels = np.asarray(labels)
        if labels.ndim == 3 and labels.shape[-1] in (3, 4):
            raise InputError(f"support frame {t}: mask is an RGB image; give a label map (0 = background, 1..N)")
        if labels.shape != tuple(frame_shape):
            raise InputError(
                f"support frame {t}: mask is {labels.shape[1] if labels.ndim > 1 else '?'}x{labels.shape[0]} "
                f"(shape {labels.shape}) but frames are {frame_shape[1]}x{frame_shape[0]} "
                f"(shape {tuple(frame_shape)}); nothing is resized"
            )
        if np.issubdtype(labels.dtype, np.floating):
            if not np.isfinite(labels).all():
                raise InputError(f"support frame {t}: mask contains NaN or infinite values")
            if not np.all(labels == np.round(labels)):
                raise InputError(f"support frame {t}: mask has non-integer values; give a label map")
        if labels.min() < 0:
            raise InputError(f"support frame {t}: mask has negative labels")
        ids = set(int(v) for v in np.unique(labels)) - {0}
        if not ids:
            raise InputError(f"support frame {t}: mask is empty (no object labelled)")
        if max(ids) > MAX_OBJECT_ID:
            raise InputError(f"support frame {t}: object id {max(ids)} is above {MAX_OBJECT_ID}; results are 8-bit "
                             f"label maps (DAVIS palette PNGs), so number the objects 1..{MAX_OBJECT_ID}")
        object_ids |= ids
        checked[t] = labels.astype(np.uint8)
    return checked, sorted(object_ids)


def check_cine(frames: Any, name: str = "frames") -> Any:
    """A cine a method may read frame by frame: an ndarray is checked whole ([T, H, W], finite, >= 2 frames,
    >= 16 px); a lazy cine (anything with .shape and [t], e.g. io.LazyFrames) is checked by its shape only,
    so that nothing is decoded twice."""
    lazy = hasattr(frames, "__getitem__") and hasattr(frames, "shape") and not isinstance(frames, np.ndarray)
    if not lazy:
        return check_frames(np.asarray(frames), name)
    shape = tuple(frames.shape)
    if len(shape) != 3:
        raise InputError(f"{name}: expected a cine of shape [T, H, W], got shape {shape}")
    if shape[0] < 2:
        raise InputError(f"{name}: a cine needs at least 2 frames, got {shape[0]}")
    if shape[1] < 16 or shape[2] < 16:
        raise InputError(f"{name}: frames of {shape[1]}x{shape[2]} are too small (minimum 16x16)")
    return frames
