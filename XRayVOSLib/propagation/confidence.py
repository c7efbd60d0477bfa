"""Per-frame, per-object confidence: signals the pass loop already has, combined into an estimated J.

Signals (all [K] per frame, K objects in id order; NaN where a signal does not exist on that frame):

    distance            frames to the nearest support
    passes              passes that reached the frame (2 between two supports, else 1)
    pass_agreement      IoU of the object in the forward and the backward pass (their own arg-max, before the
                        merge); NaN with one pass
    fusion_agreement    IoU of the object in the network's own probabilities and in the fused ones (output
                        fusion on), averaged over the passes with the merge's weights; NaN without fusion
    object_probability  mean merged probability over the object's decided pixels (NaN if it has none)
    uncertain_fraction  pixels with merged probability in [0.2, 0.8], per pixel of the expected area
    decision_threshold  the threshold the decision gave the object (the area prior's: low when the network
                        sees little of it)
    expected_area       the object's area (pixels) expected on the frame: the supports' areas, blended
    area_ratio          (decided area + 1) / (expected area + 1)
    support_iou         IoU of the decided object with the nearest support's (how far it moved or changed)
    component_ratio     (connected pieces + 1) / (the nearest support's pieces + 1): a vessel that breaks up

An `Estimator` (coefficients fitted on validation cines by tools/fit_confidence.py, stored in
confidence_fit.py) maps them to an estimated J in [0, 1]: a logistic model on standardised features.
Support frames get 1.0 (they are what the user painted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from XRayVOSLib.propagation.decision import probabilities_to_labels, support_areas, target_areas
from XRayVOSLib.propagation.plan import support_weight

SIGNALS = ("distance", "passes", "pass_agreement", "fusion_agreement", "object_probability", "uncertain_fraction",
           "decision_threshold", "expected_area", "area_ratio", "support_iou", "component_ratio")
UNCERTAIN = (0.2, 0.8)  # the band of merged probability counted as undecided


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (the DAVIS convention for J)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def components(mask: np.ndarray) -> int:
    """Connected pieces (8-connected) of a boolean mask."""
    if not mask.any():
        return 0
    count, _ = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    return int(count) - 1


@dataclass(frozen=True)
class PassView:
    """What one pass says about one frame, for the signals: its arg-max (object index 0..K, 0 = background)
    and the network-vs-fused agreement [K] (NaN without fusion)."""

    source: int
    index_map: np.ndarray
    fusion_agreement: np.ndarray


@dataclass
class FrameResult:
    """One finished frame: labels [H, W] (object ids), estimated J [K], and the raw signals ({name: [K]})."""

    t: int
    labels: np.ndarray
    confidence: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    support: bool = False  # a painted frame, returned as given


class Estimator:
    """estimated J = sigmoid(bias + sum_f weight_f * (feature_f - mean_f) / scale_f), clipped to [0, 1]."""

    def __init__(self, fit: Mapping[str, Any]) -> None:
        self.name = str(fit["name"])
        self.features = tuple(fit["features"])
        self.mean = np.asarray(fit["mean"], dtype=np.float64)
        self.scale = np.asarray(fit["scale"], dtype=np.float64)
        self.weights = np.asarray(fit["weights"], dtype=np.float64)
        self.bias = float(fit["bias"])

    def __call__(self, signals: Mapping[str, np.ndarray]) -> np.ndarray:
        """signals: {name: array of any shape} -> estimated J of that shape (float32)."""
        x = feature_matrix(signals, self.features)
        z = (x - self.mean) / self.scale
        return (1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias)))).astype(np.float32)


def feature_matrix(signals: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The model's features ([..., F] float64) from the raw signals; a missing signal takes its neutral value
    (agreement 1, probability 0), so one formula serves frames with one pass or two."""
    def get(name: str, fill: float) -> np.ndarray:
        value = np.asarray(signals[name], dtype=np.float64)
        return np.where(np.isfinite(value), value, fill)

    table = {
        "log_distance": lambda: np.log1p(get("distance", 0.0)),
        "two_passes": lambda: (get("passes", 1.0) >= 2).astype(np.float64),
        "pass_agreement": lambda: get("pass_agreement", 1.0),
        "fusion_agreement": lambda: get("fusion_agreement", 1.0),
        "object_probability": lambda: get("object_probability", 0.0),
        "uncertain_fraction": lambda: np.log1p(get("uncertain_fraction", 0.0)),
        "decision_threshold": lambda: get("decision_threshold", 0.5),
        "log_expected_area": lambda: np.log1p(get("expected_area", 0.0)),
        "log_area_ratio": lambda: np.log(get("area_ratio", 1.0)),
        "support_iou": lambda: get("support_iou", 1.0),
        "log_component_ratio": lambda: np.log(get("component_ratio", 1.0)),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown confidence feature(s) {unknown}; known: {sorted(table)}")
    return np.stack([table[n]() for n in names], axis=-1)


FEATURES = ("log_distance", "two_passes", "pass_agreement", "fusion_agreement", "object_probability",
            "uncertain_fraction", "decision_threshold", "log_expected_area", "log_area_ratio", "support_iou",
            "log_component_ratio")


def estimator_for(profile: str) -> Estimator | None:
    """The fitted estimator of a method profile (PassMethod.confidence_profile), or None if none was fitted."""
    from XRayVOSLib.propagation.confidence_fit import FITS

    fit = FITS.get(profile)
    return Estimator(fit) if fit is not None else None


class FrameSignals:
    """Computes the signals of each decided frame of one run (the supports' areas and pieces kept)."""

    def __init__(self, supports: Mapping[int, np.ndarray], object_ids: Sequence[int],
                 estimator: Estimator | None) -> None:
        self.supports = {int(t): np.asarray(m) for t, m in supports.items()}
        self.frames = sorted(self.supports)
        self.object_ids = list(object_ids)
        self.areas = support_areas(self.supports, self.object_ids)
        self.pieces = {t: [components(m == oid) for oid in self.object_ids] for t, m in self.supports.items()}
        self.estimator = estimator

    def support(self, t: int, labels: np.ndarray) -> FrameResult:
        k = len(self.object_ids)
        signals = {name: np.full(k, np.nan, np.float32) for name in SIGNALS}
        signals["distance"][:] = 0
        return FrameResult(t, labels, np.ones(k, np.float32), signals, support=True)

    def nearest(self, t: int) -> int:
        return min(self.frames, key=lambda s: (abs(s - t), s))

    def __call__(self, t: int, probs: np.ndarray, labels: np.ndarray, thresholds: float | Sequence[float],
                 passes: Sequence[PassView]) -> FrameResult:
        """probs: merged [K+1, H, W]; labels: the decided [H, W]; thresholds: the decision's (one or per object)."""
        k = len(self.object_ids)
        near = self.nearest(t)
        expected = target_areas(t, self.areas)
        weights = [support_weight(t, v.source, self.frames) for v in passes]
        rows: dict[str, list[float]] = {name: [] for name in SIGNALS}
        per_object = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (k,))
        for i, oid in enumerate(self.object_ids):
            mask, p = labels == oid, probs[i + 1]
            area = int(np.count_nonzero(mask))
            low, high = UNCERTAIN
            rows["distance"].append(abs(t - near))
            rows["passes"].append(len(passes))
            rows["pass_agreement"].append(
                iou(passes[0].index_map == i + 1, passes[1].index_map == i + 1) if len(passes) == 2 else np.nan)
            agreement = [float(v.fusion_agreement[i]) for v in passes]
            rows["fusion_agreement"].append(float(np.average(agreement, weights=weights))
                                            if all(np.isfinite(agreement)) else np.nan)
            rows["object_probability"].append(float(p[mask].mean()) if area else np.nan)
            uncertain = np.count_nonzero((p >= low) & (p <= high))
            rows["uncertain_fraction"].append(uncertain / max(float(expected[i]), float(area), 1.0))
            rows["decision_threshold"].append(float(per_object[i]))
            rows["expected_area"].append(float(expected[i]))
            rows["area_ratio"].append((area + 1.0) / (float(expected[i]) + 1.0))
            rows["support_iou"].append(iou(mask, self.supports[near] == oid))
            rows["component_ratio"].append((components(mask) + 1.0) / (self.pieces[near][i] + 1.0))
        signals = {name: np.asarray(values, dtype=np.float32) for name, values in rows.items()}
        if self.estimator is None:
            return FrameResult(t, labels, np.full(k, np.nan, np.float32), signals)
        return FrameResult(t, labels, self.estimator(signals), signals)


