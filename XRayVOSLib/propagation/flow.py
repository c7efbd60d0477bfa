"""DIS optical flow and the one warp, shared by the output fusion and the flow baselines (OpenCV, no torch).

Convention everywhere: `flow = solver(current, reference)` is [H, W, 2] (x, y) such that frame `current`
at x looks like `reference` at x + flow(x); `warp(values, flow)` pulls each pixel's value from there, with
the border replicated. Nearest-neighbour for label maps (a 1-px wire shifted by half a pixel must not blur
into the background), bilinear for probabilities.
"""

from __future__ import annotations

import cv2
import numpy as np


def create_dis(preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, finest_scale: int = 0) -> cv2.DISOpticalFlow:
    """A DIS flow solver. The MEDIUM preset stops at half resolution (finest scale 1), where 1-3 px guidewires
    and vessels blur into the background; solving down to full resolution (0) raised mean J on synthetic
    cines from 0.54 to 0.63 (copy: 0.53) for ~3x the time (about 70 ms per 512x512 frame). One solver per
    cine: the object keeps state between calls."""
    dis = cv2.DISOpticalFlow_create(preset)
    dis.setFinestScale(finest_scale)
    return dis


class FlowSolver:
    """DIS flow between uint8 frames of one cine (one solver, full-resolution MEDIUM preset); the frames are
    converted as intensity.py says, for the network's fusion and the flow baselines alike."""

    def __init__(self) -> None:
        self.dis = create_dis()

    def __call__(self, current: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """[H, W, 2] float32 flow from `current` to `reference` (see the module docstring)."""
        return self.dis.calc(current, reference, None)


class Warp:
    """warp(values, flow): values [H, W] or [C, H, W] pulled along flow [H, W, 2]; the pixel grid is kept."""

    def __init__(self) -> None:
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, values: np.ndarray, flow: np.ndarray, nearest: bool = False) -> np.ndarray:
        height, width = flow.shape[:2]
        if self._grid is None or self._grid[0].shape != (height, width):
            grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
            self._grid = grid_x, grid_y
        map_x, map_y = self._grid[0] + flow[..., 0], self._grid[1] + flow[..., 1]
        interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        if values.ndim == 2:
            return cv2.remap(values, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
        # One channel at a time: cv2.remap takes at most 4 channels, a cine may have more objects.
        return np.stack([cv2.remap(np.ascontiguousarray(channel), map_x, map_y, interpolation,
                                   borderMode=cv2.BORDER_REPLICATE) for channel in values])


__all__ = ["FlowSolver", "Warp", "create_dis"]
