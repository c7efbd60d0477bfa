"""The pass loop every method runs: step -> fusion -> merge -> decision -> confidence.

A method supplies a `PassStepper` (the network's InferenceCore adapter, or a baseline's warp of the last
labels) that produces class probabilities for the next frame of a pass; everything after that is shared:
the output fusion (network methods), the one merge of the passes, the decision and the confidence signals
(confidence.py). Frames are released as soon as every pass that covers them has run, so a lazy cine is
read frame by frame.

A pass depends on nothing but its own support, its direction, the cine and the method: the stepper is
started afresh for each pass with that support alone (the network's memory holds no other support), and a
pass's probabilities are quantised to 16 bits (QUANT_LEVELS) before the merge. So a pass read back from a
cache (cache.py) merges exactly like one computed now, and a support added or corrected at frame c changes
only the passes between the supports that enclose c: an incremental re-run equals a full run, bit for bit.
What this cost on validation cines (seed 555, 8 x 30 frames, 320 px): J 0.9002 -> 0.8992 with two supports
(the memory's other support), 0.8798 -> 0.8795 with one (the quantisation); docs/review.md.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple, Protocol, Sequence

import cv2
import numpy as np

from XRayVOSLib.propagation.confidence import (FrameResult, FrameSignals, PassView, PropagationResult, collect,
                                               estimator_for, index_map, network_agreement)
from XRayVOSLib.propagation.decision import ARGMAX, Decision, probabilities_to_labels
from XRayVOSLib.propagation.flow import FlowSolver, Warp
from XRayVOSLib.propagation.fusion import PassFusion
from XRayVOSLib.propagation.merge import FrameMerger, labels_to_onehot
from XRayVOSLib.propagation.plan import Pass, plan_passes
from XRayVOSLib.propagation.types import CancelToken, ProgressFn, check_cancel
from XRayVOSLib.propagation.validate import check_cine, check_supports

QUANT_LEVELS = 65535  # 8 bits cost 0.0015 J on validation (ties at the area prior's threshold); 16 bits 0.0003
PassOutput = tuple[np.ndarray, np.ndarray]  # (object probabilities [K, H, W] uint16, fusion agreement [K])


class PassStepper(Protocol):
    """What a method does per frame. `start` gets one support, the source of the next pass computed, and the
    whole plan; it is called again only when a pass from another support follows. `start_pass` begins a pass."""

    def start(self, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass]) -> None: ...

    def start_pass(self, p: Pass) -> None: ...

    def step(self, t: int) -> np.ndarray:
        """[K+1, H, W] float32 class probabilities of frame t, the pass's next frame."""
        ...

    def image(self, t: int) -> np.ndarray:
        """Frame t as uint8 [H, W], as DIS flow reads it."""
        ...


class PassStore(Protocol):
    """Where passes are kept between runs (cache.PassCache): a pass read back, or a writer for a new one."""

    def reuse(self, p: Pass) -> Iterator[PassOutput] | None: ...

    def record(self, p: Pass, outputs: Iterator[PassOutput]) -> Iterator[PassOutput]: ...


class Merged(NamedTuple):
    t: int
    probs: np.ndarray  # [K+1, H, W] float32, the merged probabilities
    passes: list[PassView]


def quantize(probs: np.ndarray) -> np.ndarray:
    """[K+1, H, W] probabilities -> [K, H, W] uint16 object channels (the background follows from them)."""
    return np.rint(np.clip(probs[1:], 0.0, 1.0) * QUANT_LEVELS).astype(np.uint16)


def dequantize(q: np.ndarray) -> np.ndarray:
    """[K, H, W] uint16 -> [K+1, H, W] float32, background = what the objects leave of 1."""
    rest = np.clip(QUANT_LEVELS - q.sum(axis=0, dtype=np.int64), 0, None).astype(np.float32)
    return np.concatenate([rest[None], q.astype(np.float32)]) / np.float32(QUANT_LEVELS)


