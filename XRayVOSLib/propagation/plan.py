"""Which passes cover a cine, and how much each counts on a frame.

With supports s_1 < ... < s_n: frames before s_1 are propagated backward from s_1 only, frames after s_n
forward from s_n only, and a frame t strictly between two consecutive supports a < t < b gets a forward pass
from a and a backward pass from b, weighted w_a = (b - t) / (b - a), w_b = (t - a) / (b - a): the nearer
support counts more, at the midpoint both count equally. Propagating from a farther support through a
nearer one would only repeat what the nearer, exact mask carries, so a frame uses at most two supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Pass:
    """One propagation pass: start at support `source`, visit `targets` in order (the source excluded)."""

    source: int
    targets: tuple[int, ...]


def plan_passes(num_frames: int, support_frames: Sequence[int]) -> list[Pass]:
    """The passes that cover every non-support frame, in the order they run (forward before backward)."""
    supports = sorted(set(int(s) for s in support_frames))
    if not supports:
        raise ValueError("at least one support frame is needed")
    passes: list[Pass] = []
    first, last = supports[0], supports[-1]
    if first > 0:
        passes.append(Pass(first, tuple(range(first - 1, -1, -1))))
    for a, b in zip(supports[:-1], supports[1:]):
        if b - a > 1:
            passes.append(Pass(a, tuple(range(a + 1, b))))
            passes.append(Pass(b, tuple(range(b - 1, a, -1))))
    if last < num_frames - 1:
        passes.append(Pass(last, tuple(range(last + 1, num_frames))))
    return passes


def visits(num_frames: int, passes: Sequence[Pass]) -> np.ndarray:
    """[T] how many passes reach each frame (0 for supports, 2 between two supports)."""
    count = np.zeros(num_frames, dtype=np.int32)
    for p in passes:
        count[list(p.targets)] += 1
    return count


def support_weight(t: int, source: int, support_frames: Sequence[int]) -> float:
    """Weight of the pass from `source` at frame t (1.0 outside the supports' span)."""
    supports = sorted(set(int(s) for s in support_frames))
    if t < supports[0] or t > supports[-1]:
        return 1.0
    right = min(s for s in supports if s > t)
    left = max(s for s in supports if s < t)
    if source == left:
        return (right - t) / (right - left)
    if source == right:
        return (t - left) / (right - left)
    return 0.0


__all__ = ["Pass", "plan_passes", "support_weight", "visits"]
