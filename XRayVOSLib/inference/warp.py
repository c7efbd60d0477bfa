"""Motion-aligned refiner prior (model config `prior_warp`): the previous frame's probabilities, warped
onto the current frame by OpenCV DIS optical flow before the pixel refiner reads them.

The refiner sees about 14 pixels, and a wire can move further than its own width between frames: an
unaligned prior tells it roughly where the wire was, an aligned one where it is now. The same DIS
settings as the `flow` baseline (full-resolution solve), so training, inference and the baseline agree.
Flow is estimated on the CPU (OpenCV); the warp itself is a `grid_sample` on the prior's device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from XRayVOSLib.baselines.flow import create_dis


def unit_to_uint8(frame01: np.ndarray) -> np.ndarray:
    """A frame in [0, 1] (the network's input range) as uint8 for DIS."""
    return np.clip(np.asarray(frame01, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class FlowEstimator:
    """DIS optical flow from a frame back to the previous one (medium preset, solved to full resolution)."""

    def __init__(self) -> None:
        self.dis = create_dis()  # the flow baseline's solver settings

    def __call__(self, current01: np.ndarray, previous01: np.ndarray) -> np.ndarray:
        """H, W, 2 float32: frame `current` at x looks like `previous` at x + flow(x)."""
        return self.dis.calc(unit_to_uint8(current01), unit_to_uint8(previous01), None)


def warp_prior(prior: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Pull each pixel's prior from where the flow says it was.

    prior: B, K, H, W;  flow: B, H, W, 2 (x, y displacements in pixels)  ->  B, K, H, W
    Bilinear, with the border replicated (as the flow baseline's remap).
    """
    _, _, h, w = prior.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=prior.device, dtype=prior.dtype),
                            torch.arange(w, device=prior.device, dtype=prior.dtype), indexing="ij")
    flow = flow.to(device=prior.device, dtype=prior.dtype)
    # grid_sample wants x, y in [-1, 1] with align_corners=True mapping -1 and 1 to the edge pixel centres.
    gx = (xs + flow[..., 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[..., 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # B, H, W, 2
    return F.grid_sample(prior, grid, mode="bilinear", padding_mode="border", align_corners=True)


def warp_clip_prior(prior: torch.Tensor, current: torch.Tensor, previous: torch.Tensor,
                    estimator: FlowEstimator) -> torch.Tensor:
    """Training: warp a batch's prior from `previous` to `current` frames.

    prior: B, K, H, W;  current, previous: B, 1, H, W in [0, 1]  ->  B, K, H, W
    """
    cur, prev = current[:, 0].detach().float().cpu().numpy(), previous[:, 0].detach().float().cpu().numpy()
    flow = np.stack([estimator(c, p) for c, p in zip(cur, prev)])  # B, H, W, 2
    return warp_prior(prior, torch.from_numpy(flow))


__all__ = ["FlowEstimator", "unit_to_uint8", "warp_clip_prior", "warp_prior"]
