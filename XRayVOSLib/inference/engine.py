"""The network's side of a run, in the spirit of Cutie's InferenceCore: the supports go into memory once,
then `step(t)` segments the next frame of a pass (encode, read memory, decode, memory update every r frames).

Frames are fetched one at a time (a lazy cine works) and padded to a multiple of 16; the pass loop, fusion,
merge and decision are the torch-free propagation core's (propagation/pipeline.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from XRayVOSLib.inference.accelerate import AcceleratedNetwork
from XRayVOSLib.inference.memory import MemoryBank
from XRayVOSLib.model.matching import memory_readout
from XRayVOSLib.model.network import LocalMatchingNetwork, QueryFeatures, aggregate_probabilities
from XRayVOSLib.propagation.intensity import intensity_range, to_unit_range, unit_to_uint8
from XRayVOSLib.propagation.merge import labels_to_onehot
from XRayVOSLib.propagation.plan import Pass
from XRayVOSLib.settings import RunSettings

PAD_MULTIPLE = 16
# With accelerate="auto", TorchScript is used on CPU only for runs of at least this many frame steps:
# tracing costs a few seconds, which short cines would not win back.
AUTO_ACCELERATE_MIN_STEPS = 40


class InferenceCore:
    """One network on one device with one run's settings; a PassStepper for propagation.pipeline."""

    def __init__(self, network: LocalMatchingNetwork, device: torch.device, settings: RunSettings,
                 accelerate: bool | str = "auto") -> None:
        self.network = network.to(device).eval()
        self.device = device
        self.settings = settings
        self.accel = AcceleratedNetwork(self.network)  # TorchScript pays off on CPU; on CUDA autocast fp16 does
        self.set_acceleration(accelerate)
        self.memory = MemoryBank(max_keyframes=settings.max_keyframes)

    def set_acceleration(self, mode: bool | str) -> None:
        """True, False, or "auto" (TorchScript only for runs of AUTO_ACCELERATE_MIN_STEPS or more); CPU only."""
        self.accelerate = mode if self.device.type == "cpu" else False
        self.accel.enabled = self.accelerate is True

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        return stack

    # --- PassStepper -------------------------------------------------------------------------------------
    def start(self, frames: Any, supports: Mapping[int, np.ndarray], object_ids: list[int],
              passes: Sequence[Pass]) -> None:
        """Read the cine's intensity range and put every support into memory."""
        self.frames, self.value_range = frames, intensity_range(frames)
        self.size = tuple(np.asarray(frames[0]).shape)
        self._unit: tuple[int, np.ndarray] | None = None
        if self.accelerate == "auto":
            self.accel.enabled = sum(len(p.targets) for p in passes) >= AUTO_ACCELERATE_MIN_STEPS
        self.memory = MemoryBank(max_keyframes=self.settings.max_keyframes)
        with self._context():
            for t in sorted(supports):
                q = self._encode(self._unit_frame(t))
                onehot = labels_to_onehot(np.asarray(supports[t]), object_ids)[1:]  # K, H, W
                masks = self._pad(torch.from_numpy(onehot).to(self.device)[None], tuple(q.image.shape[-2:]))
                self.memory.add(t, q.key[0], self.accel.encode_value(q, masks)[0], is_support=True)

    def start_pass(self, p: Pass) -> None:
        self.memory.clear_keyframes()
        self.pass_step = 0

    def step(self, t: int) -> np.ndarray:
        """[K+1, H, W] float32: the network's probabilities of frame t (background first)."""
        with self._context():
            q = self._encode(self._unit_frame(t))
            height, width = self.size
            probs = self._segment(q)[:, :height, :width]  # K+1, H, W: the padding's guesses dropped
            self.pass_step += 1
            if self.pass_step % self.settings.memory_every == 0:
                masks = self._pad(probs[None, 1:], tuple(q.image.shape[-2:])).to(q.image.dtype)  # zero padding
                self.memory.add(t, q.key[0], self.accel.encode_value(q, masks)[0])
            return probs.float().cpu().numpy()

    def image(self, t: int) -> np.ndarray:
        return unit_to_uint8(self._unit_frame(t))

    # --- network ----------------------------------------------------------------------------------------
    def _unit_frame(self, t: int) -> np.ndarray:
        """Frame t in [0, 1] float32 (the last one cached: fusion reads the frame the network just read)."""
        if self._unit is None or self._unit[0] != t:
            self._unit = t, to_unit_range(np.asarray(self.frames[t]), self.value_range)
        return self._unit[1]

    def _pad(self, x: torch.Tensor, padded: tuple[int, int], mode: str = "constant") -> torch.Tensor:
        """B, C, H, W -> B, C, H', W' (right and bottom padding)."""
        pad = (0, padded[1] - x.shape[-1], 0, padded[0] - x.shape[-2])
        return F.pad(x, pad, mode=mode) if any(pad) else x

    def _encode(self, frame01: np.ndarray) -> QueryFeatures:
        h, w = frame01.shape
        x = torch.from_numpy(np.ascontiguousarray(frame01, dtype=np.float32)).to(self.device)[None, None]
        padded = (h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE)
        return self.accel.encode_query(self._pad(x, padded, mode="replicate"))

    def _segment(self, q: QueryFeatures) -> torch.Tensor:
        keys, values = self.memory.tensors()
        s = self.settings
        readout = memory_readout(q.key, keys, values, s.method, s.window,
                                 rows=self.memory.value_rows().to(q.key.dtype))
        return aggregate_probabilities(self.accel.decode(readout, q))[0]  # K+1, H', W' (background first)


__all__ = ["AUTO_ACCELERATE_MIN_STEPS", "InferenceCore", "PAD_MULTIPLE"]
