"""How predictions from several support frames are combined (shared by the network and the baselines).

Rule (documented in README): with supports s_1 < ... < s_n,
- frames before s_1 are propagated backward from s_1 only, frames after s_n forward from s_n only;
- a frame t strictly between two consecutive supports a < t < b gets a forward pass from a and a backward
  pass from b, blended with linear weights w_a = (b - t) / (b - a), w_b = (t - a) / (b - a): the nearer
  support counts more, and at the midpoint they count equally;
- the weighted class probabilities are summed and the arg-max class wins (an exact tie goes to the lower
  channel: background, then objects in id order); the network's background channel may first be scaled
  down so that an object needs less than half the probability to win (`object_threshold`, see below);
- support frames themselves are returned exactly as given, never predicted.
Propagating from a farther support through a nearer one would only repeat information the nearer,
exact mask already carries, so each frame uses at most the two supports that bracket it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Pass:
    """One propagation pass: start at support `source`, visit `targets` in order (excluding the source)."""

    source: int
    targets: tuple[int, ...]

    @property
    def direction(self) -> int:
        return 1 if not self.targets or self.targets[0] > self.source else -1


def plan_passes(num_frames: int, support_frames: list[int] | tuple[int, ...]) -> list[Pass]:
    """The passes that cover every non-support frame, in the order they should run."""
    supports = sorted(set(int(s) for s in support_frames))
    if not supports:
        raise ValueError("at least one support frame is needed")
    passes: list[Pass] = []
    first, last = supports[0], supports[-1]
    if first > 0:
        passes.append(Pass(first, tuple(range(first - 1, -1, -1))))
    for a, b in zip(supports[:-1], supports[1:]):
        if b - a > 1:
            passes.append(Pass(a, tuple(range(a + 1, b))))
            passes.append(Pass(b, tuple(range(b - 1, a, -1))))
    if last < num_frames - 1:
        passes.append(Pass(last, tuple(range(last + 1, num_frames))))
    return passes


def support_weight(t: int, source: int, support_frames: list[int] | tuple[int, ...]) -> float:
    """Weight of the pass from `source` at frame t (1.0 outside the supports' span)."""
    supports = sorted(set(int(s) for s in support_frames))
    if t < supports[0] or t > supports[-1]:
        return 1.0
    right = min(s for s in supports if s > t)
    left = max(s for s in supports if s < t)
    if source == left:
        return (right - t) / (right - left)
    if source == right:
        return (t - left) / (right - left)
    return 0.0


def blend_probabilities(
    accumulated: np.ndarray | None, probs: np.ndarray, weight: float
) -> np.ndarray:
    """Add weight * probs ([K+1, H, W], background first) to the running weighted sum for one frame."""
    contribution = probs.astype(np.float32) * np.float32(weight)
    return contribution if accumulated is None else accumulated + contribution


def labels_to_onehot(labels: np.ndarray, object_ids: list[int]) -> np.ndarray:
    """[H, W] label map -> [K+1, H, W] float32 one-hot (channel 0 = background, channel i = object_ids[i-1])."""
    onehot = np.zeros((len(object_ids) + 1,) + labels.shape, dtype=np.float32)
    onehot[0] = ~np.isin(labels, object_ids)
    for i, oid in enumerate(object_ids, start=1):
        onehot[i] = labels == oid
    return onehot


def background_scale(object_threshold: float) -> float:
    """Factor on the background probability so that, for one object, p(object) > object_threshold wins.

    p_obj > s * (1 - p_obj)  <=>  p_obj > s / (1 + s), so s = t / (1 - t); t = 0.5 is the plain arg-max.
    A threshold below 0.5 suits the J (IoU) measure on thin objects: the expected-F1-optimal threshold of a
    calibrated classifier is half the F1 it reaches (Lipton, Elkan and Naryanaswamy, 2014).
    """
    if not 0.0 < object_threshold < 1.0:
        raise ValueError(f"object_threshold must lie strictly between 0 and 1, got {object_threshold}")
    return object_threshold / (1.0 - object_threshold)


def probabilities_to_labels(probs: np.ndarray, object_ids: list[int], dtype=np.uint8,
                            object_threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """[K+1, H, W] -> [H, W] label map with the original (possibly non-contiguous) object ids.

    Like np.argmax, an exact tie goes to the lower channel (see module docstring). A running maximum over
    channels replaces np.argmax(axis=0), which walks the strided axis: 2 ms instead of 9 ms for [2, 512, 512].
    One threshold: objects compete with each other unscaled; only the background is weighed by
    `background_scale`. One threshold per object (the area prior): each object's probability is divided by
    its own scale, and the scaled scores compete (the same decision as one threshold when all are equal).
    """
    labels = np.zeros(probs.shape[1:], dtype=dtype)
    if not np.isscalar(object_threshold):
        thresholds = [float(t) for t in object_threshold]
        if len(thresholds) != len(object_ids):
            raise ValueError(f"{len(thresholds)} thresholds for {len(object_ids)} objects")
        best = probs[0]
        for channel, (object_id, threshold) in enumerate(zip(object_ids, thresholds), start=1):
            score = probs[channel] if threshold == 0.5 else probs[channel] / background_scale(threshold)
            labels[score > best] = object_id
            best = np.maximum(best, score)
        return labels
    best = probs[0] if object_threshold == 0.5 else probs[0] * background_scale(object_threshold)
    for channel, object_id in enumerate(object_ids, start=1):
        wins = probs[channel] > best
        labels[wins] = object_id
        best = np.maximum(best, probs[channel])
    return labels
