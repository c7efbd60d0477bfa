"""Metrics: DAVIS J/F against hand-made cases and an independent brute-force reference; Dice/HD95; averaging."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from XRayVOSLib.errors import InputError
from XRayVOSLib.metrics import (
    bound_pixels,
    dice,
    dice_scores,
    f_measure,
    hd95,
    hd95_scores,
    j_measure,
    load_categories,
    score_video,
    seg2bmap,
    summarize,
)


def disk_mask(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def random_blob(seed: int, shape: tuple[int, int] = (90, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), 6)
    return noise > np.quantile(noise, 0.6)


# --- independent reference for the DAVIS boundary measure (plain loops, no OpenCV) --------------------


def reference_bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS _seg2bmap read literally: differs from E, S or SE neighbour; last row/col only along itself."""
    h, w = seg.shape
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            if i == h - 1 and j == w - 1:
                continue
            if i == h - 1:
                out[i, j] = seg[i, j] != seg[i, j + 1]
            elif j == w - 1:
                out[i, j] = seg[i, j] != seg[i + 1, j]
            else:
                out[i, j] = seg[i, j] != seg[i, j + 1] or seg[i, j] != seg[i + 1, j] or seg[i, j] != seg[i + 1, j + 1]
    return out


def reference_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """Share of boundary pixels with a boundary pixel of the other mask within Euclidean `radius`."""
    pb, gb = np.argwhere(reference_bmap(pred)), np.argwhere(reference_bmap(gt))
    if len(pb) == 0 or len(gb) == 0:
        raise AssertionError("reference is only for non-empty boundaries")
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = float((d2.min(axis=1) <= radius * radius).mean())
    recall = float((d2.min(axis=0) <= radius * radius).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_bound_pixels_matches_davis() -> None:
    assert bound_pixels((480, 854)) == 8  # DAVIS 480p: ceil(0.008 * 979.7)
    assert bound_pixels((512, 512)) == 6
    assert bound_pixels((100, 100), bound_th=3) == 3  # >= 1 means pixels


def test_seg2bmap_matches_literal_definition() -> None:
    for seed in range(3):
        blob = random_blob(seed, (30, 41))
        blob[-1, 5:20] = True  # touch the last row and column too
        blob[3:12, -1] = True
        np.testing.assert_array_equal(seg2bmap(blob), reference_bmap(blob))


@pytest.mark.parametrize("bound_th", [0.008, 2, 4, 7])
def test_f_matches_bruteforce_reference_on_random_blobs(bound_th: float) -> None:
    # radii 4 and 7 are where OpenCV's MORPH_ELLIPSE differs from DAVIS's disk; this catches that.
    for seed in range(4):
        a, b = random_blob(2 * seed), random_blob(2 * seed + 1)
        radius = bound_pixels(a.shape, bound_th)
        assert f_measure(a, b, bound_th=bound_th) == pytest.approx(reference_f(a, b, radius), abs=1e-12)


def test_identical_disjoint_and_shifted_masks() -> None:
    shape = (200, 240)
    big = disk_mask(shape, (100, 120), 60)
    assert j_measure(big, big) == 1.0 and f_measure(big, big) == 1.0
    left, right = np.zeros(shape, bool), np.zeros(shape, bool)
    left[20:60, 20:60], right[120:180, 150:220] = True, True
    assert j_measure(left, right) == 0.0 and f_measure(left, right) == 0.0
    shifted = np.roll(big, 1, axis=1)
    assert 0.9 < j_measure(big, shifted) < 1.0
    assert f_measure(big, shifted) == pytest.approx(1.0, abs=1e-9)
    far = np.roll(big, 20, axis=1)  # well past the 3-pixel tolerance of a 200x240 image
    assert f_measure(big, far) < 0.5


def test_empty_mask_conventions() -> None:
    empty = np.zeros((50, 60), bool)
    full = disk_mask((50, 60), (25, 30), 10)
    assert j_measure(empty, empty) == 1.0 and f_measure(empty, empty) == 1.0
    assert j_measure(empty, full) == 0.0 and f_measure(empty, full) == 0.0
    assert j_measure(full, empty) == 0.0 and f_measure(full, empty) == 0.0


def test_void_pixels_count_for_neither_mask() -> None:
    gt = np.zeros((40, 40), bool)
    gt[10:20, 10:20] = True
    pred = gt.copy()
    pred[25:35, 25:35] = True  # a false positive, but inside void
    void = np.zeros_like(gt)
    void[24:36, 24:36] = True
    assert j_measure(pred, gt) == pytest.approx(0.5)
    assert j_measure(pred, gt, void) == 1.0 and f_measure(pred, gt, void) == 1.0


def test_dice_cases() -> None:
    a, b = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    a[0:10, 0:10], b[5:15, 0:10] = True, True  # 50 px overlap of 100 + 100
    assert dice(a, a) == pytest.approx(1.0)
    assert dice(a, b) == pytest.approx(0.5)
    empty = np.zeros_like(a)
    np.testing.assert_allclose(dice_scores(np.stack([empty, a]), np.stack([empty, empty])), [1.0, 0.0])


def test_hd95_pixels_and_mm() -> None:
    shape = (128, 128)
    a, b = disk_mask(shape, (64, 60), 30), disk_mask(shape, (64, 63), 30)
    assert hd95(a, b) == pytest.approx(3.0, abs=0.25)
    assert hd95(a, b, spacing=0.5) == pytest.approx(0.5 * hd95(a, b))
    square = np.zeros(shape, bool)
    square[20:60, 20:60] = True
    down = np.roll(square, 3, axis=0)  # shifted 3 rows: spacing's first entry is the row spacing
    assert hd95(square, down) == pytest.approx(3.0)
    assert hd95(square, down, spacing=(2.0, 0.5)) == pytest.approx(6.0)
    assert hd95(square, down, spacing=(0.5, 2.0)) == pytest.approx(1.5)


def test_hd95_empty_masks() -> None:
    empty, full = np.zeros((32, 32), bool), disk_mask((32, 32), (16, 16), 8)
    values = hd95_scores(np.stack([empty, full, empty]), np.stack([empty, empty, full]))
    assert math.isnan(values[0]) and np.isinf(values[1]) and np.isinf(values[2])


# --- aggregation ---------------------------------------------------------------------------------------


def labels_video(num_frames: int, boxes: dict[int, tuple[int, int]], shape=(48, 48)) -> np.ndarray:
    out = np.zeros((num_frames,) + shape, np.uint8)
    for oid, (r, c) in boxes.items():
        out[:, r : r + 12, c : c + 12] = oid
    return out


def test_dataset_mean_is_over_objects_and_supports_are_left_out() -> None:
    gt_a = labels_video(4, {1: (2, 2), 2: (30, 30)})
    pred_a = gt_a.copy()
    pred_a[1:][pred_a[1:] == 2] = 0  # object 2 lost after the support frame: J = 0 there
    gt_b = labels_video(4, {1: (10, 10)})
    objects = score_video("a", pred_a, dict(enumerate(gt_a)), [0]) + score_video("b", gt_b, dict(enumerate(gt_b)), [0])
    assert [o.frames.tolist() for o in objects] == [[1, 2, 3]] * 3
    summary = summarize(objects)
    assert summary["videos"]["a"]["J"] == pytest.approx(0.5)
    assert summary["videos"]["b"]["J"] == pytest.approx(1.0)
    assert summary["dataset"]["J"] == pytest.approx(2 / 3)  # 3 objects, not the 0.75 of 2 videos
    lost = next(r for r in summary["objects"] if r["object"] == 2)
    assert lost["hd95_inf_frames"] == 3 and math.isnan(lost["hd95"])
    assert summary["dataset"]["hd95"] == pytest.approx(0.0)  # the lost object's inf frames are left out


def test_only_annotated_frames_are_scored_and_missing_predictions_named() -> None:
    gt = labels_video(6, {1: (5, 5)})
    sparse_gt = {0: gt[0], 3: gt[3], 5: gt[5]}
    objects = score_video("v", gt, sparse_gt, [0])
    assert objects[0].frames.tolist() == [3, 5]
    with pytest.raises(InputError, match=r"video v: .*frame\(s\) 3, 5"):
        score_video("v", {0: gt[0], 1: gt[1]}, sparse_gt, [0])


def test_categories_split(tmp_path) -> None:
    gt = labels_video(3, {1: (2, 2), 2: (30, 30)})
    pred = gt.copy()
    pred[1:][pred[1:] == 2] = 0
    path = tmp_path / "cats.json"
    path.write_text('{"v": {"1": "seen", "2": "unseen"}}')
    summary = summarize(score_video("v", pred, dict(enumerate(gt)), [0]), load_categories(path))
    assert summary["categories"]["seen"]["J"] == pytest.approx(1.0)
    assert summary["categories"]["unseen"]["J"] == pytest.approx(0.0)
    path.write_text('{"v": ["seen"]}')
    with pytest.raises(InputError, match="cats.json"):
        load_categories(path)


def test_hd95_equals_plain_monai_call_on_blobs_touching_the_border() -> None:
    # hd95_scores crops to the masks' box before calling MONAI; that must not change any value.
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred = np.stack([random_blob(s, (60, 80)) for s in range(6)])
    gt = np.stack([random_blob(s + 50, (60, 80)) for s in range(6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation notice
        ref = compute_hausdorff_distance(
            torch.from_numpy(pred[:, None].astype(np.float32)), torch.from_numpy(gt[:, None].astype(np.float32)),
            include_background=True, percentile=95, spacing=[0.7, 0.3],
        )[:, 0].numpy()
    np.testing.assert_allclose(hd95_scores(pred, gt, (0.7, 0.3)), ref, rtol=1e-6)
