"""`flow` and `flow-support` baselines: support masks carried by OpenCV DIS optical flow (no torch, no weights).

Passes, merge and decision are the network's (propagation/pipeline.py): backward from the first support,
forward from the last, both ways between two supports, each pass starting from the exact support mask.
- `flow`: chained, each frame's labels pulled from the previous frame's (nearest-neighbour, so thin vessels
  are not blurred away); it drifts.
- `flow-support`: each frame's labels pulled straight from its pass's support, with flow from the frame to
  the support frame; nothing accumulates, but large motion or a changed image (contrast wash-in) is solved
  in one step. It is the output fusion's support anchor alone (propagation/fusion.py), so the network's
  share of the fused result can be measured.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from XRayVOSLib.propagation.flow import FlowSolver, Warp
from XRayVOSLib.propagation.intensity import intensity_range, to_unit_range, unit_to_uint8
from XRayVOSLib.propagation.merge import labels_to_onehot
from XRayVOSLib.propagation.pipeline import PassMethod
from XRayVOSLib.propagation.plan import Pass


class FlowStepper:
    """Warps the pass's last labels (chained) or its support's labels (anchored) onto the next frame."""

    def __init__(self, anchored: bool) -> None:
        self.anchored = anchored
        self.solver, self.warp = FlowSolver(), Warp()

    def start(self, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass]) -> None:
        self.frames, self.value_range = frames, intensity_range(frames)
        self.supports, self.object_ids = supports, object_ids

    def start_pass(self, p: Pass) -> None:
        self.support_labels = self.labels = np.asarray(self.supports[p.source], dtype=np.uint8)
        self.reference = self.image(p.source)  # what the next frame is warped from

    def step(self, t: int) -> np.ndarray:
        current = self.image(t)
        flow = self.solver(current, self.reference)
        self.labels = self.warp(self.support_labels if self.anchored else self.labels, flow, nearest=True)
        if not self.anchored:
            self.reference = current
        return labels_to_onehot(self.labels, self.object_ids)

    def image(self, t: int) -> np.ndarray:
        """Frame t as DIS reads it, converted as the network's fusion converts it."""
        return unit_to_uint8(to_unit_range(np.asarray(self.frames[t]), self.value_range))


class FlowPropagator(PassMethod):
    """Propagation method with the shared signature (propagation.types.PropagationMethod)."""

    def __init__(self, anchored: bool = False) -> None:
        self.anchored = anchored
        self.name = "flow-support" if anchored else "flow"

    def stepper(self) -> FlowStepper:
        return FlowStepper(self.anchored)
