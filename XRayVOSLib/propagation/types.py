"""Types every propagation method shares (network and baselines)."""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import numpy as np

from XRayVOSLib.errors import CancelledError

ProgressFn = Callable[[int, int], None]  # progress(done, total), total counting frame visits


class CancelToken(Protocol):
    """A threading.Event or anything with is_set(): a set token stops a run within one frame."""

    def is_set(self) -> bool: ...


class PropagationMethod(Protocol):
    """propagate(frames[T, H, W], {t: labels[H, W]}) -> labels[T, H, W]; supports come back as given."""

    name: str

    def propagate(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray: ...


def check_cancel(cancel: CancelToken | None, where: str) -> None:
    """Raise CancelledError when the token is set."""
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"propagation cancelled {where}")


__all__ = ["CancelToken", "ProgressFn", "PropagationMethod", "check_cancel"]
