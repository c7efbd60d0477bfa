"""Overlays: DAVIS colours, filled labels, prediction/ground-truth contours, frame grids."""

from __future__ import annotations

import numpy as np
import pytest

from XRayVOSLib.errors import InputError
from XRayVOSLib.viz import contour_overlay, davis_palette, frame_strip, overlay


def test_davis_palette_matches_the_standard():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:6].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    assert pal[8].tolist() == [64, 0, 0]
    assert len({tuple(c) for c in pal}) == 256


def test_overlay_colours_labelled_pixels_only():
    frame = np.full((20, 30), 100, np.uint8)
    labels = np.zeros((20, 30), np.uint8)
    labels[2:6, 3:9] = 1
    labels[10:15, 20:25] = 2
    rgb = overlay(frame, labels, alpha=0.5)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert (rgb[labels == 0] == 100).all()
    assert rgb[3, 4].tolist() == [114, 50, 50]  # halfway from grey 100 to (128, 0, 0)
    assert rgb[12, 22].tolist() == [50, 114, 50]
    with pytest.raises(InputError):
        overlay(frame, labels[:10])


def test_contour_overlay_draws_prediction_and_truth_outlines():
    frame = np.full((40, 40), 90, np.uint8)
    pred = np.zeros((40, 40), np.uint8)
    pred[10:20, 10:20] = 1
    gt = np.zeros((40, 40), np.uint8)
    gt[25:35, 25:35] = 1
    rgb = contour_overlay(frame, pred, gt)
    assert rgb.shape == (40, 40, 3)
    assert rgb[10, 15].tolist() == [255, 0, 0]  # label 1's colour, brightened, on the outline
    assert rgb[15, 15].tolist() == [90, 90, 90]  # interior untouched
    gt_outline = rgb[25, 25:35]
    assert (gt_outline == 255).all(axis=1).sum() >= 3  # white dots along the truth outline
    assert rgb[30, 30].tolist() == [90, 90, 90]
    only_pred = contour_overlay(frame, pred)
    assert (only_pred[25, 25:35] == 90).all()


def test_frame_strip_grid_layout():
    frames = [np.full((10, 12, 3), 40 * (i + 1), np.uint8) for i in range(5)]
    strip = frame_strip(frames, columns=3, gap=2)
    assert strip.shape == (2 * 10 + 2, 3 * 12 + 2 * 2, 3)
    assert (strip[0:10, 0:12] == 40).all()
    assert (strip[0:10, 28:40] == 120).all()  # third tile of the first row
    assert (strip[12:22, 14:26] == 200).all()  # second tile of the second row
    assert (strip[12:22, 28:40] == 0).all()  # empty cell
    grey = frame_strip([np.zeros((5, 5), np.uint8), np.full((5, 5), 9, np.uint8)], columns=2)
    assert grey.shape == (5, 12, 3) and (grey[:, 7:] == 9).all()
    with pytest.raises(InputError):
        frame_strip([np.zeros((5, 5), np.uint8), np.zeros((6, 5), np.uint8)])
    with pytest.raises(InputError):
        frame_strip([])
