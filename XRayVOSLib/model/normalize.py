"""The one place where grey X-ray frames become network input.

Step 1 (numpy, per cine): stored pixels -> float32 in [0, 1]. uint8 is divided by 255; anything wider
(12/16-bit XA, floats) is scaled by robust percentiles of the whole cine, so one cine gets one mapping and
frame-to-frame brightness changes (contrast wash-in) are preserved.
Step 2 (torch, in the network): [0, 1] -> zero-mean / unit-variance with the config's mean and std.
"""

from __future__ import annotations

import numpy as np
import torch


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


def normalize(image01: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] -> network input."""
    return (image01 - mean) / std
