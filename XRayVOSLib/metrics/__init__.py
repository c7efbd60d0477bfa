"""Segmentation scores: DAVIS J / F / J&F (numpy + OpenCV), Dice and HD95 (MONAI, imported on use)."""

from XRayVOSLib.metrics.aggregate import (
    ObjectScores,
    load_categories,
    mean_finite,
    per_frame,
    score_video,
    summarize,
)
from XRayVOSLib.metrics.davis import BOUND_TH, bound_pixels, f_measure, j_measure, jf_measure, seg2bmap
from XRayVOSLib.metrics.distance import dice, dice_scores, hd95, hd95_scores

__all__ = [
    "BOUND_TH",
    "ObjectScores",
    "bound_pixels",
    "dice",
    "dice_scores",
    "f_measure",
    "hd95",
    "hd95_scores",
    "j_measure",
    "jf_measure",
    "load_categories",
    "mean_finite",
    "per_frame",
    "score_video",
    "seg2bmap",
    "summarize",
]