def index_map(probs: np.ndarray) -> np.ndarray:
    """[K+1, H, W] probabilities -> [H, W] uint8 arg-max (0 = background, i = the i-th object)."""
    return probabilities_to_labels(probs, list(range(1, probs.shape[0])))


def network_agreement(network: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """[K] IoU of each object's arg-max in the network's probabilities and in the fused ones ([K+1, H, W])."""
    a, b = index_map(network), index_map(fused)
    return np.array([iou(a == i, b == i) for i in range(1, network.shape[0])], dtype=np.float32)


@dataclass
class PropagationResult:
    """A whole run: labels [T, H, W] (object ids as in the supports), confidence [T, K] (estimated J; 1.0 on
    supports, NaN where no estimator was fitted for the method), the raw signals {name: [T, K]}, and what
    the incremental re-run reused (cache.py)."""

    labels: np.ndarray
    confidence: np.ndarray
    object_ids: list[int]
    support_frames: list[int]
    signals: dict[str, np.ndarray]
    estimator: str | None = None
    steps: dict[str, int] = field(default_factory=dict)  # {"computed": n, "reused": m} frame visits

    def frame_confidence(self) -> np.ndarray:
        """[T] a frame's estimated J: its worst object's (a frame with one broken object needs a look)."""
        return np.min(self.confidence, axis=1) if self.confidence.shape[1] else np.ones(len(self.labels))

    def review_order(self, done: Sequence[int] = ()) -> list[int]:
        """Frames to review, lowest estimated J first; supports and `done` (reviewed) frames left out."""
        return review_order(self.frame_confidence(), [*self.support_frames, *done])


def review_order(frame_confidence: np.ndarray, exclude: Sequence[int] = ()) -> list[int]:
    """Frame indices by rising confidence (ties: the earlier frame), without `exclude` and NaN frames."""
    skip = {int(t) for t in exclude}
    values = np.asarray(frame_confidence, dtype=np.float64)
    keep = [t for t in range(len(values)) if t not in skip and np.isfinite(values[t])]
    return sorted(keep, key=lambda t: (values[t], t))


def collect(results: Any, num_frames: int, object_ids: Sequence[int], dtype: Any) -> tuple:
    """(labels [T, H, W] of `dtype`, confidence [T, K], signals {name: [T, K]}) from an iterable of FrameResults."""
    labels: np.ndarray | None = None
    confidence = np.full((num_frames, len(object_ids)), np.nan, np.float32)
    signals = {name: np.full((num_frames, len(object_ids)), np.nan, np.float32) for name in SIGNALS}
    for r in results:
        if labels is None:
            labels = np.zeros((num_frames,) + r.labels.shape, dtype=dtype)
        labels[r.t], confidence[r.t] = r.labels, r.confidence
        for name, value in r.signals.items():
            signals[name][r.t] = value
    return labels, confidence, signals


__all__ = ["Estimator", "FEATURES", "FrameResult", "FrameSignals", "PassView", "PropagationResult", "SIGNALS",
           "collect", "components", "estimator_for", "feature_matrix", "index_map", "iou", "network_agreement",
           "review_order"]
