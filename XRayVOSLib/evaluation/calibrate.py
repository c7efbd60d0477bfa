"""Pick a model's decision rule on validation cines and record it in the model file.

The network's arg-max draws thin objects slightly too thin: at their edges the object's probability is
often just below the background's. A lower object threshold (propagation/decision.py) trades a few
false-positive edge pixels for more recovered ones, which raises J. The best value depends on the model,
so it is measured, not assumed: each video is propagated once, its probabilities on the annotated frames
are kept, and every candidate threshold is scored on them (N thresholds cost one run, not N).

The same probabilities are also scored with the area prior (per-object thresholds that keep each
object's support area); the model's carried settings record the winner as `decision` ("area-prior" or
"threshold") and the best fixed `threshold` (used only by the "threshold" rule, or when a user picks it).

Use cines that are not your test set: a threshold chosen on the test set flatters the test score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.evaluation.runner import (
    LogFn,
    _resolve_supports,
    choose_support_frames,
    list_videos,
    read_annotations,
    read_frames,
)
from XRayVOSLib.metrics.aggregate import VOID_LABEL, ObjectScores, score_video, summarize
from XRayVOSLib.propagation.decision import Decision, probabilities_to_labels
from XRayVOSLib.propagation.validate import check_supports
from XRayVOSLib.settings import RunSettings

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    values = sorted({float(t) for t in thresholds})
    bad = [t for t in values if not 0.0 < t < 1.0 or math.isnan(t)]
    if not values or bad:
        raise InputError(f"thresholds must lie strictly between 0 and 1, got {list(thresholds)}")
    return values


def calibrate_threshold(
    data_root: str | Path,
    model: str | Path | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    supports: str | Path | Mapping[str, list[int]] = "first",
    *,
    settings: RunSettings | None = None,
    videos: int | None = None,
    log: LogFn | None = None,
) -> dict[str, Any]:
    """Score every threshold and the area prior on a DAVIS-layout folder; returns {"best", "scores": {t:
    J/F/J&F}, "area_prior_scores": J/F/J&F, "decision", ...}. The probabilities are the run's (settings, default
    RunSettings.from_model(model): the model's fusion included); only the decision is varied.

    The best threshold has the highest mean J&F over objects (support frames excluded, as in
    `evaluate`); a tie goes to the threshold nearest 0.5, the plain arg-max.
    """
    from XRayVOSLib.inference.propagator import Propagator

    grid = check_thresholds(thresholds)
    data_root = Path(data_root)
    gt_root, frames_root = data_root / "Annotations", data_root / "JPEGImages"
    names = list_videos(gt_root)[: videos or None]
    rule = _resolve_supports(supports)
    log = log or (lambda message: None)
    settings = settings or RunSettings.from_model(model)
    propagator = Propagator.load(model, settings)
    scores: dict[float, list[ObjectScores]] = {t: [] for t in grid}
    area_scores: list[ObjectScores] = []
    for video in names:
        frames, gt = read_frames(frames_root / video), read_annotations(gt_root / video)
        chosen = choose_support_frames(video, list(gt), len(frames), rule)
        missing = [t for t in chosen if t not in gt]
        if missing:
            raise InputError(f"video {video}: support frame(s) {missing} have no annotation to start from")
        given = {t: np.where(gt[t] == VOID_LABEL, 0, gt[t]) for t in chosen}
        kept: dict[int, np.ndarray] = {}  # only annotated frames are scored, so only they are kept (fp16)
        _, object_ids = check_supports(given, len(frames), frames.shape[1:])
        for t, probs in propagator.iter_probabilities(frames, given):
            if t in gt:
                kept[t] = probs.astype(np.float16)
        unpacked = {t: p.astype(np.float32) for t, p in kept.items()}
        for threshold in grid:
            pred = {t: probabilities_to_labels(p, object_ids, threshold=threshold) for t, p in unpacked.items()}
            pred.update(given)
            scores[threshold].extend(score_video(video, pred, gt, chosen))
        by_area = Decision("area-prior", 0.5, given, object_ids)
        pred = {t: by_area(t, p) for t, p in unpacked.items()}
        pred.update(given)
        area_scores.extend(score_video(video, pred, gt, chosen))
        log(f"calibrate {video}: {len(kept)} frames scored at {len(grid)} thresholds")
    table = {}
    for threshold in grid:
        dataset = summarize(scores[threshold])["dataset"]
        table[threshold] = {k: float(dataset[k]) for k in ("J", "F", "J&F")}
    if not any(math.isfinite(row["J&F"]) for row in table.values()):
        raise InputError(f"{data_root}: no annotated non-support frame to score; calibration needs ground truth "
                         "beyond the support frames")
    best = max(grid, key=lambda t: (table[t]["J&F"] if math.isfinite(table[t]["J&F"]) else -1.0, -abs(t - 0.5)))
    area = {k: float(v) for k, v in summarize(area_scores)["dataset"].items() if k in ("J", "F", "J&F")}
    return {"best": best, "scores": table, "area_prior_scores": area,
            "decision": "area-prior" if area["J&F"] > table[best]["J&F"] else "threshold",
            "data": str(data_root), "videos": len(names), "objects": len(scores[grid[0]]),
            "supports": str(supports) if isinstance(supports, (str, Path)) else "mapping",
            "settings": settings.to_dict()}


def calibrated_info(info: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """The model's info with the chosen decision and threshold in its carried settings, and the evidence
    for them (kept in the file's metadata)."""
    out = {k: v for k, v in info.items() if k not in ("source",)}
    carried = RunSettings.from_dict(result["settings"]).carried()
    out["settings"] = {**carried, "decision": result["decision"], "threshold": float(result["best"])}
    out["calibration"] = {
        "data": result["data"], "videos": result["videos"], "objects": result["objects"],
        "supports": result["supports"], "method": result["settings"]["method"],
        "J&F": {f"{t:g}": round(row["J&F"], 4) for t, row in result["scores"].items()},
        "area_prior_J&F": round(result["area_prior_scores"]["J&F"], 4),
    }
    return out


def format_scores(result: Mapping[str, Any]) -> str:
    lines = ["threshold      J      F    J&F"]
    for t, row in result["scores"].items():
        mark = "  <- best" if t == result["best"] and result["decision"] == "threshold" else ""
        lines.append(f"{t:9.2f}  {row['J']:.3f}  {row['F']:.3f}  {row['J&F']:.3f}{mark}")
    row = result["area_prior_scores"]
    mark = "  <- best" if result["decision"] == "area-prior" else ""
    lines.append(f"{'area':>9}  {row['J']:.3f}  {row['F']:.3f}  {row['J&F']:.3f}{mark}")
    return "\n".join(lines)
