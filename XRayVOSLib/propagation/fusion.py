"""Output fusion of one pass: the network's probabilities with motion-compensated masks (ours; not in the paper).

The network redraws every mask from the image, and on 1-5 px wide objects a pixel along an edge decides
most of J: alone it loses a third of an object's area one frame after the support (docs/experiments.md).
The support mask has the exact edges. Two motion-compensated terms carry them along:

- temporal blend `a`: the last fused result, warped onto this frame by DIS flow between the two frames
  (what the `flow` baseline does, chained, which drifts);
- support anchor `d`: the support mask itself, warped onto this frame by DIS flow straight from this frame
  to the support frame (no chain, no accumulated drift; it fails where the frame no longer resembles the
  support). On its own it is the `flow-support` baseline.

    fused_t = (1 - d) * [(1 - a) * network_t + a * warp(fused_{t-1})] + d * warp(support)

The network's share pulls every frame back to the image. Only the output is fused: the memory keeps the
network's own probabilities. The weights were chosen on validation cines (seed 555), never on held-out ones.
"""

from __future__ import annotations

import numpy as np

from XRayVOSLib.propagation.flow import FlowSolver, Warp


class PassFusion:
    """Fusion state of one pass (from one support, in one direction)."""

    def __init__(self, support: np.ndarray, source_image: np.ndarray, blend: float, anchor: float,
                 solver: FlowSolver, warp: Warp) -> None:
        """support: [K+1, H, W] float32 one-hot of the pass's support mask (background first);
        source_image: the support frame as uint8 [H, W] (what DIS reads)."""
        self.support = support.astype(np.float32, copy=False)
        self.carried = self.support
        self.source_image = self.previous_image = source_image
        self.blend, self.anchor = blend, anchor
        self.solver, self.warp = solver, warp

    def __call__(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray:
        """probs: [K+1, H, W] float32 network probabilities of the pass's next frame; image: that frame as
        uint8 [H, W]  ->  [K+1, H, W] float32 fused probabilities."""
        fused = probs
        if self.blend > 0:
            motion = self.solver(image, self.previous_image)
            fused = (1.0 - self.blend) * fused + self.blend * self.warp(self.carried, motion)
        if self.anchor > 0:
            to_support = self.solver(image, self.source_image)
            fused = (1.0 - self.anchor) * fused + self.anchor * self.warp(self.support, to_support)
        self.previous_image, self.carried = image, fused
        return fused


__all__ = ["PassFusion"]
