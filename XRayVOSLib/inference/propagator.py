"""The public Python API: Propagator.load(model, settings).propagate(frames, supports) -> labels for every frame."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from XRayVOSLib.errors import InputError
from XRayVOSLib.inference.engine import AUTO_ACCELERATE_MIN_STEPS, InferenceCore
from XRayVOSLib.model.checkpoint import load_checkpoint
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import default_model_path
from XRayVOSLib.propagation.pipeline import PassMethod
from XRayVOSLib.runtime import resolve_device
from XRayVOSLib.settings import RunSettings


class Propagator(PassMethod):
    """Local-matching (or global) memory-network propagation of support masks through a cine.

    propagate / iter_propagate / iter_probabilities come from propagation.pipeline.PassMethod: the
    network's step, then the output fusion, the merge of the passes and the decision of the settings.
    """

    def __init__(self, network: LocalMatchingNetwork, info: dict[str, Any], settings: RunSettings,
                 accelerate: bool | str = "auto") -> None:
        if not settings.uses_network:
            raise InputError(f"method {settings.method!r} is a baseline, not the network; use methods.make_method")
        self.info = info
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.engine = InferenceCore(network.eval(), self.device, settings, accelerate=accelerate)
        self.network = self.engine.network
        self.fusion = (settings.temporal_blend, settings.support_warp)
        self.decision = (settings.decision, settings.threshold)

    @property
    def name(self) -> str:
        return self.settings.method

    @property
    def trained(self) -> bool:
        return bool(self.info.get("trained", False))

    def stepper(self) -> InferenceCore:
        return self.engine

    def confidence_profile(self) -> str:
        """local and global share one estimator: the signals are the pipeline's, not the matching's."""
        return "network+fusion" if any(w > 0 for w in self.fusion) else "network"

    def cache_identity(self, total_steps: int) -> dict[str, Any]:
        """What a cached pass of this network depends on: the settings, the weights, and the numerics (device,
        TorchScript on or off: it folds the BatchNorms, which changes the last bits)."""
        mode = self.engine.accelerate
        accelerated = (mode is True or (mode == "auto" and total_steps >= AUTO_ACCELERATE_MIN_STEPS)) \
            and not self.engine.accel.broken
        return {**super().cache_identity(total_steps), "settings": self.settings.to_dict(),
                "model_sha256": self.weights_digest(), "device": str(self.device), "accelerated": bool(accelerated),
                "torch": torch.__version__}

    def weights_digest(self) -> str:
        """sha256 of the network's tensors (names, shapes, values), once per propagator."""
        if getattr(self, "_weights_digest", None) is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.network.state_dict().items()):
                value = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        return self._weights_digest

    @classmethod
    def load(cls, model: str | Path | LocalMatchingNetwork | None = None, settings: RunSettings | None = None,
             accelerate: bool | str = "auto") -> "Propagator":
        """model: None (the shipped checkpoint), a checkpoint path, or a network object; settings: None takes
        RunSettings.from_model(model) (the defaults overlaid with what the model file carries)."""
        if isinstance(model, LocalMatchingNetwork):
            network, info = model, {"trained": True, "source": "in-memory network"}
            settings = settings or RunSettings()
        else:
            path = Path(model).expanduser() if model is not None else default_model_path()
            settings = settings or RunSettings.from_model(path)
            if path is None:
                warnings.warn("no trained XRayVOS model found (models/ is empty): using UNTRAINED weights")
                torch.manual_seed(0)
                network, info = LocalMatchingNetwork(ModelConfig()), {"trained": False, "source": "untrained"}
            else:
                network, info = load_checkpoint(path)
                info = {"trained": True, **info, "source": str(path)}
        return cls(network, info, settings, accelerate)


__all__ = ["Propagator"]
