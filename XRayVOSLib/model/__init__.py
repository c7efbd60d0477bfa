"""The local-matching memory network (key/value encoders, matching, decoder) and its checkpoints."""

from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork

__all__ = ["ModelConfig", "LocalMatchingNetwork"]
