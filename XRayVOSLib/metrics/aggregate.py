"""Scores per object and frame, and their averages per object, per video, over a data set, and by category.

Averaging follows davis2017-evaluation: an object's figure is the mean over its scored frames; a video's
figure is the mean over its objects; the data set figure is the mean over all objects of all videos (not
over videos). Support frames are never scored (they are given, not predicted).

Differences from davis2017-evaluation, on purpose: it also drops each video's last frame and uses the
objects of frame 0; here every annotated non-support frame is scored, and the objects are those in the
ground truth of the support frames (all annotated frames when no support frame is annotated).

Categories ("seen"/"unseen" splits): a JSON file `{"<video>": {"<object id>": "<category>"}}`, e.g.
`{"cine03": {"1": "seen", "2": "unseen"}}`. Any category name works; objects not listed belong to no
category and count only in the overall figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.metrics.davis import BOUND_TH, f_measure, j_measure
from XRayVOSLib.metrics.distance import Spacing, dice_scores, hd95_scores

VOID_LABEL = 255  # DAVIS marks "don't care" pixels with palette index 255
SUMMARY_METRICS = ("J", "F", "J&F", "dice", "hd95")


@dataclass
class ObjectScores:
    """Per-frame scores of one object of one video (arrays aligned with `frames`)."""

    video: str
    object_id: int
    frames: np.ndarray
    J: np.ndarray
    F: np.ndarray
    dice: np.ndarray
    hd95: np.ndarray
    hd95_mm: np.ndarray | None = None
    category: str | None = None

    @property
    def JF(self) -> np.ndarray:
        return (self.J + self.F) / 2.0

    def summary(self) -> dict[str, Any]:
        """Means over this object's scored frames (HD95 over its finite frames only)."""
        out: dict[str, Any] = {
            "video": self.video,
            "object": self.object_id,
            "category": self.category,
            "frames": len(self.frames),
            "J": mean_finite(self.J),
            "F": mean_finite(self.F),
            "J&F": mean_finite(self.JF),
            "dice": mean_finite(self.dice),
            "hd95": mean_finite(self.hd95),
            "hd95_inf_frames": int(np.isinf(self.hd95).sum()),
        }
        if self.hd95_mm is not None:
            out["hd95_mm"] = mean_finite(self.hd95_mm)
        return out