def _computed(stepper: PassStepper, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass], p: Pass, fusion: tuple[float, float], restart: bool) -> Iterator[PassOutput]:
    """Run pass p: the stepper holding p's support alone (restart: start it with that support), the fusion (if
    on) with its own flow solver."""
    if restart:
        stepper.start(frames, {p.source: supports[p.source]}, object_ids, passes)
    stepper.start_pass(p)
    blend, anchor = fusion
    pass_fusion = None
    if blend > 0 or anchor > 0:
        support = labels_to_onehot(np.asarray(supports[p.source]), object_ids)
        pass_fusion = PassFusion(support, stepper.image(p.source), blend, anchor, FlowSolver(), Warp())
    no_fusion = np.full(len(object_ids), np.nan, np.float32)
    for t in p.targets:
        probs = stepper.step(t)
        if pass_fusion is None:
            yield quantize(probs), no_fusion
        else:
            fused = pass_fusion(probs, stepper.image(t))
            yield quantize(fused), network_agreement(probs, fused)


def iter_merged(stepper: PassStepper, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
                fusion: tuple[float, float] = (0.0, 0.0), progress: ProgressFn | None = None,
                cancel: CancelToken | None = None, store: PassStore | None = None) -> Iterator[Merged]:
    """Yield every non-support frame's merged probabilities and its passes' views as the frame completes.

    fusion: (temporal blend, support warp) weights of fusion.PassFusion; (0, 0) = no fusion.
    store: passes it holds are read back instead of computed, and every pass is handed to it.
    progress(done, total) counts frame visits (a frame between two supports is visited twice), read back or not.
    """
    num_frames = int(frames.shape[0])
    passes = plan_passes(num_frames, list(supports))
    total = sum(len(p.targets) for p in passes)
    check_cancel(cancel, "before it started")
    merger = FrameMerger(num_frames, passes, list(supports))
    pending: dict[int, list[PassView]] = {}
    done, started = 0, None  # started: the support the stepper holds
    for p in passes:
        outputs = store.reuse(p) if store is not None else None
        if outputs is None:
            outputs = _computed(stepper, frames, supports, object_ids, passes, p, fusion, restart=started != p.source)
            started = p.source
            if store is not None:
                outputs = store.record(p, outputs)
        try:
            for t in p.targets:
                check_cancel(cancel, f"at frame {t}")
                q, agreement = next(outputs)
                probs = dequantize(q)
                pending.setdefault(t, []).append(PassView(p.source, index_map(probs), agreement))
                merged = merger.add(t, p.source, probs)
                done += 1
                if progress is not None:
                    progress(done, total)
                if merged is not None:
                    yield Merged(t, merged, pending.pop(t))
            next(outputs, None)  # lets a recording store close the pass
        except BaseException:  # a cancel, an error, or the consumer stopping: no half-written pass stays behind
            getattr(outputs, "close", lambda: None)()
            raise


