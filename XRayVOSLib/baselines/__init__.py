"""Baseline propagation methods (no torch, no weights): `copy` (nearest support) and `flow` (DIS optical flow)."""

from XRayVOSLib.baselines.copy import CopyPropagator
from XRayVOSLib.baselines.flow import FlowPropagator

__all__ = ["CopyPropagator", "FlowPropagator"]