def mean_finite(values: Any) -> float:
    """Mean over the finite entries; NaN when there are none (so it drops out of the next average)."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def video_object_ids(gt: Mapping[int, np.ndarray], support_frames: list[int] | tuple[int, ...]) -> list[int]:
    """Objects to score: ids in the ground truth of the support frames, else in any annotated frame."""
    source = [gt[t] for t in support_frames if t in gt] or list(gt.values())
    ids: set[int] = set()
    for labels in source:
        ids |= {int(v) for v in np.unique(labels)}
    return sorted(ids - {0, VOID_LABEL})


def score_video(
    video: str,
    pred: np.ndarray | Mapping[int, np.ndarray],
    gt: Mapping[int, np.ndarray],
    support_frames: list[int] | tuple[int, ...] = (),
    spacing: Spacing = None,
    object_ids: list[int] | None = None,
    bound_th: float = BOUND_TH,
) -> list[ObjectScores]:
    """Score every object on every annotated, non-support frame of one video.

    pred: label maps [T, H, W] or {frame: [H, W]}; gt: {frame: [H, W]} for the annotated frames only.
    Raises InputError naming the video and frames when a prediction is missing or has the wrong size.
    """
    supports = {int(t) for t in support_frames}
    frames = sorted(int(t) for t in gt if int(t) not in supports)
    available = set(range(len(pred))) if isinstance(pred, np.ndarray) else {int(t) for t in pred}
    missing = [t for t in frames if t not in available]
    if missing:
        raise InputError(f"video {video}: no prediction for annotated frame(s) {_frame_list(missing)}")
    if object_ids is None:
        object_ids = video_object_ids(gt, sorted(supports))
    if not frames:
        gt_stack = pred_stack = np.zeros((0, 1, 1), dtype=np.uint8)
    else:
        gt_stack = np.stack([np.asarray(gt[t]) for t in frames])
        pred_list = [np.asarray(pred[t]) for t in frames]
        bad = [t for t, p in zip(frames, pred_list) if p.shape != gt_stack.shape[1:]]
        if bad:
            raise InputError(
                f"video {video}: prediction shape differs from ground truth {gt_stack.shape[1:]} "
                f"at frame(s) {_frame_list(bad)}"
            )
        pred_stack = np.stack(pred_list)
    void = gt_stack == VOID_LABEL
    frame_arr = np.asarray(frames, dtype=int)
    results = []
    for oid in object_ids:
        p = (pred_stack == oid) & ~void
        g = gt_stack == oid
        j = np.array([j_measure(p[i], g[i], void[i]) for i in range(len(frames))], dtype=float)
        f = np.array([f_measure(p[i], g[i], void[i], bound_th) for i in range(len(frames))], dtype=float)
        empty = np.zeros(0, dtype=float)
        d = dice_scores(p, g) if frames else empty
        h = hd95_scores(p, g) if frames else empty
        h_mm = (hd95_scores(p, g, spacing) if frames else empty) if spacing is not None else None
        results.append(ObjectScores(video, int(oid), frame_arr, j, f, d, h, h_mm))
    return results


def _frame_list(frames: list[int], limit: int = 20) -> str:
    text = ", ".join(str(t) for t in frames[:limit])
    return text + (f", ... ({len(frames)} in all)" if len(frames) > limit else "")


def _means(rows: list[dict[str, Any]], with_mm: bool) -> dict[str, Any]:
    keys = SUMMARY_METRICS + (("hd95_mm",) if with_mm else ())
    out: dict[str, Any] = {k: mean_finite([r.get(k, math.nan) for r in rows]) for k in keys}
    out["objects"] = len(rows)
    return out


def summarize(
    objects: list[ObjectScores], categories: Mapping[str, Mapping[int, str]] | None = None
) -> dict[str, Any]:
    """Per-object rows, per-video means, the data set mean and (with categories) per-category means."""
    if categories:
        for obj in objects:
            obj.category = categories.get(obj.video, {}).get(obj.object_id)
    rows = [o.summary() for o in objects]
    with_mm = any(o.hd95_mm is not None for o in objects)
    videos: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        videos.setdefault(row["video"], []).append(row)
    out: dict[str, Any] = {
        "dataset": _means(rows, with_mm),
        "videos": {v: _means(r, with_mm) for v, r in videos.items()},
        "objects": rows,
    }
    if categories:
        names = sorted({r["category"] for r in rows if r["category"] is not None})
        out["categories"] = {c: _means([r for r in rows if r["category"] == c], with_mm) for c in names}
    return out


def per_frame(objects: list[ObjectScores], metric: str = "J") -> dict[str, dict[str, dict[str, float]]]:
    """{video: {object id: {frame: value}}} with string keys, ready for JSON."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for obj in objects:
        values = obj.JF if metric == "J&F" else getattr(obj, metric)
        out.setdefault(obj.video, {})[str(obj.object_id)] = {
            str(int(t)): float(v) for t, v in zip(obj.frames, values)
        }
    return out


def load_categories(path: str | Path) -> dict[str, dict[int, str]]:
    """Read `{"<video>": {"<object id>": "<category>"}}`; InputError naming the file on a bad layout."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read categories JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected {{video: {{object_id: category}}}}, got {type(raw).__name__}")
    out: dict[str, dict[int, str]] = {}
    for video, mapping in raw.items():
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: video {video!r} should map object ids to categories")
        try:
            out[str(video)] = {int(k): str(v) for k, v in mapping.items()}
        except ValueError as exc:
            raise InputError(f"{path}: video {video!r} has a non-integer object id ({exc})") from exc
    return out


def jsonable(value: Any) -> Any:
    """Copy of nested dicts/lists with NaN and inf as None (strict JSON) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
