"""`flow` baseline: warp the support masks frame to frame with chained OpenCV DIS optical flow.

Passes follow XRayVOSLib.inference.merge exactly as the network does: backward from the first support,
forward from the last, and both ways between two supports, each pass starting from the exact support mask
and warping the previous frame's label map to the next frame (nearest-neighbour, so thin vessels are not
blurred away). A frame visited by two passes gets the weighted one-hot vote of merge.py (`support_weight`,
`labels_to_onehot`, `blend_probabilities`, `probabilities_to_labels`); an exact tie (the midpoint, where
the passes disagree) goes to the earlier support, as merge.py documents.

No torch and no weights: it runs wherever OpenCV does.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import cv2
import numpy as np

from XRayVOSLib.errors import CancelledError
from XRayVOSLib.inference.merge import (
    blend_probabilities,
    labels_to_onehot,
    plan_passes,
    probabilities_to_labels,
    support_weight,
)
from XRayVOSLib.inference.validate import check_frames, check_supports
from XRayVOSLib.methods import CancelToken, ProgressFn


def to_uint8(frames: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """uint8 frames for DIS: uint8 as is; anything else scaled by the cine's [low, high] percentiles.

    One window for the whole cine, not per frame, so that brightness constancy (which DIS assumes)
    survives the conversion.
    """
    if frames.dtype == np.uint8:
        return frames
    sample = frames[:, ::4, ::4].astype(np.float32)  # percentiles of a subsample are plenty and fast
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        return np.zeros(frames.shape, dtype=np.uint8)
    scaled = (frames.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def create_dis(preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, finest_scale: int | None = 0) -> cv2.DISOpticalFlow:
    """A DIS flow solver. The MEDIUM preset stops at half resolution (finest scale 1), where 1-3 px guidewires
    and vessels blur into the background; solving down to full resolution (0) raised mean J on synthetic
    cines from 0.54 to 0.63 (copy: 0.53) for ~3x the time (about 70 ms per 512x512 frame). None keeps the
    preset's own finest scale. One solver per cine: the object keeps state between calls."""
    dis = cv2.DISOpticalFlow_create(preset)
    if finest_scale is not None:
        dis.setFinestScale(finest_scale)
    return dis


class FlowPropagator:
    """Propagation method with the shared `propagate` signature (see XRayVOSLib.methods).

    anchored=False (`flow`): chained, each frame warped from the previous one's labels.
    anchored=True (`flow-support`): each frame warped straight from its pass's support, with flow from the
    frame to the support frame; nothing accumulates, but large motion or a changed image (contrast
    wash-in) is solved in one step. It is the output fusion's support anchor on its own
    (inference/fusion.py), so the network's share of the fused result can be measured.
    """

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, finest_scale: int | None = 0,
                 anchored: bool = False) -> None:
        # See create_dis for the choice of finest scale.
        self.preset = preset
        self.finest_scale = finest_scale
        self.anchored = anchored
        self.name = "flow-support" if anchored else "flow"

    def propagate(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Label maps [T, H, W] uint8; supports returned as given.

        progress(done, total) counts frame steps: a frame between two supports is visited by two passes.
        """
        frames = check_frames(frames)
        num_frames, height, width = frames.shape
        checked, object_ids = check_supports(supports, num_frames, (height, width))
        support_frames = sorted(checked)
        images = to_uint8(frames)
        passes = plan_passes(num_frames, support_frames)
        visits = Counter(t for p in passes for t in p.targets)
        total = sum(len(p.targets) for p in passes)
        dis = create_dis(self.preset, self.finest_scale)
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)

        out = np.zeros((num_frames, height, width), dtype=np.uint8)
        for t in support_frames:
            out[t] = checked[t]
        pending: dict[int, list[tuple[int, np.ndarray]]] = {}
        done = 0
        for p in passes:
            prev_t, labels = p.source, checked[p.source]
            for t in p.targets:
                if cancel is not None and cancel.is_set():
                    raise CancelledError(f"flow: cancelled at frame {t}")
                # Flow from frame t back to prev_t: frame t at x looks like prev_t at x + flow(x),
                # so each pixel of t pulls its label from there.
                start_t, start = (p.source, checked[p.source]) if self.anchored else (prev_t, labels)
                flow = dis.calc(images[t], images[start_t], None)
                labels = cv2.remap(
                    start, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                pending.setdefault(t, []).append((p.source, labels))
                if len(pending[t]) == visits[t]:
                    out[t] = merge_passes(t, pending.pop(t), support_frames, object_ids)
                prev_t = t
                done += 1
                if progress is not None:
                    progress(done, total)
        return out


def merge_passes(
    t: int, results: list[tuple[int, np.ndarray]], support_frames: list[int], object_ids: list[int]
) -> np.ndarray:
    """Combine the label maps of the passes that reached frame t (as (source support, labels))."""
    results = sorted(results, key=lambda r: r[0])  # earlier support first, for the tie rule
    acc = None
    for source, labels in results:
        acc = blend_probabilities(acc, labels_to_onehot(labels, object_ids), support_weight(t, source, support_frames))
    merged = probabilities_to_labels(acc, object_ids)
    if len(results) > 1:
        # argmax breaks ties by channel order (background first); merge.py's rule is "earlier support".
        top_two = np.sort(acc, axis=0)[-2:]
        tie = np.isclose(top_two[1], top_two[0], atol=1e-6)
        merged[tie] = results[0][1][tie]
    return merged
