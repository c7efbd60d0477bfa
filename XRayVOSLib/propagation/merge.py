"""One merge of the passes that reach a frame, for every method (network and baselines alike).

Each pass hands over class probabilities [K+1, H, W] (background first; a baseline's one-hot labels are
probabilities too). A frame's merged probabilities are the passes' sum weighted by plan.support_weight;
the decision (decision.py) then takes the arg-max, an exact tie going to the lower channel. While it waits
for the second pass, the first pass's weighted share is kept at 8-bit precision (rounded to the nearest
1/255: a quarter of the memory of float32 on long cines), so the one exact tie a one-hot vote can make, at
the midpoint between two supports, goes to the pass that ran first: the one from the earlier support.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from XRayVOSLib.propagation.plan import Pass, support_weight, visits


def labels_to_onehot(labels: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """[H, W] label map -> [K+1, H, W] float32 one-hot (channel 0 = background, channel i = object_ids[i-1])."""
    onehot = np.zeros((len(object_ids) + 1,) + labels.shape, dtype=np.float32)
    onehot[0] = ~np.isin(labels, object_ids)
    for i, oid in enumerate(object_ids, start=1):
        onehot[i] = labels == oid
    return onehot


class FrameMerger:
    """Collects the passes' results; releases a frame's merged probabilities when its last pass arrives."""

    def __init__(self, num_frames: int, passes: Sequence[Pass], support_frames: Sequence[int]) -> None:
        self.expected = visits(num_frames, passes)
        self.arrived = np.zeros(num_frames, dtype=np.int32)
        self.support_frames = sorted(int(s) for s in support_frames)
        self.pending: dict[int, np.ndarray] = {}  # frame -> the first pass's weighted share, uint8

    def add(self, t: int, source: int, probs: np.ndarray) -> np.ndarray | None:
        """probs: [K+1, H, W] float32 of the pass from `source` at frame t -> the merged [K+1, H, W] float32
        once every pass that covers t has arrived, else None."""
        share = probs.astype(np.float32, copy=False) * np.float32(support_weight(t, source, self.support_frames))
        self.arrived[t] += 1
        if self.arrived[t] < self.expected[t]:
            self.pending[t] = np.round(share * 255).astype(np.uint8)
            return None
        if t in self.pending:
            share = share + self.pending.pop(t).astype(np.float32) / 255
        return share


__all__ = ["FrameMerger", "labels_to_onehot"]
