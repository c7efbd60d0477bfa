"""`copy` baseline: every frame gets the mask of its nearest support frame (ties go to the earlier one).

It shows how much of a score comes from the object simply staying put; any method worth using must beat it.
Run through the shared pass loop: each pass hands on its support's one-hot mask unchanged, and the merge's
weights make the nearer support win every pixel where two supports disagree (propagation/merge.py: at the
midpoint, the earlier support).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from XRayVOSLib.propagation.merge import labels_to_onehot
from XRayVOSLib.propagation.pipeline import PassMethod
from XRayVOSLib.propagation.plan import Pass


class CopyStepper:
    def start(self, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass]) -> None:
        self.onehots = {t: labels_to_onehot(np.asarray(m), object_ids) for t, m in supports.items()}
        self.frames = frames

    def start_pass(self, p: Pass) -> None:
        self.current = self.onehots[p.source]

    def step(self, t: int) -> np.ndarray:
        return self.current

    def image(self, t: int) -> np.ndarray:  # never called: the baselines run without fusion
        raise NotImplementedError("copy reads no image")


class CopyPropagator(PassMethod):
    """Propagation method with the shared signature (propagation.types.PropagationMethod)."""

    name = "copy"

    def stepper(self) -> CopyStepper:
        return CopyStepper()
