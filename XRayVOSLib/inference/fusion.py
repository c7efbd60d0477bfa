"""Temporal fusion of the network's output with motion-compensated masks (ours; not in the paper).

The network redraws every mask from the image, and on 1-5 px wide objects a pixel along an edge decides
most of J: alone it loses a third of an object's area one frame after the support (models/README.md,
drift table). The support mask has the exact edges. Two motion-compensated terms carry them along:

- **temporal blend** `a`: the last fused result, warped onto this frame by DIS optical flow between the
  two frames (what the `flow` baseline does, chained, which drifts);
- **support anchor** `d`: the support mask itself, warped onto this frame by DIS flow straight from this
  frame to the support frame (no chain, so no accumulated drift; it fails where the frame no longer
  resembles the support).

fused_t = (1 - d) * [(1 - a) * network_t + a * warp(fused_{t-1})] + d * warp(support)

The network's share pulls every frame back to the image. Only the output is fused: memory and the
refiner's prior keep the network's own probabilities. Weights were chosen on validation cines
(seed 555), never on the held-out set: README, *Output fusion and the area prior*.
"""

from __future__ import annotations

import numpy as np
import torch

from XRayVOSLib.inference.warp import FlowEstimator, warp_prior


class PassFusion:
    """Fusion state of one propagation pass (from one support, in one direction)."""

    def __init__(self, support: torch.Tensor, source01: np.ndarray, blend: float, anchor: float,
                 flow: FlowEstimator) -> None:
        """support: K+1, H, W one-hot of the pass's support mask (background first), unpadded;
        source01: the support frame in [0, 1], H, W."""
        self.support = support.float()
        self.carried = self.support
        self.source01 = source01
        self.blend, self.anchor, self.flow = blend, anchor, flow

    def __call__(self, probs: torch.Tensor, current01: np.ndarray, motion: np.ndarray | None) -> torch.Tensor:
        """probs: K+1, H, W network probabilities of this frame; motion: H, W, 2 flow from this frame to the
        previous one (needed when blend > 0)  ->  K+1, H, W fused probabilities (float32)."""
        fused = probs.float()
        if self.blend > 0:
            warped = warp_prior(self.carried[None], torch.from_numpy(motion)[None])[0]
            fused = (1.0 - self.blend) * fused + self.blend * warped
        if self.anchor > 0:
            to_support = self.flow(current01, self.source01)
            anchored = warp_prior(self.support[None], torch.from_numpy(to_support)[None])[0]
            fused = (1.0 - self.anchor) * fused + self.anchor * anchored
        self.carried = fused
        return fused


__all__ = ["PassFusion"]
