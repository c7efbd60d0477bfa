"""The public Python API: Propagator.load(...).propagate(frames, supports) -> labels for every frame."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from XRayVOSLib.errors import CancelledError, InputError, ModelError
from XRayVOSLib.inference.engine import EngineSettings, InferenceEngine
from XRayVOSLib.inference.merge import background_scale
from XRayVOSLib.inference.validate import check_frames, check_supports
from XRayVOSLib.model.checkpoint import load_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import DEFAULT_MODEL_NAME, default_model_path

def resolve_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available to PyTorch; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


class Propagator:
    """Local-matching (or global) memory-network propagation of support masks through a cine."""

    def __init__(self, network: LocalMatchingNetwork, info: dict[str, Any], device: torch.device,
                 settings: EngineSettings, accelerate: bool | str = "auto") -> None:
        self.network = network
        self.info = info
        self.device = device
        self.settings = settings
        self.engine = InferenceEngine(network, device, settings, accelerate=accelerate)

    @property
    def name(self) -> str:
        return self.settings.matching

    @property
    def trained(self) -> bool:
        return bool(self.info.get("trained", False))

    @classmethod
    def load(
        cls,
        model: str | Path | LocalMatchingNetwork | None = None,
        device: str = "auto",
        matching: str = "local",
        window: int = 15,
        memory_every: int = 6,
        max_keyframes: int = 5,
        top_k: int | None = None,
        accelerate: bool | str = "auto",
        object_threshold: float | None = None,
        flip_average: bool = False,
        temporal_blend: float | None = None,
        support_warp: float | None = None,
        area_prior: bool | None = None,
    ) -> "Propagator":
        """model: None (the shipped checkpoint), a checkpoint path, or a network object.

        object_threshold: the probability an object needs to beat the background (one object); None takes
        the value the model was calibrated with (`xrayvos calibrate`), or 0.5, the plain arg-max.
        flip_average: also propagate the left-right mirrored cine and average (twice the time).
        temporal_blend: weight in [0, 1) of the previous frame's result, warped by optical flow, in each
        frame's probabilities; support_warp: weight in [0, 1] of the support mask warped straight onto each
        frame (inference/fusion.py); area_prior: per-object thresholds that keep each object's support area.
        None takes what the model file carries (the shipped ones: 0.85, 0.15 and on), else 0, 0 and off;
        area_prior=None with an explicit object_threshold is off (a threshold given is meant to act).
        """
        if matching not in ("local", "global"):
            raise InputError(f"matching must be 'local' or 'global', got {matching!r}")
        if window < 1:
            raise InputError(f"window must be a positive odd size, got {window}")
        if memory_every < 1:
            raise InputError(f"memory_every (r) must be >= 1, got {memory_every}")
        dev = resolve_device(device)
        if isinstance(model, LocalMatchingNetwork):
            network, info = model, {"trained": True, "source": "in-memory network"}
        else:
            path = Path(model) if model is not None else default_model_path()
            if path is None:
                warnings.warn("no trained XRayVOS model found (models/ is empty): using UNTRAINED weights")
                torch.manual_seed(0)
                network, info = LocalMatchingNetwork(ModelConfig()), {"trained": False, "source": "untrained"}
            else:
                network, info = load_checkpoint(path)
                info = {"trained": True, **info, "source": str(path)}
        threshold_given = object_threshold is not None
        if object_threshold is None:
            object_threshold = float(info.get("object_threshold", 0.5))
        try:
            background_scale(object_threshold)  # the one place the valid range is defined
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if temporal_blend is None:
            temporal_blend = float(info.get("temporal_blend", 0.0))
        if not 0.0 <= temporal_blend < 1.0:
            raise InputError(f"temporal_blend must lie in [0, 1), got {temporal_blend}")
        if support_warp is None:
            support_warp = float(info.get("support_warp", 0.0))
        if not 0.0 <= support_warp <= 1.0:
            raise InputError(f"support_warp must lie in [0, 1], got {support_warp}")
        if area_prior is None:  # an explicit threshold is meant to act, so it turns the model's area prior off
            area_prior = False if threshold_given else bool(info.get("area_prior", False))
        settings = EngineSettings(matching, window, memory_every, max_keyframes, top_k, object_threshold, flip_average,
                                  temporal_blend=temporal_blend, support_warp=support_warp, area_prior=area_prior)
        return cls(network.eval(), info, dev, settings, accelerate)

    def iter_propagate(
        self, frames: np.ndarray, supports: Mapping[int, np.ndarray], progress: Callable[[int, int], None] | None = None,
        cancel=None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, labels[H, W]) as frames finish (supports first, in their original form)."""
        frames, checked, object_ids = self._checked(frames, supports)
        originals = {int(t): np.asarray(m) for t, m in supports.items()}
        for t, labels in self.engine.run(frames, checked, object_ids, progress, cancel):
            yield t, (originals[t] if t in originals else labels)

    def iter_probabilities(
        self, frames: np.ndarray, supports: Mapping[int, np.ndarray], cancel=None,
    ) -> Iterator[tuple[int, np.ndarray, list[int]]]:
        """Yield (t, probabilities[K+1, H, W], object ids of channels 1..K) for every non-support frame."""
        frames, checked, object_ids = self._checked(frames, supports)
        for t, probs in self.engine.run_probabilities(frames, checked, object_ids, cancel=cancel):
            yield t, probs, object_ids

    @staticmethod
    def _checked(frames: np.ndarray, supports: Mapping[int, np.ndarray]) -> tuple[Any, dict, list[int]]:
        frames = frames if hasattr(frames, "__getitem__") and hasattr(frames, "shape") else np.asarray(frames)
        if len(frames.shape) != 3:
            check_frames(np.asarray(frames))
        if frames.shape[0] < 2:
            raise InputError(f"frames: a cine needs at least 2 frames, got {frames.shape[0]}")
        if isinstance(frames, np.ndarray):
            check_frames(frames)
        checked, object_ids = check_supports(supports, frames.shape[0], tuple(frames.shape[1:]))
        return frames, checked, object_ids

    def propagate(
        self, frames: np.ndarray, supports: Mapping[int, np.ndarray], progress: Callable[[int, int], None] | None = None,
        cancel=None,
    ) -> np.ndarray:
        """labels[T, H, W] (uint8, object ids as in the supports). Supports are returned exactly as given."""
        shape = tuple(np.shape(frames)) if not hasattr(frames, "shape") else tuple(frames.shape)
        out: np.ndarray | None = None
        for t, labels in self.iter_propagate(frames, supports, progress, cancel):
            if out is None:
                dtype = np.result_type(*[np.asarray(m).dtype for m in supports.values()], np.uint8)
                out = np.zeros(shape[:3], dtype=dtype)
            out[t] = labels
        assert out is not None
        return out


__all__ = ["Propagator", "default_model_path", "resolve_device", "CancelledError", "ModelError"]
