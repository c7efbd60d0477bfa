"""The pass loop every method runs: step -> fusion -> merge -> decision.

A method supplies a `PassStepper` (the network's InferenceCore adapter, or a baseline's warp of the last
labels) that produces class probabilities for the next frame of a pass; everything after that is shared:
the output fusion (network methods), the one merge of the passes and the decision. Frames are released
as soon as every pass that covers them has run, so a lazy cine is read frame by frame.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np

from XRayVOSLib.propagation.decision import ARGMAX, Decision
from XRayVOSLib.propagation.flow import FlowSolver, Warp
from XRayVOSLib.propagation.fusion import PassFusion
from XRayVOSLib.propagation.merge import FrameMerger, labels_to_onehot
from XRayVOSLib.propagation.plan import Pass, plan_passes
from XRayVOSLib.propagation.types import CancelToken, ProgressFn, check_cancel
from XRayVOSLib.propagation.validate import check_cine, check_supports


class PassStepper(Protocol):
    """What a method does per frame; `start` is called once per run, `start_pass` once per pass."""

    def start(self, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass]) -> None: ...

    def start_pass(self, p: Pass) -> None: ...

    def step(self, t: int) -> np.ndarray:
        """[K+1, H, W] float32 class probabilities of frame t, the pass's next frame."""
        ...

    def image(self, t: int) -> np.ndarray:
        """Frame t as uint8 [H, W], as DIS flow reads it."""
        ...


def run_passes(stepper: PassStepper, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
               fusion: tuple[float, float] = (0.0, 0.0), progress: ProgressFn | None = None,
               cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (t, merged probabilities [K+1, H, W] float32) for every non-support frame as it completes.

    fusion: (temporal blend, support warp) weights of fusion.PassFusion; (0, 0) = no fusion.
    progress(done, total) counts frame visits: a frame between two supports is visited twice.
    """
    num_frames = int(frames.shape[0])
    passes = plan_passes(num_frames, list(supports))
    total = sum(len(p.targets) for p in passes)
    check_cancel(cancel, "before it started")
    stepper.start(frames, supports, object_ids, passes)
    merger = FrameMerger(num_frames, passes, list(supports))
    blend, anchor = fusion
    fused = blend > 0 or anchor > 0
    solver, warp = (FlowSolver(), Warp()) if fused else (None, None)
    done = 0
    for p in passes:
        stepper.start_pass(p)
        pass_fusion = None
        if fused:
            support = labels_to_onehot(np.asarray(supports[p.source]), object_ids)
            pass_fusion = PassFusion(support, stepper.image(p.source), blend, anchor, solver, warp)
        for t in p.targets:
            check_cancel(cancel, f"at frame {t}")
            probs = stepper.step(t)
            if pass_fusion is not None:
                probs = pass_fusion(probs, stepper.image(t))
            merged = merger.add(t, p.source, probs)
            done += 1
            if progress is not None:
                progress(done, total)
            if merged is not None:
                yield t, merged


class PassMethod:
    """A propagation method built on run_passes; subclasses supply `stepper()` and may set the fusion and
    the decision (the baselines keep the plain arg-max and no fusion)."""

    name = "pass-method"
    fusion: tuple[float, float] = (0.0, 0.0)
    decision: tuple[str, float] = ARGMAX  # (rule, threshold) of decision.Decision

    def stepper(self) -> PassStepper:
        raise NotImplementedError

    def _checked(self, frames: Any, supports: Mapping[int, np.ndarray]) -> tuple[Any, dict, list[int]]:
        frames = check_cine(frames)
        checked, object_ids = check_supports(supports, int(frames.shape[0]), tuple(frames.shape[1:]))
        return frames, checked, object_ids

    def iter_probabilities(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, merged probabilities [K+1, H, W]) for every non-support frame (object ids in order)."""
        frames, checked, object_ids = self._checked(frames, supports)
        yield from run_passes(self.stepper(), frames, checked, object_ids, self.fusion, progress, cancel)

    def iter_propagate(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                       cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, labels [H, W]) as frames finish: the supports first, exactly as given."""
        frames, checked, object_ids = self._checked(frames, supports)
        originals = {int(t): np.asarray(m) for t, m in supports.items()}
        for t in sorted(originals):
            yield t, originals[t]
        decide = Decision(*self.decision, checked, object_ids)
        for t, probs in run_passes(self.stepper(), frames, checked, object_ids, self.fusion, progress, cancel):
            yield t, decide(t, probs)

    def propagate(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> np.ndarray:
        """labels [T, H, W] (object ids as in the supports, which are returned exactly as given)."""
        dtype = np.result_type(*[np.asarray(m).dtype for m in supports.values()], np.uint8) if supports else np.uint8
        out: np.ndarray | None = None
        for t, labels in self.iter_propagate(frames, supports, progress, cancel):
            if out is None:
                out = np.zeros((np.shape(frames)[0],) + labels.shape, dtype=dtype)
            out[t] = labels
        assert out is not None
        return out


__all__ = ["PassMethod", "PassStepper", "run_passes"]
