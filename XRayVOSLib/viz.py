"""Overlays for looking at cines and masks: filled labels, contours (prediction vs truth), frame grids.

Colours follow the DAVIS palette (label 1 = dark red, 2 = green, 3 = olive, 4 = navy, ...), so a
preview matches what palette PNG viewers show for the same label maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from XRayVOSLib.errors import InputError


def davis_palette(n: int = 256) -> np.ndarray:
    """[n, 3] uint8 DAVIS / PASCAL VOC palette: bits of the label interleaved into R, G, B."""
    palette = np.zeros((n, 3), np.uint8)
    for label in range(n):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


_PALETTE = davis_palette()


def label_colors(labels: np.ndarray) -> np.ndarray:
    """RGB image [H, W, 3] of a label map in DAVIS colours (background black)."""
    return _PALETTE[np.asarray(labels, np.uint8)]


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Grey [H, W] (any dtype, rescaled if not uint8) or RGB [H, W, 3] -> RGB uint8."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        lo, hi = float(frame.min()), float(frame.max())
        frame = ((frame - lo) / (hi - lo if hi > lo else 1.0) * 255 + 0.5).astype(np.uint8)
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame.copy()
    raise InputError(f"expected a [H, W] or [H, W, 3] frame, got shape {frame.shape}")


def _check_same_size(frame: np.ndarray, labels: np.ndarray, what: str) -> None:
    if labels.shape != frame.shape[:2]:
        raise InputError(f"{what} shape {labels.shape} does not match frame shape {frame.shape[:2]}")


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Frame with each labelled pixel blended toward its DAVIS colour; background untouched."""
    rgb = to_rgb(frame)
    labels = np.asarray(labels)
    _check_same_size(rgb, labels, "labels")
    on = labels > 0
    if on.any():
        colors = label_colors(labels)[on].astype(np.float32)
        rgb[on] = np.clip((1 - alpha) * rgb[on] + alpha * colors + 0.5, 0, 255).astype(np.uint8)
    return rgb


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return list(found)


def _bright(color: np.ndarray) -> tuple[int, int, int]:
    """DAVIS colours are dark; lift them so contours show on a grey X-ray."""
    c = color.astype(np.float32)
    c = c * (255.0 / max(float(c.max()), 1.0))
    return tuple(int(v) for v in c)


def contour_overlay(frame: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                    thickness: int = 1) -> np.ndarray:
    """Predicted object outlines as solid lines in each label's colour; ground-truth outlines (if
    given) as white dots, so misses and false positives stand out."""
    rgb = to_rgb(frame)
    pred = np.asarray(pred)
    _check_same_size(rgb, pred, "pred")
    if gt is not None:
        gt = np.asarray(gt)
        _check_same_size(rgb, gt, "gt")
        for label in np.unique(gt[gt > 0]):
            for contour in _contours(gt == label):
                pts = contour[::3, 0]  # every third contour pixel: a dotted line
                rgb[pts[:, 1], pts[:, 0]] = (255, 255, 255)
    for label in np.unique(pred[pred > 0]):
        cv2.drawContours(rgb, _contours(pred == label), -1, _bright(_PALETTE[int(label) % 256]), thickness)
    return rgb


def frame_strip(frames: Sequence[np.ndarray], columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Grid of equally sized frames (RGB or grey), `columns` per row, black gaps and empty cells."""
    if len(frames) == 0:
        raise InputError("frame_strip needs at least one frame")
    tiles = [to_rgb(f) for f in frames]
    h, w = tiles[0].shape[:2]
    if any(t.shape[:2] != (h, w) for t in tiles):
        raise InputError("frame_strip frames must all have the same size")
    columns = max(1, min(columns or len(tiles), len(tiles)))
    rows = -(-len(tiles) // columns)
    out = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out
