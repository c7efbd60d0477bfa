"""The network's input normalisation: a frame in [0, 1] (propagation/intensity.py) -> zero mean, unit variance
with the config's mean and std (ImageNet's grey statistics for the MobileNetV2 trunk)."""

from __future__ import annotations

import torch


def normalize(image01: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] -> network input."""
    return (image01 - mean) / std
