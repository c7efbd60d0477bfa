"""Architecture config stored inside every checkpoint, so a checkpoint describes itself.

There is one config version: a file written for another version (or with fields this code does not know)
is refused with a ModelError that names the file, rather than loaded with guessed defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from XRayVOSLib.errors import ModelError

ARCHITECTURE = "xrayvos-lmn-mbv2"
CONFIG_VERSION = 6
STRIDE = 16  # matching stride: keys, values and the readout live on the 1/16 grid
# Widest layer a config may ask for: far above any trained model's, low enough that a corrupt or hostile
# config is refused with a message instead of an allocation failure.
MAX_WIDTH = 4096
_WIDTHS = ("key_dim", "value_dim", "projection_dim")
_CHANNELS = {"mask_encoder_channels": 4, "decoder_channels": 3}


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = ARCHITECTURE
    version: int = CONFIG_VERSION
    key_dim: int = 64  # STCN's key size
    value_dim: int = 128  # smaller than STCN's 512: the readout cost on CPU scales with it
    mask_encoder_channels: tuple[int, ...] = (16, 32, 64, 128)  # value-encoder widths at strides 2, 4, 8, 16
    decoder_channels: tuple[int, ...] = (64, 48, 16)  # at strides 16, 8, 4: kept small for CPU
    projection_dim: int = 64  # contrastive projection head
    # Grey X-ray intensity in [0, 1] is normalised with the mean/std of ImageNet's three channels.
    norm_mean: float = 0.449
    norm_std: float = 0.226

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ModelError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r} supported by this code")
        if self.version != CONFIG_VERSION or isinstance(self.version, bool):
            raise ModelError(f"model config version {self.version!r}: this code reads version {CONFIG_VERSION} only")
        for name in _WIDTHS:
            _check_width(name, getattr(self, name))
        for name, count in _CHANNELS.items():
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != count:
                raise ModelError(f"{name} must be a list of {count} widths, got {value!r}")
            for width in value:
                _check_width(name, width)
            object.__setattr__(self, name, tuple(value))  # lists from JSON; frozen, hence object.__setattr__
        for name in ("norm_mean", "norm_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ModelError(f"{name} must be a finite number, got {value!r}")
        if self.norm_std <= 0:
            raise ModelError(f"norm_std must be positive, got {self.norm_std!r}")

    @property
    def stride(self) -> int:
        return STRIDE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask_encoder_channels"] = list(self.mask_encoder_channels)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        """The config of a checkpoint's metadata; anything but this version's fields is a one-line ModelError."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: the model config must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != CONFIG_VERSION or isinstance(version, bool):
            raise ModelError(f"{source}: model config version {version!r} is not supported; this code reads "
                             f"version {CONFIG_VERSION} only (retrain or convert the model)")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelError(f"{source}: unknown model config fields {sorted(unknown)}; this code reads "
                             f"version {CONFIG_VERSION} without them")
        try:
            return cls(**data)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None


def _check_width(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
        raise ModelError(f"{name} must hold integers from 1 to {MAX_WIDTH}, got {value!r}")
