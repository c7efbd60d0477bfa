"""Cines for the engine and propagator tests (Testing/inference/ is on sys.path when pytest imports them)."""

from __future__ import annotations

import numpy as np


def discs(t: int, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two dark discs drifting over a noisy bright background: frames uint8 and their labels (ids 1, 2)."""
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(0)
    frames, labels = np.empty((t, h, w), np.uint8), np.zeros((t, h, w), np.uint8)
    for i in range(t):
        img = 200 + rng.normal(0, 4, (h, w))
        for oid, (cy, cx) in ((1, (h // 3 + i, w // 3 + i)), (2, (2 * h // 3, 2 * w // 3 - i))):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 8) ** 2
            img[disc] -= 90
            labels[i][disc] = oid
        frames[i] = np.clip(img, 0, 255)
    return frames, labels
