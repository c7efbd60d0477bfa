"""The method registry (the top of the package): one RunSettings in, a propagation method out.

Every method has propagate(frames[T, H, W], supports={t: labels[H, W]}, progress=None, cancel=None) ->
labels[T, H, W] and iter_propagate(...) yielding (t, labels) as frames finish (propagation.types).
"""

from __future__ import annotations

from pathlib import Path

from XRayVOSLib.propagation.pipeline import PassMethod
from XRayVOSLib.settings import RunSettings


def make_method(settings: RunSettings, model: str | Path | None = None) -> PassMethod:
    """settings.method 'local' / 'global': the network (loads torch and `model`, None = the shipped one);
    'flow' / 'flow-support' / 'copy': the baselines (no torch; `model` is not read)."""
    if settings.uses_network:
        from XRayVOSLib.inference.propagator import Propagator

        return Propagator.load(model, settings)
    if settings.method in ("flow", "flow-support"):
        from XRayVOSLib.baselines.flow import FlowPropagator

        return FlowPropagator(anchored=settings.method == "flow-support")
    from XRayVOSLib.baselines.copy import CopyPropagator

    return CopyPropagator()


__all__ = ["make_method"]
