"""Dice and 95th-percentile Hausdorff distance (HD95) per object and frame, computed by MONAI.

MONAI (and with it torch and scipy) is imported inside the functions, so `import XRayVOSLib.metrics`
and the DAVIS J/F measures stay light; only calls that need Dice/HD95 pay for it.

Empty-mask conventions (the same in every table and JSON file):
- Dice: both empty -> 1.0 (agreement, like DAVIS J); exactly one empty -> 0.0.
- HD95: both empty -> NaN (no surface to measure); exactly one empty -> inf (the object was lost or
  hallucinated). Both are left out of HD95 averages; aggregate.py counts the inf frames separately.
HD95 is in pixels, or in mm when `spacing` is given as one number (isotropic) or (row, column) mm/pixel.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Sequence

import numpy as np

Spacing = float | Sequence[float] | None


def _as_batch(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"expected [N, H, W] or [H, W] masks, got shape {masks.shape}")
    return masks


def _spacing_list(spacing: Spacing) -> list[float] | None:
    if spacing is None:
        return None
    values = np.atleast_1d(np.asarray(spacing, dtype=float)).tolist()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(v > 0 and np.isfinite(v) for v in values):
        raise ValueError(f"spacing must be one positive number or (row, column) mm per pixel, got {spacing!r}")
    return values


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread: these are many tiny ops, and on a 2-core machine torch's intra-op pool
    made Dice/HD95 5-10x slower than one thread. The previous setting is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _crop_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of pred | gt over all frames, 1 px wider. MONAI crops to the same box itself; doing
    it first in numpy spares it converting and scanning the whole image for every frame."""
    rows = np.flatnonzero((pred | gt).any(axis=(0, 2)))
    cols = np.flatnonzero((pred | gt).any(axis=(0, 1)))
    return slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2)


def dice_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice per frame for boolean masks [N, H, W] (or one [H, W]); float64 [N]."""
    import torch
    from monai.metrics import compute_dice

    pred, gt = _as_batch(pred), _as_batch(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    # ignore_empty=False gives the convention above: 1 when both are empty, 0 when only gt is.
    with _single_thread():
        scores = compute_dice(
            torch.from_numpy(pred[:, None]), torch.from_numpy(gt[:, None]), include_background=True, ignore_empty=False
        )
    return scores[:, 0].double().numpy()


def hd95_scores(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None) -> np.ndarray:
    """Symmetric HD95 per frame for boolean masks [N, H, W]; NaN / inf for empty masks (module docstring)."""
    pred, gt = _as_batch(pred), _as_batch(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    spacing_mm = _spacing_list(spacing)
    has_pred = pred.any(axis=(1, 2))
    has_gt = gt.any(axis=(1, 2))
    out = np.full(len(pred), np.nan)
    out[has_pred != has_gt] = np.inf
    both = np.flatnonzero(has_pred & has_gt)
    if both.size:
        import torch
        from monai.metrics import compute_hausdorff_distance

        rows, cols = _crop_box(pred[both], gt[both])
        # Empty masks never reach MONAI (they would only warn and return nan/inf); its own
        # internal deprecation FutureWarning is not ours to act on.
        with warnings.catch_warnings(), _single_thread():
            warnings.simplefilter("ignore", FutureWarning)
            hd = compute_hausdorff_distance(
                torch.from_numpy(pred[both][:, None, rows, cols].astype(np.float32)),
                torch.from_numpy(gt[both][:, None, rows, cols].astype(np.float32)),
                include_background=True,
                percentile=95,
                spacing=spacing_mm,
            )
        out[both] = hd[:, 0].double().numpy()
    return out


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of one object in one frame."""
    return float(dice_scores(pred, gt)[0])


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None) -> float:
    """HD95 of one object in one frame (pixels, or mm with spacing)."""
    return float(hd95_scores(pred, gt, spacing)[0])