def run_passes(stepper: PassStepper, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
               fusion: tuple[float, float] = (0.0, 0.0), progress: ProgressFn | None = None,
               cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (t, merged probabilities [K+1, H, W] float32) for every non-support frame as it completes."""
    for m in iter_merged(stepper, frames, supports, object_ids, fusion, progress, cancel):
        yield m.t, m.probs


class PassMethod:
    """A propagation method built on the pass loop; subclasses supply `stepper()` and may set the fusion and
    the decision (the baselines keep the plain arg-max and no fusion)."""

    name = "pass-method"
    fusion: tuple[float, float] = (0.0, 0.0)
    decision: tuple[str, float] = ARGMAX  # (rule, threshold) of decision.Decision

    def stepper(self) -> PassStepper:
        raise NotImplementedError

    def confidence_profile(self) -> str:
        """The key of this method's fitted confidence estimator (confidence_fit.FITS)."""
        return self.name + ("+fusion" if any(w > 0 for w in self.fusion) else "")

    def cache_identity(self, total_steps: int) -> dict[str, Any]:
        """Everything besides the cine and the supports that a cached pass depends on (cache.py compares it)."""
        return {"method": self.name, "class": type(self).__name__, "fusion": list(self.fusion),
                "decision": list(self.decision), "opencv": cv2.__version__}

    def _checked(self, frames: Any, supports: Mapping[int, np.ndarray]) -> tuple[Any, dict, list[int]]:
        frames = check_cine(frames)
        checked, object_ids = check_supports(supports, int(frames.shape[0]), tuple(frames.shape[1:]))
        return frames, checked, object_ids

    def iter_probabilities(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, merged probabilities [K+1, H, W]) for every non-support frame (object ids in order)."""
        frames, checked, object_ids = self._checked(frames, supports)
        yield from run_passes(self.stepper(), frames, checked, object_ids, self.fusion, progress, cancel)

    def iter_frames(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None, store: Any = None) -> Iterator[FrameResult]:
        """Yield a FrameResult (labels, estimated J [K], signals) per frame as it finishes, the supports first
        (their labels exactly as given). store: a cache.PassCache, begun here with this run's identity."""
        frames, checked, object_ids = self._checked(frames, supports)
        signals = FrameSignals(checked, object_ids, estimator_for(self.confidence_profile()))
        for t in sorted(checked):
            yield signals.support(t, np.asarray(supports[t]))
        if store is not None:
            steps = sum(len(p.targets) for p in plan_passes(int(frames.shape[0]), list(checked)))
            store.begin(self.cache_identity(steps), frames, checked, object_ids)
        decide = Decision(*self.decision, checked, object_ids)
        for m in iter_merged(self.stepper(), frames, checked, object_ids, self.fusion, progress, cancel, store):
            thresholds = decide.thresholds(m.t, m.probs)
            labels = probabilities_to_labels(m.probs, object_ids, threshold=thresholds)  # = decide(t, probs)
            yield signals(m.t, m.probs, labels, thresholds, m.passes)
        if store is not None:
            store.finish()

    def iter_propagate(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                       cancel: CancelToken | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, labels [H, W]) as frames finish: the supports first, exactly as given."""
        for r in self.iter_frames(frames, supports, progress, cancel):
            yield r.t, r.labels

    def propagate(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> np.ndarray:
        """labels [T, H, W] (object ids as in the supports, which are returned exactly as given)."""
        return self.propagate_result(frames, supports, progress, cancel).labels

    def propagate_result(self, frames: Any, supports: Mapping[int, np.ndarray], progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None, cache: Any = None) -> PropagationResult:
        """labels [T, H, W] and confidence [T, K] (estimated J; supports 1.0) of every frame, with the signals.

        cache: a folder (str/Path) or a cache.PassCache: passes it holds from an earlier run of this method on
        this cine are read back (only the passes a changed support touches are computed), and this run's
        passes are written there for the next run."""
        from XRayVOSLib.propagation.cache import PassCache

        store = cache if cache is None or isinstance(cache, PassCache) else PassCache(cache)
        frames_checked, checked, object_ids = self._checked(frames, supports)
        dtype = np.result_type(*[np.asarray(m).dtype for m in supports.values()], np.uint8)
        results = self.iter_frames(frames_checked, supports, progress, cancel, store)
        labels, confidence, signals = collect(results, int(frames_checked.shape[0]), object_ids, dtype)
        estimator = estimator_for(self.confidence_profile())
        return PropagationResult(labels, confidence, object_ids, sorted(checked), signals,
                                 estimator.name if estimator is not None else None,
                                 store.steps() if store is not None else {})


__all__ = ["Merged", "PassMethod", "PassStepper", "PassStore", "QUANT_LEVELS", "dequantize", "iter_merged",
           "quantize", "run_passes"]
