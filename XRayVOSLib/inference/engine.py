"""Runs the network over a cine: passes from each support, keyframe memory, merge of the passes.

Frames are fetched one at a time (a lazy Cine works), padded to a multiple of 16, and each frame's result
is released as soon as every pass that covers it has run. Between two supports the first pass's
probabilities wait, quantised to uint8, for the second: that is the only per-frame state kept (besides,
for a model with `refine_prior`, the last frame's probabilities, which the refiner reads on the next,
warped onto it by optical flow when the model has `prior_warp`; and with temporal fusion, the last
frame's fused result and the pass's support mask, inference/fusion.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from XRayVOSLib.errors import CancelledError
from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.inference.area_prior import frame_thresholds, support_areas
from XRayVOSLib.inference.fusion import PassFusion
from XRayVOSLib.inference.memory import MemoryBank
from XRayVOSLib.inference.merge import labels_to_onehot, plan_passes, probabilities_to_labels, support_weight
from XRayVOSLib.inference.warp import FlowEstimator, warp_prior
from XRayVOSLib.model.matching import memory_readout
from XRayVOSLib.model.network import LocalMatchingNetwork, QueryFeatures, aggregate_probabilities
from XRayVOSLib.model.normalize import intensity_range, to_unit_range

PAD_MULTIPLE = 16
# With accelerate="auto", TorchScript is used on CPU only for runs of at least this many frame steps:
# tracing costs a few seconds, which short cines would not win back.
AUTO_ACCELERATE_MIN_STEPS = 40


@dataclass
class EngineSettings:
    matching: str = "local"
    window: int = 15
    memory_every: int = 6
    max_keyframes: int = 5
    top_k: int | None = None
    object_threshold: float = 0.5  # see merge.background_scale; a calibrated model carries its own
    # Test-time augmentation: also propagate the left-right mirrored cine and average the probabilities
    # (twice the time; held-out J&F +0.4 with the refiner model, see README).
    flip_average: bool = False
    # Temporal fusion (inference/fusion.py): each frame's probabilities are blended with the previous
    # frame's result, warped onto it by DIS optical flow, with this weight (0 = off).
    temporal_blend: float = 0.0
    # Support anchor: the support mask, warped straight onto each frame by optical flow, with this weight.
    support_warp: float = 0.0
    # Per-object thresholds that keep each object's area at its support's (inference/area_prior.py).
    area_prior: bool = False


class InferenceEngine:
    def __init__(self, network: LocalMatchingNetwork, device: torch.device, settings: EngineSettings,
                 accelerate: bool | str = "auto") -> None:
        self.network = network.to(device).eval()
        self.device = device
        self.settings = settings
        # TorchScript fusion pays off on CPU; on CUDA autocast fp16 does the work.
        self.accel = AcceleratedNetwork(self.network)
        self.set_acceleration(accelerate)

    def set_acceleration(self, mode: bool | str) -> None:
        """True, False, or "auto" (TorchScript only for runs of AUTO_ACCELERATE_MIN_STEPS or more); CPU only."""
        self.accelerate = mode if self.device.type == "cpu" else False
        self.accel.enabled = self.accelerate is True

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _frame_tensor(self, frame01: np.ndarray) -> torch.Tensor:
        h, w = frame01.shape
        x = torch.from_numpy(np.ascontiguousarray(frame01, dtype=np.float32)).to(self.device)[None, None]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def _pad_masks(self, masks: np.ndarray, padded: tuple[int, int]) -> torch.Tensor:
        m = torch.from_numpy(masks).to(self.device)[None]
        return F.pad(m, (0, padded[1] - m.shape[-1], 0, padded[0] - m.shape[-2]))

    def _encode(self, frame01: np.ndarray) -> QueryFeatures:
        return self.accel.encode_query(self._frame_tensor(frame01))

    def _segment(self, q: QueryFeatures, memory: MemoryBank, size: tuple[int, int],
                 prior: torch.Tensor | None = None) -> torch.Tensor:
        keys, values = memory.tensors()
        s = self.settings
        readout = memory_readout(q.key, keys, values, s.matching, s.window, s.top_k,
                                 rows=memory.value_rows().to(q.key.dtype))
        probs = aggregate_probabilities(self.accel.decode(readout, q, prior))
        return probs[0, :, : size[0], : size[1]]  # K+1, H, W (background first), padding cropped

    @staticmethod
    def _aligned(prior: torch.Tensor, flow: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """The padded prior (1, K, H', W') warped by `flow` (H, W, 2) on the unpadded frame; padding stays 0."""
        h, w = size
        warped = warp_prior(prior[..., :h, :w].float(), torch.from_numpy(flow)[None]).to(prior.dtype)
        return F.pad(warped, (0, prior.shape[-1] - w, 0, prior.shape[-2] - h))

    def run(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        object_ids: list[int],
        progress: Callable[[int, int], None] | None = None,
        cancel=None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, label map) as frames finish; supports first, exactly as given."""
        for t in sorted(supports):
            yield t, supports[t]
        areas = support_areas(supports, object_ids) if self.settings.area_prior else None
        for t, probs in self.run_probabilities(frames, supports, object_ids, progress, cancel):
            threshold = self.settings.object_threshold if areas is None else frame_thresholds(probs, t, areas)
            yield t, probabilities_to_labels(probs, object_ids, object_threshold=threshold)

    @torch.inference_mode()
    def run_probabilities(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        object_ids: list[int],
        progress: Callable[[int, int], None] | None = None,
        cancel=None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, merged probabilities [K+1, H, W] float32) for every frame but the supports."""
        if not self.settings.flip_average:
            yield from self._run_passes(frames, supports, object_ids, progress, cancel, mirrored=False)
            return
        # Both streams release frames in the same order (one pass plan), so they are zipped frame by frame:
        # each holds only what a plain run holds (a lazy cine's frames are read once per stream).
        done = [0, 0]

        def report(stream: int) -> Callable[[int, int], None] | None:
            def update(count: int, total: int) -> None:
                done[stream] = count
                progress(sum(done), 2 * total)

            return update if progress is not None else None

        plain = self._run_passes(frames, supports, object_ids, report(0), cancel, mirrored=False)
        mirror = self._run_passes(frames, supports, object_ids, report(1), cancel, mirrored=True)
        for (t, a), (t_mirror, b) in zip(plain, mirror, strict=True):
            assert t == t_mirror, "the plain and mirrored streams follow one pass plan"
            yield t, (a + b) * 0.5

    @torch.inference_mode()
    def _run_passes(
        self,
        frames: np.ndarray,
        supports: Mapping[int, np.ndarray],
        object_ids: list[int],
        progress: Callable[[int, int], None] | None,
        cancel,
        mirrored: bool,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """run_probabilities for the cine as given, or left-right mirrored (inputs flipped, outputs flipped back)."""
        num_frames = len(frames)
        value_range = intensity_range(frames)
        flip = (lambda a: np.ascontiguousarray(a[..., ::-1])) if mirrored else (lambda a: a)  # noqa: E731
        unit = lambda t: flip(to_unit_range(np.asarray(frames[t]), value_range))  # noqa: E731
        supports = {t: flip(np.asarray(m)) for t, m in supports.items()}
        size = tuple(np.asarray(frames[0]).shape)
        passes = plan_passes(num_frames, list(supports))
        total = sum(len(p.targets) for p in passes)
        if self.accelerate == "auto":
            self.accel.enabled = total >= AUTO_ACCELERATE_MIN_STEPS
        expected = np.zeros(num_frames, dtype=np.int32)
        for p in passes:
            expected[list(p.targets)] += 1
        pending: dict[int, np.ndarray] = {}
        arrived = np.zeros(num_frames, dtype=np.int32)

        memory = MemoryBank(max_keyframes=self.settings.max_keyframes)
        priors: dict[int, torch.Tensor] = {}  # support masks, padded: the first prior of each pass
        with self._autocast():
            for t in sorted(supports):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("propagation cancelled")
                q = self._encode(unit(t))
                onehot = labels_to_onehot(supports[t], object_ids)[1:]  # K, H, W
                padded = self._pad_masks(onehot, tuple(q.image.shape[-2:]))
                priors[t] = padded
                value = self.accel.encode_value(q, padded)
                memory.add(t, q.key[0], value[0], is_support=True)
            done = 0
            use_prior = self.network.config.refine_prior
            blend, anchor = self.settings.temporal_blend, self.settings.support_warp
            chain = self.network.config.prior_warp or blend > 0  # needs flow between consecutive frames
            flow = FlowEstimator() if (chain or anchor > 0) else None
            for p in passes:
                memory.clear_keyframes()
                prior = priors.get(p.source) if use_prior else None
                previous = unit(p.source) if flow is not None else None
                fusion = None
                if blend > 0 or anchor > 0:
                    support = torch.from_numpy(labels_to_onehot(supports[p.source], object_ids)).to(self.device)
                    fusion = PassFusion(support, previous, blend, anchor, flow)
                for step, t in enumerate(p.targets, start=1):
                    if cancel is not None and cancel.is_set():
                        raise CancelledError(f"propagation cancelled at frame {t}")
                    current = unit(t)
                    q = self._encode(current)
                    motion = flow(current, previous) if chain else None
                    previous = current
                    if self.network.config.prior_warp and prior is not None:
                        prior = self._aligned(prior, motion, size)
                    probs = self._segment(q, memory, size, prior)  # K+1, H, W: what the network reads next
                    pad = (0, q.image.shape[-1] - size[1], 0, q.image.shape[-2] - size[0])
                    if use_prior:
                        prior = F.pad(probs[None, 1:], pad)
                    if step % self.settings.memory_every == 0:
                        masks = F.pad(probs[None, 1:], pad)
                        memory.add(t, q.key[0], self.accel.encode_value(q, masks.to(q.image.dtype))[0])
                    if fusion is not None:  # shapes the output only: memory and prior keep the network's own
                        probs = fusion(probs, current, motion)
                    weight = support_weight(t, p.source, list(supports))
                    contribution = flip(probs.float().cpu().numpy()) * weight
                    arrived[t] += 1
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    if arrived[t] < expected[t]:
                        pending[t] = np.round(contribution * 255).astype(np.uint8)
                        continue
                    if t in pending:
                        contribution = contribution + pending.pop(t).astype(np.float32) / 255
                    yield t, contribution
