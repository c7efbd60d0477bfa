"""The one place where a cine's stored pixels become [0, 1]: the network's input and what DIS flow reads.

uint8 is divided by 255; anything wider (12/16-bit XA, floats) is scaled by robust percentiles of the whole
cine, so one cine gets one mapping and frame-to-frame brightness changes (contrast wash-in) are kept, and
brightness constancy, which DIS assumes, survives. The network then normalises [0, 1] with its config's
mean and std (model/normalize.py).
"""

from __future__ import annotations

import numpy as np


def intensity_range(frames: np.ndarray, max_samples: int = 16) -> tuple[float, float]:
    """(low, high) used to map a cine to [0, 1]; cheap on long cines (samples at most max_samples frames)."""
    if frames.dtype == np.uint8:
        return 0.0, 255.0
    step = max(1, len(frames) // max_samples)
    sample = np.asarray(frames[::step], dtype=np.float32)
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def to_unit_range(frames: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """[T, H, W] or [H, W] stored pixels -> float32 in [0, 1]."""
    low, high = value_range if value_range is not None else intensity_range(np.asarray(frames))
    out = (np.asarray(frames, dtype=np.float32) - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def unit_to_uint8(frame01: np.ndarray) -> np.ndarray:
    """A frame in [0, 1] as uint8, the input DIS flow takes."""
    return np.clip(np.asarray(frame01, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


__all__ = ["intensity_range", "to_unit_range", "unit_to_uint8"]
