"""`copy` baseline: every frame gets the mask of its nearest support frame (ties go to the earlier one).

It shows how much of a score comes from the object simply staying put; any method worth using must beat it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from XRayVOSLib.errors import CancelledError
from XRayVOSLib.inference.validate import check_frames, check_supports
from XRayVOSLib.methods import CancelToken, ProgressFn


class CopyPropagator:
    """Propagation method with the shared `propagate` signature (see XRayVOSLib.methods)."""

    name = "copy"

    def propagate(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Label maps [T, H, W] uint8; support frames are returned as given; progress counts non-support frames."""
        frames = check_frames(frames)
        num_frames = frames.shape[0]
        checked, _ = check_supports(supports, num_frames, frames.shape[1:])
        support_frames = sorted(checked)
        out = np.zeros(frames.shape, dtype=np.uint8)
        for t in support_frames:
            out[t] = checked[t]
        todo = [t for t in range(num_frames) if t not in checked]
        for done, t in enumerate(todo, start=1):
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"copy: cancelled at frame {t}")
            nearest = min(support_frames, key=lambda s: (abs(s - t), s))  # (distance, index): ties -> earlier
            out[t] = checked[nearest]
            if progress is not None:
                progress(done, len(todo))
        return out
