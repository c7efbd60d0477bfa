"""DAVIS-2017 region (J) and boundary (F) measures for one object in one frame.

These follow davis2017-evaluation (github.com/davisvideochallenge/davis2017-evaluation, metrics.py:
`db_eval_iou`, `f_measure`, `_seg2bmap`) line for line in meaning. That package is not on PyPI (it is
installed from git and pins old scikit-image), so it cannot be a dependency here; the few lines are
rewritten with numpy + OpenCV and cross-checked in Testing/test_metrics.py.

Masks are boolean [H, W] arrays (one object). `void` marks pixels that count for neither mask
(DAVIS label 255); None means no void pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BOUND_TH = 0.008  # DAVIS default boundary tolerance, as a fraction of the image diagonal


def bound_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Boundary tolerance in pixels: bound_th itself if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, the DAVIS `_seg2bmap` definition (no resizing).

    A pixel is boundary when it differs from its east, south or south-east neighbour; the last row
    and column compare only along themselves, and the bottom-right corner is never boundary.
    """
    seg = np.asarray(mask).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Structuring element equal to skimage.morphology.disk(radius): all (y, x) with y^2 + x^2 <= r^2.

    cv2.getStructuringElement(MORPH_ELLIPSE) is *not* the same set for most radii (it is a rasterised
    ellipse fitted to the box), so the disk is built from its definition to keep F identical to DAVIS.
    """
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ((yy * yy + xx * xx) <= r * r).astype(np.uint8)


def j_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J = |pred & gt| / |pred | gt|; 1.0 when both are empty (DAVIS convention)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    keep = np.ones_like(gt) if void is None else ~np.asarray(void, dtype=bool)
    inter = np.count_nonzero(pred & gt & keep)
    union = np.count_nonzero((pred | gt) & keep)
    return 1.0 if union == 0 else float(inter / union)


def f_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure with DAVIS's tolerance and empty-mask conventions.

    precision = share of pred boundary pixels within bound_pix of a gt boundary pixel, recall the
    converse. Empty boundaries: both empty -> P = R = 1 (F = 1); only pred empty -> P = 1, R = 0
    (F = 0); only gt empty -> P = 0, R = 1 (F = 0).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        pred, gt = pred & keep, gt & keep
    kernel = disk(bound_pixels(pred.shape, bound_th))
    fg_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    n_fg = np.count_nonzero(fg_boundary)
    n_gt = np.count_nonzero(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
        recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def jf_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> tuple[float, float, float]:
    """(J, F, J&F) for one object in one frame; J&F is their plain mean, as in DAVIS."""
    j = j_measure(pred, gt, void)
    f = f_measure(pred, gt, void, bound_th)
    return j, f, (j + f) / 2.0
