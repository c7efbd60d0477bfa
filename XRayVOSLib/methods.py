"""One entry point for every propagation method, so the CLI, evaluation and Slicer treat them alike.

Every method object has
    propagate(frames[T, H, W], supports={t: labels[H, W]}, progress=None, cancel=None) -> labels[T, H, W]
where progress(done, total) is called as frames finish and cancel is a threading.Event-like object
(`is_set()`); a set cancel raises XRayVOSLib.errors.CancelledError within one frame.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import numpy as np

from XRayVOSLib.errors import InputError

NETWORK_METHODS = ("local", "global")
BASELINE_METHODS = ("flow", "flow-support", "copy")
METHODS = NETWORK_METHODS + BASELINE_METHODS

ProgressFn = Callable[[int, int], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


class PropagationMethod(Protocol):
    name: str

    def propagate(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray: ...


def make_method(
    name: str,
    *,
    model: str | None = None,
    device: str = "auto",
    window: int = 15,
    memory_every: int = 6,
    object_threshold: float | None = None,
    flip_average: bool = False,
    temporal_blend: float | None = None,
    support_warp: float | None = None,
    area_prior: bool | None = None,
) -> PropagationMethod:
    """Build a method by name: 'local' / 'global' (the network, needs torch) or 'flow' / 'flow-support' / 'copy' (no torch)."""
    if name in NETWORK_METHODS:
        from XRayVOSLib.inference.propagator import Propagator

        return Propagator.load(model, device=device, matching=name, window=window, memory_every=memory_every,
                               object_threshold=object_threshold, flip_average=flip_average,
                               temporal_blend=temporal_blend, support_warp=support_warp,
                               area_prior=area_prior)
    if name in ("flow", "flow-support"):
        from XRayVOSLib.baselines.flow import FlowPropagator

        return FlowPropagator(anchored=name == "flow-support")
    if name == "copy":
        from XRayVOSLib.baselines.copy import CopyPropagator

        return CopyPropagator()
    raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
